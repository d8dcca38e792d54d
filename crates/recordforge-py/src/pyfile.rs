//! `Read` / `Write` over Python file-like objects (open files, BytesIO, fsspec files).
//! Each call re-attaches to the interpreter; the callers buffer around these. A reader
//! may be read on a thread of the batch reader's: past the interpreter's shutdown, a
//! read is an error, not a hang.

use std::io::{self, Read, Write};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

fn to_io(e: PyErr) -> io::Error {
    io::Error::other(e)
}

pub struct PyReader {
    file: Py<PyAny>,
}

impl PyReader {
    pub fn new(file: Py<PyAny>) -> Self {
        PyReader { file }
    }
}

/// The error of a thread that can no longer attach to the interpreter.
pub fn shutting_down() -> io::Error {
    io::Error::other("the Python interpreter is shutting down")
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Python::try_attach(|py| {
            let chunk = self
                .file
                .bind(py)
                .call_method1("read", (buf.len(),))
                .map_err(to_io)?;
            if chunk.is_none() {
                // A non-blocking raw file with no data yet; treat as end of what is there.
                return Ok(0);
            }
            let chunk = chunk.cast_into::<PyBytes>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file.read() must return bytes: {e}"),
                )
            })?;
            let data = chunk.as_bytes();
            if data.len() > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "file.read(n) returned more than n bytes",
                ));
            }
            buf[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .unwrap_or_else(|| Err(shutting_down()))
    }
}

pub struct PyWriter {
    file: Py<PyAny>,
}

impl PyWriter {
    pub fn new(file: Py<PyAny>) -> Self {
        PyWriter { file }
    }
}

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Python::attach(|py| {
            let n = self
                .file
                .bind(py)
                .call_method1("write", (PyBytes::new(py, buf),))
                .map_err(to_io)?;
            // Raw files may write less than asked and say so; buffered ones return None or len.
            Ok(n.extract::<usize>().unwrap_or(buf.len()).min(buf.len()))
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Python::attach(|py| {
            let f = self.file.bind(py);
            if f.hasattr("flush").map_err(to_io)? {
                f.call_method0("flush").map_err(to_io)?;
            }
            Ok(())
        })
    }
}

/// If an `io::Error` carries a Python exception (from a file object), take it back out.
pub fn take_py_error(e: io::Error) -> Result<PyErr, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<PyErr>()) {
        let inner = e.into_inner().expect("checked above");
        return Ok(*inner.downcast::<PyErr>().expect("checked above"));
    }
    Err(e)
}
