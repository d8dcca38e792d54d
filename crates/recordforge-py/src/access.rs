//! `RecordFile`: random access to the records of an uncompressed TFRecord file.

use std::fs::File;
use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use recordforge_core::framing::{frame_at, locate, next_intact};
use recordforge_core::walker::RangeCrcs;
use recordforge_core::{Error, Mapped, DEFAULT_MAX_RECORD_BYTES, FRAME_OVERHEAD};

use crate::errors::to_py;

/// An uncompressed TFRecord file, memory-mapped, read at record offsets (what ``.idx``
/// files hold). Every read checks both CRCs; a record over ``max_record_bytes`` is
/// refused as damaged.
#[pyclass(module = "recordforge._core", frozen)]
pub struct RecordFile {
    map: Option<Arc<Mapped>>,
    /// The open file where it is empty (nothing mapped); else the map's (see `file`).
    unmapped: Option<File>,
    path: std::path::PathBuf,
    /// The file's identity and size when mapped (see `is_current`).
    stamp: Stamp,
    name: String,
    max_record: u64,
}

/// Device, inode, size and modification time (ns) of a file.
type Stamp = (u64, u64, u64, i128);

fn stamp(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (
        m.dev(),
        m.ino(),
        m.len(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    )
}

impl RecordFile {
    pub(crate) fn data(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..])
    }

    /// Whether the map met its file cut short (a page past the file's new end read).
    pub(crate) fn is_cut(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.cut())
    }

    /// See `is_restored`.
    pub(crate) fn restored(&self, py: Python<'_>) -> bool {
        self.is_cut()
            && py.detach(|| {
                std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.data().len() as u64)
            })
    }

    /// Whether the file is shorter now than it was mapped (one `fstat`).
    pub(crate) fn is_shorter(&self) -> bool {
        self.map
            .as_ref()
            .is_some_and(|m| m.len_now().is_some_and(|now| now < m.len() as u64))
    }

    /// The error of the record at `offset` where the file is cut short under the map now
    /// (see `recordforge_core::Mapped::cut_error`): for a read that failed, or met a cut.
    pub(crate) fn cut_error(&self, offset: u64) -> Option<Error> {
        self.map.as_ref().and_then(|m| m.cut_error(offset))
    }

    /// The error of the first record past the file's end, where it is shorter now than
    /// it was mapped: for a walk of the whole map.
    fn first_cut(&self) -> Option<Error> {
        self.map.as_ref().and_then(|m| m.first_cut())
    }

    /// The map, shared with a reader's threads.
    pub(crate) fn shared_map(&self) -> Option<Arc<Mapped>> {
        self.map.clone()
    }

    pub(crate) fn file(&self) -> &File {
        match (&self.map, &self.unmapped) {
            (Some(map), _) => map.file(),
            (None, Some(file)) => file,
            (None, None) => unreachable!("a file unmapped is kept open"),
        }
    }

    fn read_at<'py>(&self, py: Python<'py>, offset: u64) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.data();
        let pos = usize::try_from(offset).unwrap_or(usize::MAX);
        if pos >= data.len() {
            return Err(to_py(
                py,
                Error::InvalidArgument(format!(
                    "{}: offset {offset} is past the end ({} bytes)",
                    self.name,
                    data.len()
                )),
                &self.name,
            ));
        }
        let found = frame_at(data, pos, true, self.max_record);
        if found.is_err() || self.is_cut() {
            if let Some(e) = self.cut_error(offset) {
                return Err(to_py(py, e, &self.name));
            }
        }
        match found {
            Ok(Some(range)) => Ok(PyBytes::new(py, &data[range])),
            Ok(None) => unreachable!("pos < len"),
            Err(e) => Err(to_py(py, e, &self.name)),
        }
    }
}

/// A damaged region: start offset, end offset, what was wrong at its start.
type Damaged = (u64, u64, String);

#[pymethods]
impl RecordFile {
    #[new]
    #[pyo3(signature = (path, *, max_record_bytes=DEFAULT_MAX_RECORD_BYTES))]
    fn new(py: Python<'_>, path: std::path::PathBuf, max_record_bytes: u64) -> PyResult<Self> {
        let name = path.display().to_string();
        let (map, unmapped, stamp) = py
            .detach(
                || -> std::io::Result<(Option<Arc<Mapped>>, Option<File>, Stamp)> {
                    let file = File::open(&path)?;
                    let stamp = stamp(&file.metadata()?);
                    if stamp.2 == 0 {
                        return Ok((None, Some(file), stamp));
                    }
                    // A file changed underneath is caught by the CRCs, one cut short by the map.
                    Ok((Some(Arc::new(Mapped::map(file)?)), None, stamp))
                },
            )
            .map_err(|e| to_py(py, Error::Io(e), &name))?;
        Ok(RecordFile {
            map,
            unmapped,
            path,
            stamp,
            name,
            max_record: max_record_bytes,
        })
    }

    /// The offset of every record, from a walk over the framing (length CRCs checked;
    /// payload CRCs too when ``verify``).
    #[pyo3(signature = (verify=true))]
    fn offsets<'py>(&self, py: Python<'py>, verify: bool) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let data = self.data();
        let max = self.max_record;
        let found = py.detach(|| {
            let mut out = Vec::new();
            let mut pos = 0usize;
            loop {
                let frame = match locate(data, pos, max)? {
                    None => return Ok(out),
                    Some(f) => f,
                };
                if verify {
                    frame.check(&data[frame.payload.clone()])?;
                }
                out.push(pos as u64);
                pos = frame.end();
            }
        });
        if let Some(e) = self.first_cut() {
            return Err(to_py(py, e, &self.name));
        }
        found
            .map(|v: Vec<u64>| PyArray1::from_vec(py, v))
            .map_err(|e: Error| to_py(py, e, &self.name))
    }

    /// Offsets of the intact records and ``(start, end, reason)`` of each damaged region
    /// skipped, resynchronising on the next valid record after damage.
    fn intact<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyArray1<u64>>, Vec<Damaged>)> {
        let data = self.data();
        let max = self.max_record;
        let (good, bad) = py.detach(|| {
            let (mut good, mut bad): (Vec<u64>, Vec<Damaged>) = (Vec::new(), Vec::new());
            let mut pos = 0usize;
            let mut crcs = RangeCrcs::default(); // (the walk's data CRCs: see next_intact)
            while pos < data.len() {
                let found = locate(data, pos, max).and_then(|frame| match frame {
                    Some(f) => f.check_in(data, &mut crcs).map(|()| Some(f.payload)),
                    None => Ok(None),
                });
                match found {
                    Ok(Some(range)) => {
                        good.push(pos as u64);
                        pos = range.end + 4;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let next = next_intact(data, pos, max, &mut crcs);
                        bad.push((pos as u64, next as u64, e.to_string()));
                        pos = next;
                    }
                }
            }
            (good, bad)
        });
        // Cut short under the map: not damage to skip, the file's error.
        if let Some(e) = self.first_cut() {
            return Err(to_py(py, e, &self.name));
        }
        Ok((PyArray1::from_vec(py, good), bad))
    }

    /// The record at ``offset`` (both CRCs checked).
    fn read<'py>(&self, py: Python<'py>, offset: u64) -> PyResult<Bound<'py, PyBytes>> {
        self.read_at(py, offset)
    }

    /// The records at ``offsets``, in order.
    fn read_many<'py>(&self, py: Python<'py>, offsets: Vec<u64>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for offset in offsets {
            out.append(self.read_at(py, offset)?)?;
        }
        Ok(out)
    }

    /// Whether the file at this path is still the one mapped, as it was: the same device,
    /// inode, size and modification time (a file replaced or rewritten since gives False;
    /// so does one that cannot be looked at). A reader that keeps the map across epochs
    /// maps the file again when it is not.
    fn is_current(&self, py: Python<'_>) -> bool {
        if self.is_cut() {
            return false; // its map holds zero pages where the file was cut: map it again
        }
        py.detach(|| {
            let now = (std::fs::metadata(&self.path), self.file().metadata());
            matches!(now, (Ok(at_path), Ok(open)) if stamp(&at_path) == self.stamp && stamp(&open) == self.stamp)
        })
    }

    /// Whether the map met its file cut short (its pages from there read as zeros for
    /// the map's life) and the file at this path is now at least as long as the map
    /// again (written back in place, or replaced): a reader opens it again instead of
    /// reading the zeros. One `stat`, only where the map was cut.
    fn is_restored(&self, py: Python<'_>) -> bool {
        self.restored(py)
    }

    /// Bytes in the file.
    fn __len__(&self) -> usize {
        self.data().len()
    }

    #[getter]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The largest record this file's reads accept.
    #[getter]
    pub(crate) fn max_record_bytes(&self) -> u64 {
        self.max_record
    }

    /// Bytes of framing around each record.
    #[classattr]
    fn overhead() -> u64 {
        FRAME_OVERHEAD
    }
}
