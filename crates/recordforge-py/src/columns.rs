//! `encode_columns`: NumPy / list columns -> one serialized Example per row, in Rust.

use std::borrow::Cow;

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use recordforge_core::columns::{encode_columns as core_encode, Column, ColumnValues, Rows};

use crate::errors::{encode_error, to_py};

/// A column converted for the core: NumPy guards keep borrowed slices valid.
enum Held<'py> {
    Int(PyReadonlyArrayDyn<'py, i64>),
    Float(PyReadonlyArrayDyn<'py, f32>),
    Bytes(Vec<u8>, Vec<i64>),
}

impl Held<'_> {
    fn values(&self) -> PyResult<ColumnValues<'_>> {
        Ok(match self {
            Held::Int(a) => ColumnValues::Int64(Cow::Borrowed(a.as_slice()?)),
            Held::Float(a) => ColumnValues::Float(Cow::Borrowed(a.as_slice()?)),
            Held::Bytes(data, offsets) => ColumnValues::Bytes {
                data: Cow::Borrowed(data),
                offsets: Cow::Borrowed(offsets),
            },
        })
    }
}

/// Numbers -> (contiguous int64/float32 values, values per row); strings -> packed bytes.
fn hold<'py>(
    py: Python<'py>,
    name: &str,
    values: &Bound<'py, PyAny>,
) -> PyResult<(Held<'py>, usize, usize)> {
    let np = py.import("numpy")?;
    if let Ok(arr) = values.cast::<PyUntypedArray>() {
        let kind = arr.dtype().kind();
        let shape = arr.shape().to_vec();
        let rows = shape.first().copied().unwrap_or(1);
        let width: usize = shape.iter().skip(1).product();
        let target = match kind {
            b'b' | b'i' | b'u' => Some("int64"),
            b'f' => Some("float32"),
            _ => None,
        };
        if let Some(dtype) = target {
            if kind == b'u' && arr.dtype().itemsize() == 8 {
                let too_big = arr
                    .call_method0("max")
                    .ok()
                    .and_then(|m| m.extract::<u64>().ok())
                    .is_some_and(|m| m > i64::MAX as u64);
                if too_big {
                    return Err(encode_error(
                        py,
                        format!("column {name:?}: uint64 values do not fit in int64"),
                    ));
                }
            }
            let flat = np
                .call_method1("ascontiguousarray", (arr, dtype))?
                .call_method0("ravel")?;
            let held = if dtype == "int64" {
                Held::Int(flat.cast::<PyArrayDyn<i64>>()?.readonly())
            } else {
                Held::Float(flat.cast::<PyArrayDyn<f32>>()?.readonly())
            };
            return Ok((held, rows, if shape.len() <= 1 { 1 } else { width }));
        }
        if !matches!(kind, b'S' | b'U' | b'O') {
            return Err(encode_error(
                py,
                format!(
                    "column {name:?}: unsupported NumPy dtype {}",
                    arr.dtype().str()?
                ),
            ));
        }
        let list = arr.call_method0("ravel")?.call_method0("tolist")?;
        let (data, offsets) = pack(py, name, list.cast::<PyList>()?)?;
        return Ok((
            Held::Bytes(data, offsets),
            rows,
            if shape.len() <= 1 { 1 } else { width },
        ));
    }
    let list = values.cast::<PyList>().map_err(|_| {
        encode_error(py, format!("column {name:?}: expected a NumPy array, a list of str/bytes, or (values, row_splits)"))
    })?;
    let (data, offsets) = pack(py, name, list)?;
    Ok((Held::Bytes(data, offsets), list.len(), 1))
}

fn pack(py: Python<'_>, name: &str, list: &Bound<'_, PyList>) -> PyResult<(Vec<u8>, Vec<i64>)> {
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(list.len() + 1);
    offsets.push(0i64);
    for (i, item) in list.iter().enumerate() {
        if let Ok(b) = item.cast::<PyBytes>() {
            data.extend_from_slice(b.as_bytes());
        } else if let Ok(s) = item.cast::<PyString>() {
            data.extend_from_slice(s.to_str()?.as_bytes());
        } else {
            return Err(encode_error(
                py,
                format!(
                    "column {name:?}, row {i}: expected str or bytes, not {}",
                    item.get_type().name()?
                ),
            ));
        }
        offsets.push(data.len() as i64);
    }
    Ok((data, offsets))
}

/// Encodes columns into one serialized ``tf.train.Example`` per row, in Rust.
///
/// Each column is a NumPy array (numbers: one value per row, or a row of
/// ``shape[1:]`` values; ``bytes_``/``str_``/object arrays of strings), a list of
/// ``str``/``bytes``, or a ``(values, row_splits)`` tuple for variable-length rows
/// (row ``i`` is ``values[row_splits[i]:row_splits[i + 1]]``).
///
/// >>> import numpy as np, recordforge as rf
/// >>> rows = rf.encode_columns({"id": np.arange(3), "tags": ([b"a", b"b", b"c"], np.array([0, 2, 2, 3]))})
/// >>> [rf.decode_example(r)["tags"] for r in rows]
/// [[b'a', b'b'], [], [b'c']]
/// >>> rows[0] == rf.encode_example({"id": 0, "tags": [b"a", b"b"]})
/// True
#[pyfunction]
pub fn encode_columns<'py>(
    py: Python<'py>,
    columns: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyList>> {
    let mut held = Vec::with_capacity(columns.len());
    let mut rows: Option<usize> = None;
    for (key, value) in columns.iter() {
        let name: String = key.extract().map_err(|_| {
            encode_error(
                py,
                format!(
                    "column names must be str, not {}",
                    key.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ),
            )
        })?;
        let (data, splits, n, width) = if let Ok(pair) = value.cast::<PyTuple>() {
            if pair.len() != 2 {
                return Err(encode_error(
                    py,
                    format!("column {name:?}: a tuple must be (values, row_splits)"),
                ));
            }
            let (data, _, _) = hold(py, &name, &pair.get_item(0)?)?;
            let splits = py
                .import("numpy")?
                .call_method1("ascontiguousarray", (pair.get_item(1)?, "int64"))?
                .call_method0("ravel")?;
            let splits = splits.cast::<PyArrayDyn<i64>>()?.readonly();
            let n = splits.len().saturating_sub(1);
            (data, Some(splits), n, 0)
        } else {
            let (data, n, width) = hold(py, &name, &value)?;
            (data, None, n, width)
        };
        if let Some(r) = rows {
            if r != n {
                return Err(encode_error(
                    py,
                    format!("column {name:?} has {n} rows, others have {r}"),
                ));
            }
        }
        rows = Some(n);
        held.push((name, data, splits, width));
    }
    let rows = rows.unwrap_or(0);
    let mut cols = Vec::with_capacity(held.len());
    for (name, data, splits, width) in &held {
        let rows_spec = match splits {
            Some(s) => Rows::Ragged(Cow::Borrowed(s.as_slice()?)),
            None => Rows::Fixed(*width),
        };
        cols.push(Column {
            name,
            values: data.values()?,
            rows: rows_spec,
        });
    }
    let (mut out, mut ends) = (Vec::new(), Vec::with_capacity(rows));
    py.detach(|| core_encode(&cols, rows, &mut out, &mut ends))
        .map_err(|e| to_py(py, e, "<columns>"))?;
    let mut start = 0;
    PyList::new(
        py,
        ends.iter().map(|&end| {
            let b = PyBytes::new(py, &out[start..end]);
            start = end;
            b
        }),
    )
}
