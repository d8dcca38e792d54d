//! The one place where core errors become Python exceptions (classes live in
//! `recordforge.errors`).

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use recordforge_core::Error;

static CORRUPT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DECODE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ENCODE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SCHEMA: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "recordforge.errors", name)
}

fn raise<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    match class(py, cell, name).and_then(|c| c.call1(args)) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// Maps a core error; `path` names the file for framing errors.
pub fn to_py(py: Python<'_>, err: Error, path: &str) -> PyErr {
    match err {
        Error::Io(e) => {
            // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError...).
            match e.raw_os_error() {
                Some(code) => {
                    let text = e.to_string();
                    let suffix = format!(" (os error {code})");
                    let strerror = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
                    PyOSError::new_err((code, strerror, path.to_string()))
                }
                None => PyOSError::new_err(format!("{path}: {e}")),
            }
        }
        Error::Corrupt { offset, kind } => raise(
            py,
            &CORRUPT,
            "CorruptRecordError",
            (path.to_string(), offset, kind.to_string()),
        ),
        Error::Decode { .. } => decode_error(py, err.to_string()),
        Error::InvalidArgument(msg) => PyValueError::new_err(msg),
        Error::Mismatch(msg) => schema_error(py, msg),
    }
}

/// The error of one record, ``msg`` naming it: ``SchemaError`` when the record is well
/// formed but does not match the schema (``Error::Mismatch``), else ``DecodeError``.
pub fn record_error(py: Python<'_>, err: &Error, msg: String) -> PyErr {
    match err {
        Error::Mismatch(_) => schema_error(py, msg),
        _ => decode_error(py, msg),
    }
}

pub fn schema_error(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &SCHEMA, "SchemaError", (msg,))
}

pub fn decode_error(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &DECODE, "DecodeError", (msg,))
}

pub fn encode_error(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &ENCODE, "EncodeError", (msg,))
}

/// The error that stopped an iterator, raised again by every later `next()` (so that a
/// retry loop does not mistake a damaged file for a finished one). It is the same
/// exception each time, whose traceback holds the frames it went through and so,
/// often, the iterator itself: the owner's `__traverse__` and `__clear__` hand it to the
/// cycle collector ([`Kept::traverse`], [`Kept::clear`]), or the iterator, the frames
/// and whatever they hold (a dataset's mapped files) would never be freed.
#[derive(Default)]
pub(crate) struct Kept(std::sync::Mutex<Option<Py<pyo3::exceptions::PyBaseException>>>);

impl Kept {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Py<pyo3::exceptions::PyBaseException>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kept error, to raise again.
    pub(crate) fn get(&self, py: Python<'_>) -> Option<PyErr> {
        let kept = self.slot().as_ref().map(|e| e.clone_ref(py));
        kept.map(|e| PyErr::from_value(e.into_bound(py).into_any()))
    }

    /// Keeps `e` and returns it, to raise now.
    pub(crate) fn keep(&self, py: Python<'_>, e: PyErr) -> PyErr {
        *self.slot() = Some(e.value(py).clone().unbind());
        e
    }

    pub(crate) fn traverse(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // Never wait in a traversal: a slot held elsewhere is visited next time.
        match self.0.try_lock() {
            Ok(slot) => visit.call(slot.as_ref()),
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut slot) = self.0.try_lock() {
            slot.take();
        }
    }
}
