//! `CsvRowScanner`: the row ends of a CSV file, a chunk of bytes at a time (see
//! `recordforge_core::csvscan`); `CsvPartScanner`: its parts, cut as it scans; and
//! `PartCutter`: the same cut of lines found elsewhere (a JSON Lines file's), for
//! `sources/_table_parts.py`.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use recordforge_core::csvscan::{CsvScanner, LineEnd, Part, PartCutter};

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

#[pyclass(module = "recordforge._core")]
pub struct CsvPartScanner {
    scanner: CsvScanner,
    cutter: PartCutter,
    lines: Vec<LineEnd>,
}

/// A part as `(start, stop, first_row, rows)`.
type PartTuple = (u64, u64, u64, u64);

fn tuples(parts: &[Part]) -> Vec<PartTuple> {
    parts
        .iter()
        .map(|p| (p.start, p.stop, p.first_row, p.rows))
        .collect()
}

impl CsvPartScanner {
    fn cut(&mut self) -> Vec<PartTuple> {
        let mut parts: Vec<Part> = Vec::new();
        for line in self.lines.drain(..) {
            self.cutter.line(line, &mut parts);
        }
        tuples(&parts)
    }
}

#[pymethods]
impl CsvPartScanner {
    /// A scanner for a CSV whose first byte (past any byte-order mark) is at `offset`,
    /// that skips `skip` lines and then the header line (when `header`), and closes a
    /// part after the first row end at or past `part_bytes` from the part's start.
    #[new]
    #[pyo3(signature = (delimiter, offset, skip, header, part_bytes))]
    fn new(delimiter: u8, offset: u64, skip: u64, header: bool, part_bytes: u64) -> Self {
        CsvPartScanner {
            scanner: CsvScanner::new(delimiter, offset),
            cutter: PartCutter::new(skip, header, part_bytes),
            lines: Vec::new(),
        }
    }

    /// A line found outside the scan (the lines skipped before it), ending at `end`.
    fn line(&mut self, end: u64, nonempty: bool) -> Vec<PartTuple> {
        self.lines.push(LineEnd { end, nonempty });
        self.cut()
    }

    /// The parts closed by `chunk`, the file's next bytes (`bytes`, or a uint8 array,
    /// read in place), as `(start, stop, first_row, rows)`.
    fn feed(&mut self, py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<Vec<PartTuple>> {
        let (scanner, lines) = (&mut self.scanner, &mut self.lines);
        with_bytes(chunk, |bytes| py.detach(|| scanner.feed(bytes, lines)))?;
        Ok(self.cut())
    }

    /// The parts closed by the end of the file.
    fn finish(&mut self) -> Vec<PartTuple> {
        self.scanner.finish(&mut self.lines);
        let mut parts = self.cut();
        let mut last = Vec::new();
        self.cutter.finish(&mut last);
        parts.extend(tuples(&last));
        parts
    }
}

#[pyclass(module = "recordforge._core", name = "PartCutter")]
pub struct PyPartCutter {
    inner: PartCutter,
}

#[pymethods]
impl PyPartCutter {
    /// The cut of `CsvPartScanner`, for lines found elsewhere.
    #[new]
    #[pyo3(signature = (skip, header, part_bytes))]
    fn new(skip: u64, header: bool, part_bytes: u64) -> Self {
        PyPartCutter {
            inner: PartCutter::new(skip, header, part_bytes),
        }
    }

    /// The parts closed by the lines ending at `ends`, `marks` (non-zero) where a line
    /// holds a row, as `(start, stop, first_row, rows)`.
    fn lines(
        &mut self,
        ends: PyReadonlyArray1<'_, i64>,
        marks: PyReadonlyArray1<'_, i8>,
    ) -> PyResult<Vec<PartTuple>> {
        let (ends, marks) = (ends.as_slice()?, marks.as_slice()?);
        if ends.len() != marks.len() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "ends and marks differ in length",
            ));
        }
        let mut parts = Vec::new();
        for (&end, &mark) in ends.iter().zip(marks) {
            let end = u64::try_from(end)
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("a negative line end"))?;
            self.inner.line(
                LineEnd {
                    end,
                    nonempty: mark != 0,
                },
                &mut parts,
            );
        }
        Ok(tuples(&parts))
    }

    /// The part the end of the file closes.
    fn finish(&mut self) -> Vec<PartTuple> {
        let mut parts = Vec::new();
        self.inner.finish(&mut parts);
        tuples(&parts)
    }
}
