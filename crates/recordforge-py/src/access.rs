//! `RecordFile`: random access to the records of an uncompressed TFRecord file.

use std::fs::File;
use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use recordforge_core::framing::{frame_at, locate, next_intact};
use recordforge_core::{Error, Mapped, DEFAULT_MAX_RECORD_BYTES, FRAME_OVERHEAD};

use crate::errors::to_py;

/// An uncompressed TFRecord file, memory-mapped, read at record offsets (what ``.idx``
/// files hold). Every read checks both CRCs; a record over ``max_record_bytes`` is
/// refused as damaged.
#[pyclass(module = "recordforge._core", frozen)]
pub struct RecordFile {
    map: Option<Arc<Mapped>>,
    /// The open file, for reads of big records straight into a caller's buffer.
    file: File,
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

    /// The map, shared with a reader's threads.
    /// The error of a read that met the file cut short under its map (the bytes from its
    /// new end read as zeros), at the record at `offset`.
    pub(crate) fn cut(&self, offset: u64) -> Result<(), Error> {
        match &self.map {
            Some(map) if map.cut() => Err(recordforge_core::framing::cut_at(offset as usize)),
            _ => Ok(()),
        }
    }

    pub(crate) fn shared_map(&self) -> Option<Arc<Mapped>> {
        self.map.clone()
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
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
        self.cut(offset).map_err(|e| to_py(py, e, &self.name))?;
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
        let (map, file, stamp) = py
            .detach(|| -> std::io::Result<(Option<Arc<Mapped>>, File, Stamp)> {
                let file = File::open(&path)?;
                let stamp = stamp(&file.metadata()?);
                if stamp.2 == 0 {
                    return Ok((None, file, stamp));
                }
                // A file changed underneath is caught by the CRCs, one cut short by the map.
                Ok((Some(Arc::new(Mapped::map(&file)?)), file, stamp))
            })
            .map_err(|e| to_py(py, Error::Io(e), &name))?;
        Ok(RecordFile {
            map,
            file,
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
                let frame = match locate(data, pos, true, max)? {
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
        self.cut(0).map_err(|e| to_py(py, e, &self.name))?;
        found
            .map(|v: Vec<u64>| PyArray1::from_vec(py, v))
            .map_err(|e: Error| to_py(py, e, &self.name))
    }

    /// Offsets of the intact records and ``(start, end, reason)`` of each damaged region
    /// skipped, resynchronising on the next valid record after damage.
    fn intact<'py>(&self, py: Python<'py>) -> (Bound<'py, PyArray1<u64>>, Vec<Damaged>) {
        let data = self.data();
        let max = self.max_record;
        let (good, bad) = py.detach(|| {
            let (mut good, mut bad): (Vec<u64>, Vec<Damaged>) = (Vec::new(), Vec::new());
            let mut pos = 0usize;
            while pos < data.len() {
                match frame_at(data, pos, true, max) {
                    Ok(Some(range)) => {
                        good.push(pos as u64);
                        pos = range.end + 4;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let next = next_intact(data, pos, max);
                        bad.push((pos as u64, next as u64, e.to_string()));
                        pos = next;
                    }
                }
            }
            (good, bad)
        });
        (PyArray1::from_vec(py, good), bad)
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
        py.detach(|| {
            let now = (std::fs::metadata(&self.path), self.file.metadata());
            matches!(now, (Ok(at_path), Ok(open)) if stamp(&at_path) == self.stamp && stamp(&open) == self.stamp)
        })
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
