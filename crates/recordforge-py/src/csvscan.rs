//! `CsvRowScanner`: the row ends of a CSV file, a chunk of bytes at a time (see
//! `recordforge_core::csvscan`), for `sources/_table_parts.py`.

use numpy::PyArray1;
use pyo3::prelude::*;
use recordforge_core::csvscan::{CsvScanner, LineEnd};

use crate::convert::with_bytes;

#[pyclass(module = "recordforge._core")]
pub struct CsvRowScanner {
    inner: CsvScanner,
}

type Ends<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<i8>>);

fn arrays(py: Python<'_>, lines: Vec<LineEnd>) -> Ends<'_> {
    let ends: Vec<u64> = lines.iter().map(|l| l.end).collect();
    let marks: Vec<i8> = lines.iter().map(|l| i8::from(l.nonempty)).collect();
    (PyArray1::from_vec(py, ends), PyArray1::from_vec(py, marks))
}

#[pymethods]
impl CsvRowScanner {
    /// A scanner for a CSV whose first byte (past any byte-order mark) is at `offset`.
    #[new]
    #[pyo3(signature = (delimiter, offset = 0))]
    fn new(delimiter: u8, offset: u64) -> Self {
        CsvRowScanner {
            inner: CsvScanner::new(delimiter, offset),
        }
    }

    /// The lines that end in `chunk` (the file's next bytes: `bytes`, or a uint8 array,
    /// read in place): the offset just past each one's end, and 1 for a line with
    /// content, 0 for an empty one.
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &Bound<'py, PyAny>) -> PyResult<Ends<'py>> {
        let mut out = Vec::new();
        let inner = &mut self.inner;
        with_bytes(chunk, |bytes| py.detach(|| inner.feed(bytes, &mut out)))?;
        Ok(arrays(py, out))
    }

    /// The lines the end of the file ends (a last line without a line end).
    fn finish<'py>(&mut self, py: Python<'py>) -> Ends<'py> {
        let mut out = Vec::new();
        self.inner.finish(&mut out);
        arrays(py, out)
    }
}
