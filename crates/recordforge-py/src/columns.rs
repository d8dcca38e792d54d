//! `encode_columns`: NumPy / list columns -> one serialized Example per row, in Rust.

use std::borrow::Cow;
use std::sync::Arc;

use numpy::ndarray::ArrayView1;
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use recordforge_core::blocks::BlockPool as CorePool;
use recordforge_core::columns::{
    encode_batch, encode_batch_with, Column, ColumnValues, EncodedBatch, Rows,
};

use crate::blocks::BlockPool;
use crate::errors::{encode_error, to_py};

/// A column converted for the core: NumPy guards keep borrowed slices valid.
enum Held<'py> {
    Int(PyReadonlyArrayDyn<'py, i64>),
    Float(PyReadonlyArrayDyn<'py, f32>),
    Bytes(Vec<u8>, Vec<i64>),
    /// Byte strings already packed (e.g. an Arrow string array's buffers).
    Packed(PyReadonlyArrayDyn<'py, u8>, PyReadonlyArrayDyn<'py, i64>),
    /// `bytes` objects, held (a reference each, so that none is freed while it is
    /// read without the GIL; `bytes` never change): read where they are, not copied.
    Refs(Vec<Bound<'py, PyBytes>>),
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
            Held::Packed(data, offsets) => ColumnValues::Bytes {
                data: Cow::Borrowed(data.as_slice()?),
                offsets: Cow::Borrowed(offsets.as_slice()?),
            },
            Held::Refs(values) => {
                ColumnValues::Slices(values.iter().map(|b| b.as_bytes()).collect())
            }
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
    if let Ok(packed) = values.cast::<PyDict>() {
        let part = |key: &str, dtype: &str| -> PyResult<Bound<'py, PyAny>> {
            let v = packed.get_item(key)?.ok_or_else(|| {
                encode_error(
                    py,
                    format!("column {name:?}: packed bytes need 'data' and 'offsets'"),
                )
            })?;
            np.call_method1("ascontiguousarray", (v, dtype))?
                .call_method0("ravel")
        };
        let data = part("data", "uint8")?
            .cast_into::<PyArrayDyn<u8>>()?
            .readonly();
        let offsets = part("offsets", "int64")?
            .cast_into::<PyArrayDyn<i64>>()?
            .readonly();
        let n = offsets.len().saturating_sub(1);
        return Ok((Held::Packed(data, offsets), n, 1));
    }
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
        return Ok((
            strings(py, name, list.cast::<PyList>()?)?,
            rows,
            if shape.len() <= 1 { 1 } else { width },
        ));
    }
    let list = values.cast::<PyList>().map_err(|_| {
        encode_error(py, format!("column {name:?}: expected a NumPy array, a list of str/bytes, or (values, row_splits)"))
    })?;
    Ok((strings(py, name, list)?, list.len(), 1))
}

/// A list of byte strings: `bytes` objects held where they are; anything else (`str`
/// values, which are encoded as UTF-8) packed end to end.
fn strings<'py>(py: Python<'py>, name: &str, list: &Bound<'py, PyList>) -> PyResult<Held<'py>> {
    let refs: Option<Vec<Bound<'py, PyBytes>>> = list
        .iter()
        .map(|item| item.cast_into::<PyBytes>().ok())
        .collect();
    Ok(match refs {
        Some(refs) => Held::Refs(refs),
        None => {
            let (data, offsets) = pack(py, name, list)?;
            Held::Bytes(data, offsets)
        }
    })
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

/// Converts a dict of columns (see `encode_columns`) and encodes it.
fn encode_dict(
    py: Python<'_>,
    columns: &Bound<'_, PyDict>,
    framed: bool,
    threads: usize,
    pool: Option<&Arc<CorePool>>,
) -> PyResult<EncodedBatch> {
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
    py.detach(|| match pool {
        Some(pool) => encode_batch_with(&cols, rows, framed, threads, |n| pool.take_filled(n)),
        None => encode_batch(&cols, rows, framed, threads),
    })
    .map_err(|e| to_py(py, e, "<columns>"))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Encodes columns into one serialized ``tf.train.Example`` per row, in Rust.
///
/// Each column is a NumPy array (numbers: one value per row, or a row of
/// ``shape[1:]`` values; ``bytes_``/``str_``/object arrays of strings), a list of
/// ``str``/``bytes``, a dict ``{"data": uint8 array, "offsets": int64 array}`` of byte
/// strings packed end to end (an Arrow string array's buffers), or a
/// ``(values, row_splits)`` tuple for variable-length rows (row ``i`` is
/// ``values[row_splits[i]:row_splits[i + 1]]``).
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
    let batch = encode_dict(py, columns, false, default_threads(), None)?;
    PyList::new(
        py,
        (0..batch.len()).map(|i| PyBytes::new(py, batch.record(i))),
    )
}

/// Encodes columns (as ``encode_columns`` takes them) into a :class:`RecordBatch`:
/// the records stay in one Rust buffer, already framed as TFRecords, ready for
/// ``TFRecordWriter.write_batch``.
///
/// >>> import numpy as np, recordforge as rf
/// >>> batch = rf.encode_record_batch({"id": np.arange(3), "name": ["a", "bb", "ccc"]})
/// >>> len(batch), batch[2] == rf.encode_example({"id": 2, "name": "ccc"})
/// (3, True)
/// >>> batch.sizes().tolist(), batch.nbytes == int(batch.sizes().sum())
/// ([30, 31, 32], True)
///
/// ``pool``: a :class:`BlockPool` whose buffers the batch's records are made in (one
/// given back by a batch freed earlier, its bytes overwritten), and to which the batch
/// gives its buffer back when it is freed: a writer that makes batch after batch then
/// touches no fresh memory for them.
#[pyfunction]
#[pyo3(signature = (columns, *, threads=None, pool=None))]
pub fn encode_record_batch(
    py: Python<'_>,
    columns: &Bound<'_, PyDict>,
    threads: Option<usize>,
    pool: Option<PyRef<'_, BlockPool>>,
) -> PyResult<RecordBatch> {
    let pool = pool.map(|p| Arc::clone(&p.pool));
    let threads = threads.unwrap_or_else(default_threads);
    let batch = encode_dict(py, columns, true, threads, pool.as_ref())?;
    Ok(RecordBatch { batch, pool })
}

/// Serialized records held in one buffer, framed as TFRecords; a sequence of ``bytes``
/// (the Examples, without framing). Made by ``encode_record_batch``.
#[pyclass(module = "recordforge._core", frozen, sequence)]
pub struct RecordBatch {
    pub(crate) batch: EncodedBatch,
    /// Where the batch's buffer goes back to when it is freed.
    pool: Option<Arc<CorePool>>,
}

impl Drop for RecordBatch {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.batch.data));
        }
    }
}

impl RecordBatch {
    /// Frames of records `start..stop` as one contiguous slice.
    pub(crate) fn frames(&self, start: usize, stop: usize) -> &[u8] {
        let ends = &self.batch.ends;
        let from = if start == 0 { 0 } else { ends[start - 1] };
        let to = if stop == 0 { 0 } else { ends[stop - 1] };
        &self.batch.data[from..to]
    }

    /// Where the frames of records `start..stop` start, relative to the first one.
    pub(crate) fn frame_starts(&self, start: usize, stop: usize) -> impl Iterator<Item = u64> + '_ {
        let ends = &self.batch.ends;
        let base = if start == 0 { 0 } else { ends[start - 1] };
        (start..stop).map(move |i| (if i == 0 { 0 } else { ends[i - 1] } - base) as u64)
    }
}

#[pymethods]
impl RecordBatch {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.batch.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err("record index out of range"));
        }
        Ok(PyBytes::new(py, self.batch.record(i as usize)))
    }

    /// Records ``start..stop`` (all by default) framed as an uncompressed TFRecord
    /// stream, in one ``bytes``: what ``TFRecordWriter.write_batch`` writes for them.
    #[pyo3(signature = (start=0, stop=None))]
    fn framed<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.batch.len();
        let stop = stop.unwrap_or(n);
        if start > stop || stop > n {
            return Err(PyIndexError::new_err(format!(
                "records {start}..{stop} are not within a batch of {n}"
            )));
        }
        Ok(PyBytes::new(py, self.frames(start, stop)))
    }

    /// The frames of ``framed(start, stop)`` as a read-only ``memoryview`` of the batch's
    /// own buffer, not a copy: the view keeps the batch (and its buffer) alive.
    #[pyo3(signature = (start=0, stop=None))]
    fn framed_view<'py>(
        slf: &Bound<'py, Self>,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Bound<'py, PyMemoryView>> {
        let this = slf.get();
        let n = this.batch.len();
        let stop = stop.unwrap_or(n);
        if start > stop || stop > n {
            return Err(PyIndexError::new_err(format!(
                "records {start}..{stop} are not within a batch of {n}"
            )));
        }
        let frames = ArrayView1::from(this.frames(start, stop));
        // SAFETY: the array's base is the batch, which is frozen and gives its buffer
        // back (to its pool, or frees it) only in `Drop`: the memory stays valid and
        // unchanged while the array, or a view of it, lives.
        let array = unsafe { PyArray1::borrow_from_array(&frames, slf.clone().into_any()) };
        array.getattr("flags")?.setattr("writeable", false)?;
        PyMemoryView::from(array.as_any())
    }

    /// Size in bytes of each serialized record (without framing), as an int64 array.
    fn sizes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let mut prev = 0usize;
        let sizes: Vec<i64> = self
            .batch
            .ends
            .iter()
            .map(|&e| {
                let s = (e - prev) as i64 - 16;
                prev = e;
                s
            })
            .collect();
        PyArray1::from_vec(py, sizes)
    }

    /// Total bytes of the serialized records, without framing.
    #[getter]
    fn nbytes(&self) -> usize {
        self.batch.data.len() - 16 * self.batch.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RecordBatch of {} records, {} bytes>",
            self.batch.len(),
            self.nbytes()
        )
    }
}
