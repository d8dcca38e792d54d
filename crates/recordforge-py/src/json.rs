//! `json_loads`: standard JSON into Python objects, for the big files that sources parse
//! whole (COCO's annotation files: hundreds of MB, most of them polygon numbers). It
//! gives what `json.loads` gives, value for value: dicts (the last of duplicate keys
//! wins), lists, str, int, float (correctly rounded: serde_json's `float_roundtrip`),
//! True / False / None. Where it cannot promise that, it declines (returns `None`) and
//! the caller parses with `json.loads`, which then gives its own result or error:
//!
//! - any input serde_json refuses: not UTF-8, a byte-order mark, `NaN` / `Infinity`
//!   (Python accepts them), lone surrogates in `\u` escapes (Python accepts them), a
//!   number beyond `f64`, trailing data, any syntax error;
//! - lists and dicts nested more than 24 deep (the stack: `MAX_DEPTH`);
//! - a run of 19 or more digits anywhere: an integer that long may not fit in `i64` /
//!   `u64`, which serde_json would turn into a float (Python keeps an exact int);
//! - `-0` not followed by a digit, `.`, `e` or `E` (the integer minus zero): Python
//!   gives the int 0, serde_json the float -0.0.
//!
//! Both checks are a scan of the raw bytes, strings included: a string that holds such
//! text only costs the fast path.
//!
//! The parse makes millions of lists and dicts, none of them garbage: its caller pauses
//! Python's cyclic garbage collector around it (`load_coco` does, for the whole load),
//! or each few hundred made start a collection that walks them all again.
//!
//! A Python object that cannot be made (out of memory) raises its `MemoryError`, and no
//! value is cut short: from there the parse makes nothing more (no serde error either:
//! making one takes memory), reads on to the end and raises. The Rust side allocates only
//! serde_json's buffer for strings with escapes and the shared keys (at most 4,096 of up
//! to 64 bytes); a failure there aborts, as Rust's allocations do.

use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Digits in a row from which an integer might not fit in 64 bits (i64 holds every
/// 18-digit integer).
const LONG_DIGITS: usize = 19;

/// Distinct object keys kept as one shared `str` each (as `json`'s own memo does), of
/// at most KEPT_KEY_BYTES; past them, a key is a new `str` each time (a hostile file's
/// millions of distinct or long keys cost no more than their objects).
const KEPT_KEYS: usize = 4096;
const KEPT_KEY_BYTES: usize = 64;

/// Lists and dicts nested deeper than this decline (COCO's files nest 5 deep): each
/// level is a few hundred bytes of this thread's stack, and a thread may have 32 KiB.
const MAX_DEPTH: usize = 24;

/// Whether `data` holds text that serde_json reads differently from Python's `json`
/// (see the module's docs): 19 digits in a row, or the integer `-0`.
fn read_differently(data: &[u8]) -> bool {
    let mut run = 0usize;
    for (i, &b) in data.iter().enumerate() {
        if b.is_ascii_digit() {
            run += 1;
            if run >= LONG_DIGITS {
                return true;
            }
            let minus_zero = b == b'0' && i > 0 && data[i - 1] == b'-';
            let next = data.get(i + 1).copied().unwrap_or(b' ');
            if minus_zero && !(next.is_ascii_digit() || matches!(next, b'.' | b'e' | b'E')) {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

struct Builder<'py> {
    py: Python<'py>,
    keys: HashMap<Box<str>, Py<PyString>>,
    /// Lists and dicts open around the value being read.
    depth: usize,
    /// The Python error that stopped the parse (out of memory): raised, not declined.
    error: Option<PyErr>,
}

impl<'py> Builder<'py> {
    /// A new object from a C API call. Null (out of memory): its error is kept, to
    /// raise at the end, and the parse goes on making nothing (`None` for every value,
    /// see `stopped`), because a serde error would need memory to be made.
    fn made(&mut self, object: *mut pyo3::ffi::PyObject) -> Bound<'py, PyAny> {
        // SAFETY: `object` is a new reference or null with an exception set (the C API's
        // contract for every call that passes it here); the GIL is held.
        match unsafe { Bound::from_owned_ptr_or_err(self.py, object) } {
            Ok(made) => made,
            Err(error) => {
                self.error.get_or_insert(error);
                self.none()
            }
        }
    }

    /// Whether an object could not be made: then nothing more is.
    fn stopped(&self) -> bool {
        self.error.is_some()
    }

    fn none(&self) -> Bound<'py, PyAny> {
        self.py.None().into_bound(self.py)
    }

    fn text(&mut self, text: &str) -> Bound<'py, PyAny> {
        if self.stopped() {
            return self.none();
        }
        // A &str is at most isize::MAX bytes.
        let len = text.len() as pyo3::ffi::Py_ssize_t;
        // SAFETY: `text` is valid UTF-8 of `len` bytes.
        let object = unsafe { pyo3::ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), len) };
        self.made(object)
    }

    fn key(&mut self, text: &str) -> Bound<'py, PyAny> {
        if let Some(key) = self.keys.get(text) {
            return key.bind(self.py).clone().into_any();
        }
        let key = self.text(text);
        if !self.stopped() && self.keys.len() < KEPT_KEYS && text.len() <= KEPT_KEY_BYTES {
            // SAFETY: made by PyUnicode_FromStringAndSize.
            let shared = unsafe { key.clone().cast_into_unchecked::<PyString>() };
            self.keys.insert(text.into(), shared.unbind());
        }
        key
    }

    /// One more list or dict open: refused past MAX_DEPTH (the parse then declines).
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        self.depth += 1;
        Ok(())
    }
}

/// A JSON value as a Python object.
struct Value<'a, 'py>(&'a mut Builder<'py>);

impl<'de, 'py> DeserializeSeed<'de> for Value<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for Value<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0.py, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.0.stopped() {
            return Ok(self.0.none());
        }
        // SAFETY: the C API call of Builder::made's contract.
        Ok(self.0.made(unsafe { pyo3::ffi::PyLong_FromLongLong(v) }))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.0.stopped() {
            return Ok(self.0.none());
        }
        // SAFETY: as above.
        Ok(self
            .0
            .made(unsafe { pyo3::ffi::PyLong_FromUnsignedLongLong(v) }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if self.0.stopped() {
            return Ok(self.0.none());
        }
        // SAFETY: as above.
        Ok(self.0.made(unsafe { pyo3::ffi::PyFloat_FromDouble(v) }))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.py.None().into_bound(self.0.py))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        self.0.enter()?;
        let list = if self.0.stopped() {
            self.0.none()
        } else {
            // SAFETY: as above.
            self.0.made(unsafe { pyo3::ffi::PyList_New(0) })
        };
        while let Some(item) = seq.next_element_seed(Value(&mut *self.0))? {
            if !self.0.stopped() {
                // SAFETY: not stopped, so `list` was made by PyList_New.
                let appended = unsafe { list.cast_unchecked::<PyList>() }.append(item);
                if let Err(error) = appended {
                    self.0.error.get_or_insert(error);
                }
            }
        }
        self.0.depth -= 1;
        Ok(list)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.0.enter()?;
        let dict = if self.0.stopped() {
            self.0.none()
        } else {
            // SAFETY: as above.
            self.0.made(unsafe { pyo3::ffi::PyDict_New() })
        };
        while let Some(key) = map.next_key_seed(Key(&mut *self.0))? {
            let value = map.next_value_seed(Value(&mut *self.0))?;
            if !self.0.stopped() {
                // SAFETY: not stopped, so `dict` was made by PyDict_New.
                let set = unsafe { dict.cast_unchecked::<PyDict>() }.set_item(key, value);
                if let Err(error) = set {
                    self.0.error.get_or_insert(error);
                }
            }
        }
        self.0.depth -= 1;
        Ok(dict)
    }
}

/// An object's key, a shared `str` where it was seen before.
struct Key<'a, 'py>(&'a mut Builder<'py>);

impl<'de, 'py> DeserializeSeed<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.key(v))
    }
}

/// ``json.loads(data)`` as a 1-tuple, or ``None`` where this parser declines (see the
/// module's docs): the caller then parses with ``json.loads``.
#[pyfunction]
pub fn json_loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    if read_differently(data) {
        return Ok(None);
    }
    let mut builder = Builder {
        py,
        keys: HashMap::new(),
        depth: 0,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_slice(data);
    let parsed = Value(&mut builder)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match (parsed, builder.error) {
        // Out of memory: its MemoryError, whether the text went on to parse or not.
        (_, Some(error)) => Err(error),
        (Ok(value), None) => Ok(Some(PyTuple::new(py, [value])?)),
        (Err(_), None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::read_differently;

    #[test]
    fn digit_runs_and_minus_zero() {
        assert!(!read_differently(b"[123456789012345678, 1.5]"));
        assert!(read_differently(b"[1234567890123456789]"));
        assert!(!read_differently(b"[123456789.0123456789]"));
        assert!(read_differently(b"\"a\", 99999999999999999999"));
        assert!(
            read_differently(b"[-0]") && read_differently(b"-0") && read_differently(b"[1, -0 ]")
        );
        assert!(!read_differently(b"[-0.0, -0e1, -0E1, -01, 10, -10]"));
    }
}
