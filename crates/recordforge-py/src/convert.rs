//! Python values <-> core `Feature`s, and the codec entry points.

use std::borrow::Cow;

use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    IntoPyDict, PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping,
    PyMemoryView, PySlice, PyString, PyTuple,
};
use recordforge_core::{self as core, Feature};

use crate::errors::{encode_error, to_py};

/// Bytes-like arguments: `bytes` and uint8 NumPy arrays in C order (``np.frombuffer`` of
/// any buffer) are borrowed, anything else with the buffer protocol is copied (abi3 for
/// Python 3.10 has no buffer protocol: a `memoryview` is read as `memoryview.tobytes()`).
pub fn with_bytes<T>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> T) -> PyResult<T> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    if let Ok(array) = obj.cast::<PyArrayDyn<u8>>() {
        // C order only: the bytes of a Fortran-ordered array are its values transposed
        // (`bytes(array)` reads them in C order, as below).
        if array.is_c_contiguous() {
            if let Ok(view) = array.try_readonly() {
                if let Ok(slice) = view.as_slice() {
                    return Ok(f(slice));
                }
            }
        }
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(f(&b.to_vec()));
    }
    // memoryview, array.array, NumPy buffers...: copied through the buffer protocol, in C
    // order. Not `bytes(obj)`: it takes an integer (a NumPy integer scalar, a 0-d integer
    // array) for a count of zero bytes, and a list of ints for bytes.
    let view = PyMemoryView::from(obj)?;
    let format: String = view.getattr("format")?.extract()?;
    if holds_objects(&format) {
        let kind = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        return Err(PyTypeError::new_err(format!(
            "a buffer of Python objects ({kind}, format {format:?}) is not bytes: its \
             memory is the objects' addresses"
        )));
    }
    let copy = view.call_method0("tobytes")?;
    Ok(f(copy.cast::<PyBytes>()?.as_bytes()))
}

/// Whether a buffer's `struct` format holds Python objects (`O`), field names (between
/// colons, as NumPy's structured formats give them) left out.
fn holds_objects(format: &str) -> bool {
    format
        .split(':')
        .step_by(2)
        .any(|codes| codes.contains('O'))
}

/// CRC32C (Castagnoli, RFC 3720) of a bytes-like object; hardware-accelerated.
///
/// >>> import recordforge as rf
/// >>> hex(rf.crc32c(b"123456789"))
/// '0xe3069283'
#[pyfunction]
pub fn crc32c(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u32> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        return Ok(py.detach(|| core::crc32c(bytes)));
    }
    with_bytes(data, core::crc32c)
}

/// The CRC32C of ``a + b`` from ``crc32c(a)``, ``crc32c(b)`` and ``len(b)``, without
/// reading either (~0.5 µs).
///
/// >>> from recordforge import _core
/// >>> _core.crc32c_combine(_core.crc32c(b"1234"), _core.crc32c(b"56789"), 5) == _core.crc32c(b"123456789")
/// True
#[pyfunction]
pub fn crc32c_combine(crc_a: u32, crc_b: u32, length_b: u64) -> u32 {
    core::crc32c_combine(crc_a, crc_b, length_b)
}

/// ``crc`` carried on over ``framed``: whole TFRecord frames, back to back, that
/// recordforge made (``frame_records``, ``RecordBatch.framed``). Equal to
/// ``crc32c_combine(crc, crc32c(framed), len(framed))``, but a large record's data is
/// not read: its CRC comes from its frame, so the frames' data CRCs must be the data's.
/// ``ValueError`` where ``framed`` is not whole frames.
///
/// >>> from recordforge import _core
/// >>> framed = _core.frame_records([b"a", b"b" * 100_000])
/// >>> _core.frames_crc32c(framed) == _core.crc32c(framed)
/// True
#[pyfunction]
#[pyo3(signature = (framed, crc=0))]
pub fn frames_crc32c(py: Python<'_>, framed: &Bound<'_, PyAny>, crc: u32) -> PyResult<u32> {
    let walk = |bytes: &[u8]| {
        recordforge_core::framing::frames_crc32c(crc, bytes).map_err(|at| {
            PyValueError::new_err(format!(
                "not whole TFRecord frames: the frame at byte {at} of {} is cut short or its \
                 length fails its CRC",
                bytes.len()
            ))
        })
    };
    if let Ok(b) = framed.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        return py.detach(|| walk(bytes));
    }
    with_bytes(framed, walk)?
}

/// The masked CRC32C stored in TFRecord frames: ``((crc >> 15) | (crc << 17)) + 0xa282ead8``.
///
/// >>> import recordforge as rf
/// >>> hex(rf.masked_crc32c(b"foo"))
/// '0xfebe8a61'
#[pyfunction]
pub fn masked_crc32c(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u32> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        return Ok(py.detach(|| core::masked_crc32c(bytes)));
    }
    with_bytes(data, core::masked_crc32c)
}

// ---------------------------------------------------------------------------------------
// Encoding

thread_local! {
    /// Reused output buffer: an encode allocates nothing for its output but the `bytes`.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    BUFFER.with_borrow_mut(|out| {
        out.clear();
        let result = f(out);
        if out.capacity() > 1 << 20 {
            *out = Vec::new(); // do not keep a huge buffer alive after one big record
        }
        result
    })
}

enum Kind {
    Int,
    Float,
    Bytes,
}

fn fail(py: Python<'_>, name: &str, what: String) -> PyErr {
    encode_error(py, format!("feature {name:?}: {what}"))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn scalar_kind(v: &Bound<'_, PyAny>) -> Option<Kind> {
    if v.is_instance_of::<PyBool>() || v.is_instance_of::<PyInt>() {
        Some(Kind::Int)
    } else if v.is_instance_of::<PyFloat>() {
        Some(Kind::Float)
    } else if v.is_instance_of::<PyBytes>()
        || v.is_instance_of::<PyString>()
        || v.is_instance_of::<PyByteArray>()
    {
        Some(Kind::Bytes)
    } else {
        None
    }
}

fn to_i64(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<i64> {
    v.extract::<i64>().map_err(|_| {
        fail(
            py,
            name,
            format!(
                "integer {} does not fit in int64",
                v.str().map(|s| s.to_string()).unwrap_or_default()
            ),
        )
    })
}

fn to_bytes<'a>(py: Python<'_>, name: &str, v: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec())); // copied: it may change once the GIL is let go
    }
    let s = v.cast::<PyString>()?;
    let text = s.to_str().map_err(|e| {
        let why = e.value(py).to_string();
        fail(py, name, format!("str is not encodable as UTF-8 ({why})"))
    })?;
    Ok(Cow::Owned(text.as_bytes().to_vec()))
}

/// Converts a list/tuple of Python scalars, all of one kind (ints may mix with floats).
fn sequence_feature<'a>(
    py: Python<'_>,
    name: &str,
    items: &'a [Bound<'_, PyAny>],
) -> PyResult<Feature<'a>> {
    let mut kind: Option<Kind> = None;
    for item in items {
        let k = match scalar_kind(item) {
            Some(k) => k,
            None => {
                return Err(fail(
                    py,
                    name,
                    format!(
                    "unsupported list element of type {}: expected int, float, bool, str or bytes",
                    type_name(item)
                ),
                ))
            }
        };
        kind = Some(match (kind, k) {
            (None, k) => k,
            (Some(Kind::Int), Kind::Int) => Kind::Int,
            (Some(Kind::Int | Kind::Float), Kind::Int | Kind::Float) => Kind::Float,
            (Some(Kind::Bytes), Kind::Bytes) => Kind::Bytes,
            _ => {
                return Err(fail(
                    py,
                    name,
                    "list mixes numbers with str/bytes".to_string(),
                ))
            }
        });
    }
    Ok(match kind {
        None => {
            return Err(fail(
                py,
                name,
                "an empty list has no kind: use np.array([], np.int64), np.array([], np.float32) or np.array([], np.bytes_)".to_string(),
            ))
        }
        Some(Kind::Int) => Feature::Int64(Cow::Owned(items.iter().map(|v| to_i64(py, name, v)).collect::<PyResult<_>>()?)),
        Some(Kind::Float) => Feature::Float(Cow::Owned(
            items.iter().map(|v| v.extract::<f64>().map(|f| f as f32)).collect::<PyResult<_>>()?,
        )),
        Some(Kind::Bytes) => Feature::Bytes(items.iter().map(|v| to_bytes(py, name, v)).collect::<PyResult<_>>()?),
    })
}

fn array_feature(
    py: Python<'_>,
    name: &str,
    arr: &Bound<'_, PyUntypedArray>,
) -> PyResult<Feature<'static>> {
    let dtype = arr.dtype();
    let kind = dtype.kind();
    let flat = arr.call_method0("ravel")?;
    match kind {
        b'b' | b'i' | b'u' => {
            if kind == b'u' && dtype.itemsize() == 8 {
                // In native byte order first (a ">u8" array is not a PyArray<u64>).
                let native = [("copy", false)].into_py_dict(py)?;
                let flat = flat.call_method("astype", ("=u8",), Some(&native))?;
                let a = flat.cast::<PyArrayDyn<u64>>()?.readonly();
                let values = a
                    .as_array()
                    .iter()
                    .map(|&v| {
                        i64::try_from(v).map_err(|_| {
                            fail(py, name, format!("uint64 value {v} does not fit in int64"))
                        })
                    })
                    .collect::<PyResult<Vec<i64>>>()?;
                return Ok(Feature::Int64(Cow::Owned(values)));
            }
            let a = flat.call_method1("astype", ("int64",))?;
            let a = a.cast::<PyArrayDyn<i64>>()?.readonly();
            Ok(Feature::Int64(Cow::Owned(
                a.as_array().iter().copied().collect(),
            )))
        }
        b'f' => {
            let a = flat.call_method1("astype", ("float32",))?;
            let a = a.cast::<PyArrayDyn<f32>>()?.readonly();
            Ok(Feature::Float(Cow::Owned(
                a.as_array().iter().copied().collect(),
            )))
        }
        b'S' | b'U' | b'O' => {
            let list = flat.call_method0("tolist")?;
            let items: Vec<Bound<'_, PyAny>> = list.cast::<PyList>()?.iter().collect();
            if items.is_empty() {
                return if kind == b'O' {
                    Err(fail(
                        py,
                        name,
                        "an empty object array has no kind: use dtype int64, float32 or bytes_"
                            .to_string(),
                    ))
                } else {
                    Ok(Feature::Bytes(Vec::new()))
                };
            }
            sequence_feature(py, name, &items).map(into_owned)
        }
        _ => Err(fail(
            py,
            name,
            format!("unsupported NumPy dtype {}", dtype.str()?),
        )),
    }
}

fn into_owned(f: Feature<'_>) -> Feature<'static> {
    match f {
        Feature::Bytes(v) => {
            Feature::Bytes(v.into_iter().map(|b| Cow::Owned(b.into_owned())).collect())
        }
        Feature::Float(v) => Feature::Float(Cow::Owned(v.into_owned())),
        Feature::Int64(v) => Feature::Int64(Cow::Owned(v.into_owned())),
        Feature::Empty => Feature::Empty,
    }
}

/// Converts one Python value to a Feature; `bytes` values are borrowed from `value`.
fn to_feature<'a>(
    py: Python<'_>,
    name: &str,
    value: &'a Bound<'_, PyAny>,
) -> PyResult<Feature<'a>> {
    if let Some(kind) = scalar_kind(value) {
        return Ok(match kind {
            Kind::Int => Feature::Int64(Cow::Owned(vec![to_i64(py, name, value)?])),
            Kind::Float => Feature::Float(Cow::Owned(vec![value.extract::<f64>()? as f32])),
            Kind::Bytes => Feature::Bytes(vec![to_bytes(py, name, value)?]),
        });
    }
    if let Ok(list) = value.cast::<PyList>() {
        let items = numpy_scalars_as_python(py, list.iter().collect())?;
        return sequence_feature(py, name, &items).map(into_owned);
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        let items = numpy_scalars_as_python(py, tuple.iter().collect())?;
        return sequence_feature(py, name, &items).map(into_owned);
    }
    if let Ok(arr) = value.cast::<PyUntypedArray>() {
        return array_feature(py, name, arr);
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(Feature::Bytes(vec![Cow::Owned(b.to_vec())]));
    }
    if value.is_none() {
        return Err(fail(py, name, "None has no kind: give an empty array (np.array([], np.int64), ...) for a present but empty feature, or leave the feature out".to_string()));
    }
    // NumPy scalars (np.int64, np.bool_, ...), tensors and other array-likes.
    if value.hasattr("__array__")? || value.hasattr("dtype")? {
        let np = py.import("numpy")?;
        let arr = np.call_method1("asarray", (value,))?;
        if let Ok(arr) = arr.cast::<PyUntypedArray>() {
            return array_feature(py, name, arr);
        }
    }
    Err(fail(
        py,
        name,
        format!("unsupported value of type {}: expected int, float, bool, str, bytes, a list of them, or a NumPy array", type_name(value)),
    ))
}

/// `items` with each NumPy scalar (``np.int64(1)``, ``np.float32(0.5)``, ``np.bool_``...)
/// as the Python scalar it holds, as TensorFlow takes a list of them.
fn numpy_scalars_as_python<'py>(
    py: Python<'py>,
    mut items: Vec<Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut generic = None;
    for item in items.iter_mut() {
        if scalar_kind(item).is_some() || !item.hasattr("dtype")? {
            continue;
        }
        let generic = match &generic {
            Some(g) => g,
            None => generic.insert(py.import("numpy")?.getattr("generic")?),
        };
        if item.is_instance(generic)? {
            *item = item.call_method0("item")?;
        }
    }
    Ok(items)
}

fn feature_name<'a>(py: Python<'_>, key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    if let Ok(s) = key.cast::<PyString>() {
        return s.to_str();
    }
    Err(encode_error(
        py,
        format!("feature names must be str, not {}", type_name(key)),
    ))
}

type Items<'py> = Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

/// The (key, value) pairs of a mapping; holding them keeps every value alive while the
/// GIL is released.
fn mapping_items<'py>(
    py: Python<'py>,
    mapping: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Items<'py>> {
    if let Ok(d) = mapping.cast::<PyDict>() {
        return Ok(d.iter().collect());
    }
    if let Ok(m) = mapping.cast::<PyMapping>() {
        return m.items()?.iter().map(|it| it.extract()).collect();
    }
    Err(encode_error(
        py,
        format!(
            "{what} must be a mapping of feature name to value, not {}",
            type_name(mapping)
        ),
    ))
}

/// Python int/float scalars, collected first so their Features borrow one buffer
/// instead of allocating a one-value Vec each.
#[derive(Default)]
struct Scalars {
    ints: Vec<i64>,
    floats: Vec<f32>,
}

enum Pending<'a> {
    Int(usize),
    Float(usize),
    Ready(Feature<'a>),
}

fn to_features<'a>(
    py: Python<'_>,
    items: &'a Items<'_>,
    scalars: &mut Scalars,
) -> PyResult<Vec<(&'a str, Pending<'a>)>> {
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let name = feature_name(py, k)?;
        let pending = if v.is_exact_instance_of::<PyInt>() || v.is_instance_of::<PyBool>() {
            scalars.ints.push(to_i64(py, name, v)?);
            Pending::Int(scalars.ints.len() - 1)
        } else if v.is_exact_instance_of::<PyFloat>() {
            scalars.floats.push(v.extract::<f64>()? as f32);
            Pending::Float(scalars.floats.len() - 1)
        } else {
            Pending::Ready(to_feature(py, name, v)?)
        };
        out.push((name, pending));
    }
    Ok(out)
}

fn resolve<'a>(
    pending: Vec<(&'a str, Pending<'a>)>,
    scalars: &'a Scalars,
) -> Vec<(&'a str, Feature<'a>)> {
    pending
        .into_iter()
        .map(|(name, p)| {
            let f = match p {
                Pending::Int(i) => Feature::Int64(Cow::Borrowed(&scalars.ints[i..=i])),
                Pending::Float(i) => Feature::Float(Cow::Borrowed(&scalars.floats[i..=i])),
                Pending::Ready(f) => f,
            };
            (name, f)
        })
        .collect()
}

/// Serializes a mapping of feature name to value as a ``tf.train.Example``.
///
/// ints/bools -> int64_list, floats -> float_list (float32), str/bytes -> bytes_list
/// (NumPy scalars as the Python scalar they hold); lists, tuples and NumPy arrays
/// (flattened) give several values. An empty list has no
/// kind: pass ``np.array([], np.int64)`` (or float32 / bytes_). Unsupported values raise
/// ``EncodeError`` naming the feature.
///
/// >>> import numpy as np, recordforge as rf
/// >>> rf.encode_example({"key": b"value"})
/// b'\n\x12\n\x10\n\x03key\x12\t\n\x07\n\x05value'
/// >>> rf.decode_example(rf.encode_example({"ids": np.arange(3), "none": np.array([], np.float32)}))
/// {'ids': array([0, 1, 2]), 'none': array([], dtype=float32)}
/// >>> rf.encode_example({"bad": [1, "x"]})
/// Traceback (most recent call last):
/// ...
/// recordforge.errors.EncodeError: feature "bad": list mixes numbers with str/bytes
#[pyfunction]
pub fn encode_example<'py>(
    py: Python<'py>,
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let items = mapping_items(py, mapping, "an Example")?;
    let mut scalars = Scalars::default();
    let pending = to_features(py, &items, &mut scalars)?;
    let features = resolve(pending, &scalars);
    let size = core::example_size(&features);
    // Encoded straight into the new bytes object: one copy of each value.
    bytes_filled(py, size, |buf| {
        py.detach(|| {
            let mut out = core::SliceOut::new(buf);
            core::encode_example(&features, &mut out);
            assert_eq!(out.written(), size, "the Example's computed size");
        })
    })
}

/// A new ``bytes`` of `len` bytes, every one of them written by `fill` (not zeroed first).
fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: a new bytes object of `len` bytes, owned here; its buffer is written whole
    // by `fill` (the encoder asserts it wrote the size computed) before anyone sees it.
    unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as isize);
        let bytes = Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>();
        let buf = pyo3::ffi::PyBytes_AsString(ptr).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        Ok(bytes)
    }
}

/// Serializes a ``tf.train.SequenceExample``: ``context`` maps names to values (as in
/// ``encode_example``), ``feature_lists`` maps names to a sequence of per-step values.
///
/// >>> import recordforge as rf
/// >>> data = rf.encode_sequence_example({"id": 7}, {"tokens": [[b"a", b"b"], [b"c"]]})
/// >>> context, lists = rf.decode_sequence_example(data)
/// >>> context["id"].tolist(), lists["tokens"]
/// ([7], [[b'a', b'b'], [b'c']])
#[pyfunction]
pub fn encode_sequence_example<'py>(
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    feature_lists: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let context_items = mapping_items(py, context, "context")?;
    let mut scalars = Scalars::default();
    let pending = to_features(py, &context_items, &mut scalars)?;
    let context = resolve(pending, &scalars);
    let lists_map = mapping_items(py, feature_lists, "feature_lists")?;
    let mut lists = Vec::with_capacity(lists_map.len());
    for (k, steps) in &lists_map {
        let name = feature_name(py, k)?;
        let mut out_steps = Vec::new();
        for (i, step) in steps
            .try_iter()
            .map_err(|_| {
                encode_error(
                    py,
                    format!(
                        "feature list {name:?}: expected a sequence of steps, not {}",
                        type_name(steps)
                    ),
                )
            })?
            .enumerate()
        {
            out_steps.push(to_feature(py, &format!("{name}[{i}]"), &step?).map(into_owned)?);
        }
        lists.push((name, out_steps));
    }
    Ok(with_buffer(|out| {
        py.detach(|| core::encode_sequence_example(&context, &lists, out));
        PyBytes::new(py, out)
    }))
}

// ---------------------------------------------------------------------------------------
// Decoding

pub fn feature_to_py<'py>(py: Python<'py>, f: &Feature<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match f {
        Feature::Int64(v) => PyArray1::from_slice(py, v).into_any(),
        Feature::Float(v) => PyArray1::from_slice(py, v).into_any(),
        Feature::Empty => PyArray1::<f32>::from_slice(py, &[]).into_any(),
        Feature::Bytes(v) => PyList::new(py, v.iter().map(|b| PyBytes::new(py, b)))?.into_any(),
    })
}

fn key_to_py<'py>(py: Python<'py>, key: &[u8], what: &str) -> PyResult<Bound<'py, PyString>> {
    match std::str::from_utf8(key) {
        Ok(s) => Ok(PyString::new(py, s)),
        Err(_) => Err(crate::errors::decode_error(
            py,
            format!(
                "{what} name {:?} is not valid UTF-8",
                String::from_utf8_lossy(key)
            ),
        )),
    }
}

fn features_to_dict<'py>(
    py: Python<'py>,
    features: &core::Features<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, f) in features {
        dict.set_item(key_to_py(py, k, "feature")?, feature_to_py(py, f)?)?;
    }
    Ok(dict)
}

/// Parses a serialized ``tf.train.Example`` into ``{name: values}``: ``np.ndarray[int64]``,
/// ``np.ndarray[float32]`` or ``list[bytes]``; a Feature with no kind gives an empty
/// float32 array. Packed and unpacked lists, unknown fields and duplicated keys (last
/// wins) are handled as protobuf does; malformed bytes raise ``DecodeError``.
///
/// ``copy=False`` gives bytes values as read-only ``memoryview``s of ``data`` itself (of
/// one copy of it when ``data`` is not ``bytes``): no copy of a big value, and the
/// record is kept alive by the views.
///
/// >>> import recordforge as rf
/// >>> rf.decode_example(b'\n\x12\n\x10\n\x03key\x12\t\n\x07\n\x05value')
/// {'key': [b'value']}
/// >>> bytes(rf.decode_example(b'\n\x12\n\x10\n\x03key\x12\t\n\x07\n\x05value', copy=False)["key"][0])
/// b'value'
#[pyfunction]
#[pyo3(signature = (data, *, copy=true))]
pub fn decode_example<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    copy: bool,
) -> PyResult<Bound<'py, PyDict>> {
    if !copy {
        return decode_example_views(py, data);
    }
    with_bytes(data, |bytes| {
        let features = core::decode_example(bytes).map_err(|e| to_py(py, e, "<bytes>"))?;
        features_to_dict(py, &features)
    })?
}

/// [`decode_example`] with bytes values as memoryviews of the record.
fn decode_example_views<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let record = match data.cast::<PyBytes>() {
        Ok(b) => b.clone(),
        Err(_) => py
            .get_type::<PyBytes>()
            .call1((data,))?
            .cast_into::<PyBytes>()?,
    };
    let base = record.as_bytes();
    let features = core::decode_example(base).map_err(|e| to_py(py, e, "<bytes>"))?;
    let view = PyMemoryView::from(record.as_any())?;
    let dict = PyDict::new(py);
    for (k, f) in &features {
        let value = match f {
            Feature::Bytes(values) => {
                let mut out = Vec::with_capacity(values.len());
                for b in values {
                    let start = (b.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
                    out.push(if start.saturating_add(b.len()) <= base.len() {
                        let end = (start + b.len()) as isize;
                        view.get_item(PySlice::new(py, start as isize, end, 1))?
                    } else {
                        PyBytes::new(py, b).into_any() // not a part of the record
                    });
                }
                PyList::new(py, out)?.into_any()
            }
            other => feature_to_py(py, other)?,
        };
        dict.set_item(key_to_py(py, k, "feature")?, value)?;
    }
    Ok(dict)
}

/// Parses a serialized ``tf.train.SequenceExample`` into ``(context, feature_lists)``,
/// where ``feature_lists`` maps each name to a list of per-step values.
///
/// >>> import recordforge as rf
/// >>> rf.decode_sequence_example(rf.encode_sequence_example({}, {"x": [[1.0], [2.0, 3.0]]}))
/// ({}, {'x': [array([1.], dtype=float32), array([2., 3.], dtype=float32)]})
#[pyfunction]
pub fn decode_sequence_example<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    with_bytes(data, |bytes| {
        let seq = core::decode_sequence_example(bytes).map_err(|e| to_py(py, e, "<bytes>"))?;
        let context = features_to_dict(py, &seq.context)?;
        let lists = PyDict::new(py);
        for (k, steps) in &seq.feature_lists {
            let steps = steps
                .iter()
                .map(|f| feature_to_py(py, f))
                .collect::<PyResult<Vec<_>>>()?;
            lists.set_item(key_to_py(py, k, "feature list")?, PyList::new(py, steps)?)?;
        }
        Ok((context, lists))
    })?
}
