//! `decode_batch`: serialized Examples -> one NumPy column per wanted feature, in Rust.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PySlice, PyTuple};
use recordforge_core::batch::{decode_batch as core_decode, DecodedColumn, Kind, Values, Wanted};

use crate::errors::{decode_error, record_error};

/// How many features a serialized Example or SequenceExample holds (map entries of its
/// ``features``/``context`` and ``feature_lists``), counted without decoding a value.
#[pyfunction]
pub fn count_features(data: &[u8]) -> u64 {
    recordforge_core::example::count_features(data)
}

pub fn kind_of(py: Python<'_>, name: &str, kind: &str) -> PyResult<Kind> {
    match kind {
        "int64" => Ok(Kind::Int64),
        "float32" => Ok(Kind::Float),
        "bytes" => Ok(Kind::Bytes),
        other => Err(decode_error(
            py,
            format!("feature {name:?}: kind must be int64, float32 or bytes, not {other:?}"),
        )),
    }
}

/// Decodes serialized ``tf.train.Example`` records into columns, in Rust with the GIL
/// released. ``features`` lists ``(name, kind, width)``: kind ``"int64"``,
/// ``"float32"`` or ``"bytes"``, width the exact number of values every record holds
/// (``None``: any number). Returns one ``(values, row_splits)`` per feature: values a
/// NumPy array (a list of ``bytes`` for bytes), row ``i`` being
/// ``values[row_splits[i]:row_splits[i + 1]]``. Other features are skipped unparsed.
/// A record whose feature has another kind, or not ``width`` values, raises
/// ``SchemaError`` naming the record's index (bytes that are not an Example:
/// ``DecodeError``). Records are read as
/// ``tf.io.parse_example`` reads them for the same feature description (a key given
/// twice: its last entry; a Feature with two kinds: its first), which is where it
/// differs from ``decode_example``'s protobuf rules.
///
/// >>> import recordforge as rf
/// >>> records = [rf.encode_example({"a": 1, "t": ["x", "y"]}), rf.encode_example({"a": 2})]
/// >>> (a, a_splits), (t, t_splits) = rf.decode_batch(records, [("a", "int64", 1), ("t", "bytes", None)])
/// >>> a.tolist(), t, t_splits.tolist()
/// ([1, 2], [b'x', b'y'], [0, 2, 2])
#[pyfunction]
pub fn decode_batch<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    features: Vec<(String, String, Option<usize>)>,
) -> PyResult<Bound<'py, PyList>> {
    let mut wanted = Vec::with_capacity(features.len());
    for (name, kind, width) in &features {
        wanted.push(Wanted {
            name,
            kind: kind_of(py, name, kind)?,
            width: *width,
        });
    }
    let items: Vec<Bound<'py, PyBytes>> = records
        .try_iter()?
        .map(|r| r.and_then(|r| Ok(r.cast_into::<PyBytes>()?)))
        .collect::<PyResult<_>>()?;
    let slices: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
    let columns = py
        .detach(|| core_decode(slices.iter().copied(), &wanted))
        .map_err(|e| record_error(py, &e.error, format!("record {}: {}", e.record, e.error)))?;
    columns_to_py(py, columns, false, &|_| &[])
}

/// The serialized record `i` of a batch, for bytes values left in their records.
pub type RecordBytes<'a> = &'a dyn Fn(usize) -> &'a [u8];

/// One ``(values, row_splits)`` tuple per column. Bytes values become a list of ``bytes``,
/// or with ``object_arrays`` a NumPy object array of them.
pub fn columns_to_py<'py>(
    py: Python<'py>,
    columns: Vec<DecodedColumn>,
    object_arrays: bool,
    record: RecordBytes<'_>,
) -> PyResult<Bound<'py, PyList>> {
    let span = |i: usize, start: usize, end: usize| -> PyResult<Bound<'py, PyAny>> {
        Ok(PyBytes::new(py, &record(i)[start..end]).into_any())
    };
    to_py_with(py, columns, object_arrays, &span)
}

/// [`columns_to_py`] with object arrays, the bytes values left in their records as
/// read-only memoryviews: record `i`'s bytes are `view[starts[i]:starts[i + 1]]`.
pub fn columns_to_py_views<'py>(
    py: Python<'py>,
    columns: Vec<DecodedColumn>,
    view: &Bound<'py, PyMemoryView>,
    starts: &[usize],
) -> PyResult<Bound<'py, PyList>> {
    let span = |i: usize, start: usize, end: usize| -> PyResult<Bound<'py, PyAny>> {
        let (a, b) = (starts[i] + start, starts[i] + end);
        view.get_item(PySlice::new(py, a as isize, b as isize, 1))
    };
    to_py_with(py, columns, true, &span)
}

/// Bytes value `start..end` of record `i`, as a Python object.
type Span<'a, 'py> = &'a dyn Fn(usize, usize, usize) -> PyResult<Bound<'py, PyAny>>;

fn to_py_with<'py>(
    py: Python<'py>,
    columns: Vec<DecodedColumn>,
    object_arrays: bool,
    span: Span<'_, 'py>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for column in columns {
        let values = values_to_py(py, column.values, &column.splits, object_arrays, span)?;
        let splits: Vec<i64> = column.splits.iter().map(|&s| s as i64).collect();
        out.append(PyTuple::new(
            py,
            [values, PyArray1::from_vec(py, splits).into_any()],
        )?)?;
    }
    Ok(out)
}

/// A column's values as a NumPy array (bytes: a list, or with ``object_arrays`` a NumPy
/// object array). `splits` says which record holds each of [`Values::Spans`].
fn values_to_py<'py>(
    py: Python<'py>,
    values: Values,
    splits: &[usize],
    object_arrays: bool,
    span: Span<'_, 'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let objects: Vec<Bound<'py, PyAny>> = match values {
        Values::Int64(v) => return Ok(PyArray1::from_vec(py, v).into_any()),
        Values::Float(v) => return Ok(PyArray1::from_vec(py, v).into_any()),
        Values::Bytes { data, offsets } => offsets
            .windows(2)
            .map(|w| PyBytes::new(py, &data[w[0]..w[1]]).into_any())
            .collect(),
        Values::Spans(spans) => {
            let mut out = Vec::with_capacity(spans.len());
            for (i, rows) in splits.windows(2).enumerate() {
                for &(start, end) in &spans[rows[0]..rows[1]] {
                    out.push(span(i, start, end)?);
                }
            }
            out
        }
    };
    if object_arrays {
        let objects: Vec<Py<PyAny>> = objects.into_iter().map(Bound::unbind).collect();
        Ok(PyArray1::from_vec(py, objects).into_any())
    } else {
        Ok(PyList::new(py, objects)?.into_any())
    }
}
