//! `RowReader`: ``ds[i]``, one record of a dataset's memory-mapped files -> a dict of
//! NumPy values, in one call (index lookup, both CRCs, decode, the dict).

use std::os::raw::c_void;
use std::sync::{Arc, Mutex, TryLockError};

use numpy::npyffi::PY_ARRAY_API;
use numpy::{Element, PyArray1, PyArrayDescr, PyArrayDescrMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyType};
use recordforge_core::batch::{DecodedColumn, Values, Wanted};
use recordforge_core::reader::ReadError;
use recordforge_core::row::{RecordDecoder, RowIndex};

use crate::access::RecordFile;
use crate::decode::kind_of;
use crate::errors::{decode_error, to_py};
use crate::reader::{lock, read_error, record_at};

/// Records of at least this many bytes are checked and decoded with the GIL released;
/// for smaller ones releasing and taking it back costs more than the work.
const DETACH_BYTES: usize = 64 * 1024;

/// What one feature's values become in the row.
enum Shape {
    /// The one value, as a NumPy scalar (``bytes`` for bytes).
    Scalar,
    /// The values as a 1-D array.
    Flat,
    /// The values as an array of these dimensions; `None`: as many rows as the values
    /// fill (``(None, width)``).
    Dims(Vec<Option<usize>>),
}

struct Feature {
    key: Py<PyString>,
    name: String,
    shape: Shape,
}

/// One file, opened on first use: its memory map and record offsets.
struct Slot {
    file: Py<RecordFile>,
    offsets: Vec<u64>,
}

/// Record ``i`` of a list of uncompressed files as a dict ``{name: value}``: a scalar
/// shape gives a NumPy scalar (``bytes`` for bytes), a fixed shape an array of that
/// shape, ``(None, w)`` an array of ``w`` columns, others a 1-D array (bytes as object
/// arrays). ``counts[k]`` records in file ``k``, numbered end to end; with
/// ``every = (index, count)`` record ``i`` is their ``index + i * count``-th (a shard
/// that takes every ``count``-th record). ``load(k)`` gives file ``k``'s ``RecordFile``
/// and record offsets the first time one of its records is read. Both CRCs of every
/// record are checked.
#[pyclass(module = "recordforge._core", frozen)]
pub struct RowReader {
    index: RowIndex,
    features: Vec<Feature>,
    /// Its buffers are reused from one record to the next; a call that finds it in use
    /// (by a thread that released the GIL) decodes with a copy of `fresh` rather than
    /// wait for it while holding the GIL.
    decoder: Mutex<RecordDecoder>,
    fresh: RecordDecoder,
    /// ``{name: None}`` of the features, in order.
    template: Py<PyDict>,
    /// Each file's slot once loaded (again where its map met the file cut short and the
    /// file is whole again: see `RecordFile.is_restored`).
    slots: Vec<Mutex<Option<Arc<Slot>>>>,
    load: Py<PyAny>,
    int64: Scalars,
    float32: Scalars,
}

/// Makes NumPy scalars of one type. ``PyArray_Scalar`` goes through the descriptor's
/// generic copy machinery (~50 ns); allocating the scalar type's object and writing its
/// ``obval`` (the public layout of ``arrayscalars.h``: the object header, then the value)
/// takes half that, which is ~0.5 µs of a 20-scalar row. The layout is checked against
/// ``PyArray_Scalar`` once, at construction; where it does not match, ``PyArray_Scalar``
/// is used.
struct Scalars {
    descr: Py<PyArrayDescr>,
    /// The scalar type and its ``tp_alloc``, when the layout was confirmed.
    direct: Option<(Py<PyType>, AllocFunc)>,
}

type AllocFunc =
    unsafe extern "C" fn(*mut ffi::PyTypeObject, ffi::Py_ssize_t) -> *mut ffi::PyObject;

/// Where ``obval`` sits in a NumPy scalar: right after the ``PyObject`` header.
const OBVAL: usize = std::mem::size_of::<ffi::PyObject>();

impl Scalars {
    fn new<T: Element + Copy>(py: Python<'_>, probe: T) -> PyResult<Self> {
        let descr = numpy::dtype::<T>(py).unbind();
        let mut made = Scalars {
            descr,
            direct: None,
        };
        let ty = made.descr.bind(py).typeobj();
        let basic: usize = ty.getattr("__basicsize__")?.extract()?;
        // SAFETY: `ty` is a type object; `Py_tp_alloc` of a static type may be read
        // through `PyType_GetSlot` from Python 3.10 on (our abi3 floor).
        let slot = unsafe { ffi::PyType_GetSlot(ty.as_ptr().cast(), ffi::Py_tp_alloc) };
        let need = OBVAL + std::mem::size_of::<T>();
        if slot.is_null() || basic < need {
            return Ok(made);
        }
        // SAFETY: a non-null `Py_tp_alloc` slot holds an `allocfunc`.
        let alloc: AllocFunc = unsafe { std::mem::transmute::<*mut c_void, AllocFunc>(slot) };
        let reference = made.generic(py, &probe)?;
        made.direct = Some((ty.clone().unbind(), alloc));
        let direct = made.make(py, &probe)?;
        let same = reference.bind(py).get_type().is(direct.bind(py).get_type())
            && reference.bind(py).eq(direct.bind(py))?;
        if !same {
            made.direct = None;
        }
        Ok(made)
    }

    fn generic<T: Element>(&self, py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
        // SAFETY: `value` is a valid `T` and `descr` its NumPy type; PyArray_Scalar copies
        // it into a new scalar (the descriptor is not stolen).
        unsafe {
            let ptr = PY_ARRAY_API.PyArray_Scalar(
                py,
                (value as *const T).cast_mut().cast::<c_void>(),
                self.descr.as_ptr().cast(),
                std::ptr::null_mut(),
            );
            Bound::from_owned_ptr_or_err(py, ptr).map(Bound::unbind)
        }
    }

    fn make<T: Element + Copy>(&self, py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
        let Some((ty, alloc)) = &self.direct else {
            return self.generic(py, value);
        };
        // SAFETY: `alloc` is the type's own `tp_alloc`; it returns a zeroed object of
        // `__basicsize__` bytes (checked to hold the header and a `T`) with its type and
        // reference count set, or null with an exception. `obval` is written before the
        // object is seen by anyone.
        unsafe {
            let obj = alloc(ty.as_ptr().cast(), 0);
            if !obj.is_null() {
                obj.cast::<u8>()
                    .add(OBVAL)
                    .cast::<T>()
                    .write_unaligned(*value);
            }
            Bound::from_owned_ptr_or_err(py, obj).map(Bound::unbind)
        }
    }
}

type FeatureArg = (String, String, Option<usize>, Option<Vec<Option<usize>>>);

impl RowReader {
    /// File `k`'s slot, loaded through `load` the first time, and again where its map
    /// met the file cut short and the file is whole again (the map reads zeros from the
    /// cut on for its life; `load` opens the file again then).
    fn slot(&self, py: Python<'_>, k: usize) -> PyResult<Arc<Slot>> {
        // (the lock is never held while Python code runs or the GIL is let go)
        let kept = lock(&self.slots[k]).clone();
        if let Some(slot) = kept {
            if !slot.file.get().restored(py) {
                return Ok(slot);
            }
        }
        let loaded = self.load.bind(py).call1((k,))?;
        let (file, offsets): (Py<RecordFile>, PyReadonlyArray1<'_, u64>) = loaded.extract()?;
        let slot = Arc::new(Slot {
            file,
            offsets: offsets.as_slice()?.to_vec(),
        });
        // Another thread may have loaded it meanwhile (`load` runs Python code): either
        // is the file as it is now.
        *lock(&self.slots[k]) = Some(Arc::clone(&slot));
        Ok(slot)
    }

    fn value<'py>(
        &self,
        py: Python<'py>,
        feature: &Feature,
        values: &Values,
        record: &[u8],
        at: &dyn Fn() -> String,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Shape::Scalar = feature.shape {
            let one = match values {
                Values::Int64(v) => v.first().map(|x| self.int64.make(py, x)),
                Values::Float(v) => v.first().map(|x| self.float32.make(py, x)),
                Values::Spans(v) => v
                    .first()
                    .map(|&(s, e)| Ok(PyBytes::new(py, &record[s..e]).into_any().unbind())),
                Values::Bytes { .. } => unreachable!("decoded as spans"),
            };
            // The decoder checked the width (1) of a scalar.
            let one = one.expect("one value")?;
            return Ok(one.into_bound(py));
        }
        let n = values.len();
        let flat = match values {
            Values::Int64(v) => PyArray1::from_slice(py, v).into_any(),
            Values::Float(v) => PyArray1::from_slice(py, v).into_any(),
            Values::Spans(v) => {
                let objects: Vec<Py<PyAny>> = v
                    .iter()
                    .map(|&(s, e)| PyBytes::new(py, &record[s..e]).into_any().unbind())
                    .collect();
                PyArray1::from_vec(py, objects).into_any()
            }
            Values::Bytes { .. } => unreachable!("decoded as spans"),
        };
        let Shape::Dims(dims) = &feature.shape else {
            return Ok(flat);
        };
        let known: usize = dims.iter().flatten().product();
        let dims: Vec<usize> = dims.iter().map(|d| d.unwrap_or(n / known.max(1))).collect();
        if dims.iter().product::<usize>() != n {
            return Err(decode_error(
                py,
                format!(
                    "{}: feature {:?} has {n} values, which do not fill shape {dims:?}",
                    at(),
                    feature.name
                ),
            ));
        }
        flat.call_method1("reshape", (PyTuple::new(py, dims)?,))
    }
}

/// The record framed at `offset` of `data`, both CRCs checked, decoded by `decoder`.
fn read<'a>(
    data: &'a [u8],
    offset: u64,
    max_record: u64,
    decoder: &'a mut RecordDecoder,
) -> Result<(&'a [DecodedColumn], &'a [u8]), ReadError> {
    let record = record_at(data, offset, true, max_record).map_err(|error| ReadError {
        file: 0,
        record: None,
        index: None,
        error,
    })?;
    let columns = decoder.decode(record).map_err(|error| ReadError {
        file: 0,
        record: Some(offset),
        index: None,
        error,
    })?;
    Ok((columns, record))
}

#[pymethods]
impl RowReader {
    #[new]
    #[pyo3(signature = (counts, features, load, *, every=None))]
    fn new(
        py: Python<'_>,
        counts: Vec<u64>,
        features: Vec<FeatureArg>,
        load: Py<PyAny>,
        every: Option<(u64, u64)>,
    ) -> PyResult<Self> {
        let index = RowIndex::new(&counts, every).map_err(|e| to_py(py, e, ""))?;
        recordforge_core::mapped::guard_again(); // (maps made before a handler took ours' place)
        let mut out = Vec::with_capacity(features.len());
        let mut kinds = Vec::with_capacity(features.len());
        for (name, kind, width, shape) in features {
            kinds.push((kind_of(py, &name, &kind)?, width));
            let shape = match shape {
                None => Shape::Flat,
                Some(dims) if dims.is_empty() => {
                    if width != Some(1) {
                        return Err(PyValueError::new_err(format!(
                            "feature {name:?}: a scalar needs width 1, not {width:?}"
                        )));
                    }
                    Shape::Scalar
                }
                Some(dims) => Shape::Dims(dims),
            };
            out.push(Feature {
                key: PyString::intern(py, &name).unbind(),
                name,
                shape,
            });
        }
        let wanted: Vec<Wanted<'_>> = out
            .iter()
            .zip(kinds)
            .map(|(f, (kind, width))| Wanted {
                name: &f.name,
                kind,
                width,
            })
            .collect();
        let fresh = RecordDecoder::new(&wanted);
        let template = PyDict::new(py);
        for f in &out {
            template.set_item(f.key.bind(py), py.None())?;
        }
        Ok(RowReader {
            index,
            features: out,
            decoder: Mutex::new(fresh.clone()),
            fresh,
            template: template.unbind(),
            slots: counts.iter().map(|_| Mutex::new(None)).collect(),
            load,
            int64: Scalars::new(py, -0x0123_4567_89ab_cdef_i64)?,
            float32: Scalars::new(py, -1.5e-3_f32)?,
        })
    }

    fn __len__(&self) -> usize {
        self.index.len() as usize
    }

    /// Record ``i`` (negative: from the end).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        i: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let found = i.extract::<i64>().ok().and_then(|i| self.index.locate(i));
        let Some((k, position)) = found else {
            let n = self.index.len();
            return Err(PyIndexError::new_err(format!("record {i} of {n}")));
        };
        let slot = self.slot(py, k)?;
        let file = slot.file.get();
        let Some(&offset) = slot.offsets.get(position as usize) else {
            return Err(PyIndexError::new_err(format!(
                "{}: record {position} of {} found",
                file.name(),
                slot.offsets.len()
            )));
        };
        let data = file.data();
        let max_record = file.max_record_bytes();
        let mut spare;
        let mut guard;
        let decoder: &mut RecordDecoder = match self.decoder.try_lock() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(TryLockError::Poisoned(p)) => {
                guard = p.into_inner();
                &mut guard
            }
            Err(TryLockError::WouldBlock) => {
                spare = self.fresh.clone();
                &mut spare
            }
        };
        // The length field, unchecked (`read` checks it): only to choose.
        let size = usize::try_from(offset)
            .ok()
            .and_then(|pos| data.get(pos..pos.checked_add(8)?))
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let result = if size >= DETACH_BYTES as u64 {
            py.detach(move || read(data, offset, max_record, decoder))
        } else {
            read(data, offset, max_record, decoder)
        };
        // A file cut under its map: that error, not the CRC mismatch of the zeros read.
        let cut = (result.is_err() || file.is_cut()).then(|| file.cut_error(offset));
        let result = match cut.flatten() {
            Some(error) => Err(ReadError {
                file: 0,
                record: None, // (a framing error: the offset is in it)
                index: None,
                error,
            }),
            None => result,
        };
        let (columns, record) =
            result.map_err(|e| read_error(py, e, &[file.name().to_string()]))?;
        let at = || format!("{}: record at offset {offset}", file.name());
        // A copy of a dict of these keys takes the values without growing its table.
        let out = self.template.bind(py).copy()?;
        for (feature, column) in self.features.iter().zip(columns) {
            let value = self.value(py, feature, &column.values, record, &at)?;
            out.set_item(feature.key.bind(py), value)?;
        }
        Ok(out)
    }
}
