//! `SchemaSample`: the kinds and value counts of the first records of some files, for a
//! schema inferred at open without a Python object per sampled record.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use recordforge_core::infer::{sample_file, Sample};
use recordforge_core::DEFAULT_MAX_RECORD_BYTES;

use crate::errors::{record_error, to_py};

/// ``(name, kind, length, present)`` of a sampled feature.
type FeatureRow = (String, Option<&'static str>, Option<u64>, u64);

/// The context features of the first records of a stream of files, up to
/// ``max_records`` records or ``max_bytes`` payload bytes (at least one record): each
/// feature's kind, whether all records holding it held the same number of values, and
/// how many held it. Records are added from files (``add_file``: read in Rust, both CRCs
/// checked, GIL released) or one at a time (``add``).
#[pyclass(module = "recordforge._core", frozen)]
pub struct SchemaSample {
    inner: Mutex<Sample>,
}

fn lock(m: &Mutex<Sample>) -> std::sync::MutexGuard<'_, Sample> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[pymethods]
impl SchemaSample {
    #[new]
    fn new(max_records: u64, max_bytes: u64) -> Self {
        SchemaSample {
            inner: Mutex::new(Sample::new(max_records, max_bytes)),
        }
    }

    /// Adds the first records of the file at ``path`` until the sample is full or the
    /// file ends. A damaged record is a ``CorruptRecordError``; a record that is not an
    /// Example a ``DecodeError``, one whose feature changes kind a ``SchemaError``, both
    /// naming the file, the record's number and its offset.
    #[pyo3(signature = (path, *, max_record_bytes=DEFAULT_MAX_RECORD_BYTES))]
    fn add_file(&self, py: Python<'_>, path: PathBuf, max_record_bytes: u64) -> PyResult<()> {
        let name = path.display().to_string();
        let result = py.detach(|| sample_file(&path, &mut lock(&self.inner), max_record_bytes));
        result.map_err(|e| match (e.index, e.offset) {
            (Some(index), Some(offset)) => record_error(
                py,
                &e.error,
                format!("{name}: record {index} (at offset {offset}): {}", e.error),
            ),
            _ => to_py(py, e.error, &name),
        })
    }

    /// Adds one serialized record (``where`` names it in an error); returns whether
    /// the sample is full.
    fn add(&self, py: Python<'_>, record: &[u8], r#where: &str) -> PyResult<bool> {
        let mut sample = lock(&self.inner);
        sample
            .add(record)
            .map_err(|e| record_error(py, &e, format!("{where}: {e}")))?;
        Ok(sample.full())
    }

    /// Whether the sample holds all it was asked for.
    #[getter]
    fn full(&self) -> bool {
        lock(&self.inner).full()
    }

    /// Records sampled.
    #[getter]
    fn records(&self) -> u64 {
        lock(&self.inner).records
    }

    /// Whether a sampled record had feature lists (a ``tf.train.SequenceExample``).
    #[getter]
    fn lists(&self) -> bool {
        lock(&self.inner).lists
    }

    /// ``(name, kind, length, present)`` per feature, in the order first seen: kind
    /// ``"bytes"``, ``"float32"``, ``"int64"`` or ``None`` (only kind-less values seen),
    /// length the number of values when every record holding it held the same, else
    /// ``None``, present the number of records holding it.
    /// ``(values, weighted)`` of each feature, in the order of ``features()``: its
    /// values in all the records holding it, and the sum of each record's count times
    /// the record's number in the sample (from 1, modulo 2**64).
    fn counts(&self) -> Vec<(u64, u64)> {
        lock(&self.inner)
            .features
            .iter()
            .map(|f| (f.values, f.weighted))
            .collect()
    }

    fn features(&self) -> Vec<FeatureRow> {
        lock(&self.inner)
            .features
            .iter()
            .map(|f| {
                let length = if f.varies { None } else { f.length };
                (f.name.clone(), f.kind.map(|k| k.name()), length, f.present)
            })
            .collect()
    }
}
