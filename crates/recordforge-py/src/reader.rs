//! `BatchReader` (files -> batches of columns, on background threads), `take_records`
//! (records at offsets of memory-mapped files -> columns in one call; one record to a
//! row: `rows::RowReader`) and `Shuffler` (the reader's shuffle buffer, for records that
//! Python reads).

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::PyReadonlyArray1;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use recordforge_core::batch::{decode_batch_spans_threaded, Wanted};
use recordforge_core::framing::frame_at;
use recordforge_core::reader::{
    BatchReader as CoreReader, Damaged, Opener, ReadError, ReadOptions, Shuffler as CoreShuffler,
};
use recordforge_core::{Compression, Error, DEFAULT_MAX_RECORD_BYTES};

use crate::access::RecordFile;
use crate::arena::{Arena, Source, TakeInto};
use crate::blocks::{block_view, BlockPool};
use crate::decode::{columns_to_py, columns_to_py_views, kind_of};
use crate::errors::{record_error, to_py};
use crate::pyfile::{shutting_down, take_py_error, PyReader};

type Features = Vec<(String, String, Option<usize>)>;
type Skipped = (usize, u64, u64, String);
/// `(records, columns, skipped)`, one item of a `BatchReader`.
type Item<'py> = (usize, Bound<'py, PyList>, Vec<Skipped>);

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A record that does not decode names its file, offset and (where known) number:
/// ``SchemaError`` when it does not match the schema, else ``DecodeError``; framing
/// errors keep their own exception (``CorruptRecordError`` with path and offset,
/// ``OSError``).
pub(crate) fn read_error(py: Python<'_>, e: ReadError, names: &[String]) -> PyErr {
    let name = names.get(e.file).map_or("", String::as_str);
    match (e.record, e.index) {
        (Some(offset), Some(index)) => record_error(
            py,
            &e.error,
            format!("{name}: record {index} (at offset {offset}): {}", e.error),
        ),
        (Some(offset), None) => record_error(
            py,
            &e.error,
            format!("{name}: record at offset {offset}: {}", e.error),
        ),
        (None, _) => match e.error {
            // A file object's own exception (an opened stream's), as it raised it.
            Error::Io(io) => match take_py_error(io) {
                Ok(raised) => raised,
                Err(io) => to_py(py, Error::Io(io), name),
            },
            other => to_py(py, other, name),
        },
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// Reads TFRecord files into batches of decoded columns on background threads (files
/// loaded in parallel, CRCs checked, batches decoded ahead). Yields
/// ``(records, columns, skipped)``: ``columns`` as ``decode_batch`` returns them but with
/// bytes as NumPy object arrays, ``skipped`` the damaged regions
/// ``(file_index, start, end, reason)`` left out (``skip_corrupt``) since the previous
/// batch. A last item may have 0 records and only skipped regions. ``open``, when
/// given, is called with each file's name on the reading thread whose turn it is: a
/// binary file object read as that file's stream (a remote object), or None (the path
/// is read).
#[pyclass(module = "recordforge._core", frozen)]
pub struct BatchReader {
    inner: Mutex<CoreReader>,
    names: Vec<String>,
    /// The error that stopped reading, raised again by every later `next()`.
    failed: crate::errors::Kept,
}

#[pymethods]
impl BatchReader {
    #[new]
    #[pyo3(signature = (
        files, features, batch_size, *, drop_remainder=false, compression="auto",
        verify=true, skip_corrupt=false, every=None, shuffle=None, threads=0, prefetch=2,
        max_record_bytes=DEFAULT_MAX_RECORD_BYTES, mapped=None, blocks=None, open=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        files: Vec<PathBuf>,
        features: Features,
        batch_size: usize,
        drop_remainder: bool,
        compression: Option<&str>,
        verify: bool,
        skip_corrupt: bool,
        every: Option<(u64, u64)>,
        shuffle: Option<(usize, u64)>,
        threads: usize,
        prefetch: usize,
        max_record_bytes: u64,
        mapped: Option<Vec<Option<PyRef<'_, RecordFile>>>>,
        blocks: Option<PyRef<'_, BlockPool>>,
        open: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be >= 1"));
        }
        if let Some((index, count)) = every {
            if index >= count {
                return Err(PyValueError::new_err(format!(
                    "every: index {index} is not below count {count}"
                )));
            }
        }
        let compression = match compression {
            Some(c) if c.eq_ignore_ascii_case("auto") => None,
            other => Some(
                Compression::parse(other.unwrap_or(""))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            ),
        };
        let mut wanted = Vec::with_capacity(features.len());
        for (name, kind, width) in features {
            let kind = kind_of(py, &name, &kind)?;
            wanted.push((name, kind, width));
        }
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        let openers = match open {
            None => Vec::new(),
            Some(open) => names
                .iter()
                .map(|name| Some(opener(open.clone_ref(py), name.clone())))
                .collect(),
        };
        let maps = match mapped {
            None => vec![None; files.len()],
            Some(m) if m.len() == files.len() => m
                .iter()
                .map(|f| f.as_ref().and_then(|f| f.shared_map()))
                .collect(),
            Some(m) => {
                return Err(PyValueError::new_err(format!(
                    "mapped: {} entries for {} files",
                    m.len(),
                    files.len()
                )))
            }
        };
        let options = ReadOptions {
            compression,
            verify,
            max_record: max_record_bytes,
            skip_corrupt,
            every,
            shuffle,
            batch_size,
            drop_remainder,
            threads: if threads == 0 {
                default_threads()
            } else {
                threads
            },
            prefetch,
            blocks: blocks.map(|b| Arc::clone(&b.pool)),
        };
        Ok(BatchReader {
            inner: Mutex::new(CoreReader::start_mapped(
                files, maps, openers, wanted, options,
            )),
            names,
            failed: crate::errors::Kept::default(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.failed.traverse(&visit)
    }

    fn __clear__(&self) {
        self.failed.clear();
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Item<'py>>> {
        if let Some(e) = self.failed.get(py) {
            return Err(e);
        }
        let next = py.detach(|| lock(&self.inner).next_batch());
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(self.failed.keep(py, read_error(py, e, &self.names))),
            Some(Ok(mut batch)) => {
                let skipped = std::mem::take(&mut batch.skipped)
                    .into_iter()
                    .map(
                        |Damaged {
                             file,
                             start,
                             end,
                             reason,
                         }| (file, start, end, reason),
                    )
                    .collect();
                let columns = std::mem::take(&mut batch.columns);
                let columns = match batch.block.take() {
                    Some(block) => {
                        let view = block_view(py, block)?;
                        columns_to_py_views(py, columns, &view, &vec![0; batch.len])?
                    }
                    None => {
                        let columns = columns_to_py(py, columns, true, &|i| batch.record(i))?;
                        // Copied out of the maps after the decoders' check: asked again.
                        if let Some(e) = batch.cut() {
                            return Err(self.failed.keep(py, read_error(py, e, &self.names)));
                        }
                        columns
                    }
                };
                Ok(Some((batch.len, columns, skipped)))
            }
        }
    }
}

/// Calls `open(name)` on the loader thread whose turn the file is: a binary file object
/// read as the file's stream, or None (the file is read from its path).
fn opener(open: Py<PyAny>, name: String) -> Opener {
    Box::new(move || {
        Python::try_attach(|py| {
            let file = open
                .bind(py)
                .call1((name,))
                .map_err(std::io::Error::other)?;
            Ok(if file.is_none() {
                None
            } else {
                Some(Box::new(PyReader::new(file.unbind())) as Box<dyn Read + Send>)
            })
        })
        .unwrap_or_else(|| Err(shutting_down()))
    })
}

fn wanted_of<'f>(py: Python<'_>, features: &'f Features) -> PyResult<Vec<Wanted<'f>>> {
    features
        .iter()
        .map(|(name, kind, width)| {
            Ok(Wanted {
                name,
                kind: kind_of(py, name, kind)?,
                width: *width,
            })
        })
        .collect()
}

/// The payload of the record framed at `offset` of `data`, CRC-checked with `verify`.
pub(crate) fn record_at(
    data: &[u8],
    offset: u64,
    verify: bool,
    max_record: u64,
) -> Result<&[u8], Error> {
    let pos = usize::try_from(offset).unwrap_or(usize::MAX);
    if pos >= data.len() {
        return Err(Error::InvalidArgument(format!(
            "offset {offset} is past the end ({} bytes)",
            data.len()
        )));
    }
    let range = frame_at(data, pos, verify, max_record)?.expect("pos is before the end");
    Ok(&data[range])
}

/// Reads the records at ``offsets[k]`` of ``files[file_index[k]]`` (memory-mapped
/// ``RecordFile``s; both CRCs checked unless ``verify`` is false) and decodes them into
/// columns as ``BatchReader`` does, in one call with the GIL released (runs of at least
/// 1,024 records decoded on up to ``threads`` threads; 0: one per CPU up to 8).
///
/// With an ``arena`` (``Arena``), the records are copied into its buffer (both CRCs
/// checked on the copy) and bytes values are read-only ``memoryview``s of it, not
/// ``bytes``: no fresh memory per call once the buffer is reused.
#[pyfunction]
#[pyo3(signature = (files, file_index, offsets, features, verify=true, threads=0, *, arena=None))]
#[allow(clippy::too_many_arguments)]
pub fn take_records<'py>(
    py: Python<'py>,
    files: Vec<PyRef<'py, RecordFile>>,
    file_index: PyReadonlyArray1<'py, i64>,
    offsets: PyReadonlyArray1<'py, u64>,
    features: Features,
    verify: bool,
    threads: usize,
    arena: Option<PyRef<'py, Arena>>,
) -> PyResult<Bound<'py, PyList>> {
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads.min(recordforge_core::MAX_THREADS)
    };
    let wanted = wanted_of(py, &features)?;
    let which = file_index.as_slice()?;
    let offsets = offsets.as_slice()?;
    if which.len() != offsets.len() {
        return Err(PyValueError::new_err(format!(
            "{} file indexes for {} offsets",
            which.len(),
            offsets.len()
        )));
    }
    if let Some(&bad) = which.iter().find(|&&f| f < 0 || f as usize >= files.len()) {
        return Err(PyIndexError::new_err(format!(
            "file index {bad} of {} files",
            files.len()
        )));
    }
    recordforge_core::mapped::guard_again(); // (maps made before a handler took ours' place)
    let datas: Vec<(&[u8], u64)> = files
        .iter()
        .map(|f| (f.data(), f.max_record_bytes()))
        .collect();
    let names: Vec<String> = files.iter().map(|f| f.name().to_string()).collect();
    if let Some(arena) = arena {
        let sources: Vec<Source<'_>> = files
            .iter()
            .map(|f| (f.data(), f.max_record_bytes()))
            .collect();
        let taken = TakeInto {
            sources: &sources,
            which,
            offsets,
            wanted: &wanted,
            verify,
            threads,
        };
        let out = taken.run(py, &arena, &names);
        unless_cut(&files, which, offsets, Ok(())).map_err(|e| read_error(py, e, &names))?;
        return out;
    }
    let result = py.detach(|| -> Result<_, ReadError> {
        let mut slices = Vec::with_capacity(offsets.len());
        for (&f, &offset) in which.iter().zip(offsets) {
            let (data, max) = datas[f as usize];
            slices.push(
                record_at(data, offset, verify, max).map_err(|error| ReadError {
                    file: f as usize,
                    record: None,
                    index: None,
                    error,
                })?,
            );
        }
        decode_batch_spans_threaded(&slices, &wanted, threads, 1024)
            .map(|columns| (columns, slices))
            .map_err(|e| ReadError {
                file: which[e.record] as usize,
                record: Some(offsets[e.record]),
                index: None,
                error: e.error,
            })
    });
    // A file cut under its map: that error, not the CRC mismatch of the zeros read.
    // (a read that failed or met a fault: the cut's error, not the zeros' CRC mismatch)
    let result = match result {
        Err(_) => unless_cut(&files, which, offsets, result),
        ok if files.iter().any(|f| f.is_cut()) => unless_cut(&files, which, offsets, ok),
        ok => ok,
    };
    let out = match result {
        Ok((columns, slices)) => columns_to_py(py, columns, true, &|i| slices[i]),
        Err(e) => Err(read_error(py, e, &names)),
    }?;
    // Copied out of the maps after the check above: asked again.
    unless_cut(&files, which, offsets, Ok(())).map_err(|e| read_error(py, e, &names))?;
    Ok(out)
}

/// `taken`, or the error of the first record taken (in the order asked) that a file
/// cut short under its map lost (see `recordforge_core::Mapped::cut_error`): checked
/// where the take failed or met a cut.
fn unless_cut<T>(
    files: &[PyRef<'_, RecordFile>],
    which: &[i64],
    offsets: &[u64],
    taken: Result<T, ReadError>,
) -> Result<T, ReadError> {
    // One fstat per file: a file cut inside its last page faults nothing.
    let shorter: Vec<bool> = files.iter().map(|f| f.is_cut() || f.is_shorter()).collect();
    if !shorter.contains(&true) {
        return taken;
    }
    for (&w, &offset) in which.iter().zip(offsets) {
        if !shorter[w as usize] {
            continue;
        }
        if let Some(error) = files[w as usize].cut_error(offset) {
            return Err(ReadError {
                file: w as usize,
                record: None, // (a framing error: the offset is in it)
                index: None,
                error,
            });
        }
    }
    taken
}

/// The shuffle buffer of ``BatchReader`` (``shuffle=(size, seed)``) over any Python
/// objects: pushing a reader's items in and draining the rest at the end gives them in
/// the order ``BatchReader`` gives the same records with the same ``size`` and ``seed``.
/// ``push`` returns the item that leaves the buffer (``None`` while it fills), ``drain``
/// the next of the items left at the end (``None`` once it is empty).
#[pyclass(module = "recordforge._core", frozen)]
pub struct Shuffler {
    inner: Mutex<CoreShuffler<Py<PyAny>>>,
}

#[pymethods]
impl Shuffler {
    #[new]
    fn new(size: usize, seed: u64) -> Self {
        Shuffler {
            inner: Mutex::new(CoreShuffler::new(size, seed)),
        }
    }

    fn push(&self, item: Py<PyAny>) -> Option<Py<PyAny>> {
        lock(&self.inner).push(item)
    }

    fn drain(&self) -> Option<Py<PyAny>> {
        lock(&self.inner).drain_one()
    }
}
