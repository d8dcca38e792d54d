//! `json_loads`: standard JSON into Python objects, for the big files that sources parse
//! whole (COCO's annotation files: hundreds of MB, most of them polygon numbers). It
//! gives what `json.loads` gives, value for value: dicts (the last of duplicate keys
//! wins), lists, str, int, float (correctly rounded: serde_json's `float_roundtrip`),
//! True / False / None. Where it cannot promise that, it declines (returns `None`) and
//! the caller parses with `json.loads`, which then gives its own result or error:
//!
//! - any input serde_json refuses: not UTF-8, a byte-order mark, `NaN` / `Infinity`
//!   (Python accepts them), lone surrogates in `\u` escapes (Python accepts them), a
//!   number beyond `f64`, nesting deeper than 128, trailing data, any syntax error;
//! - a run of 19 or more digits anywhere: an integer that long may not fit in `i64` /
//!   `u64`, which serde_json would turn into a float (Python keeps an exact int);
//! - `-0` not followed by a digit, `.`, `e` or `E` (the integer minus zero): Python
//!   gives the int 0, serde_json the float -0.0.
//!
//! Both checks are a scan of the raw bytes, strings included: a string that holds such
//! text only costs the fast path.

use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Digits in a row from which an integer might not fit in 64 bits (i64 holds every
/// 18-digit integer).
const LONG_DIGITS: usize = 19;

/// Distinct object keys kept as one shared `str` each (as `json`'s own memo does);
/// past it, a key is a new `str` each time (a hostile file's millions of distinct
/// keys cost no more than their objects).
const KEPT_KEYS: usize = 4096;

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
}

impl<'py> Builder<'py> {
    fn key(&mut self, text: &str) -> Bound<'py, PyString> {
        if let Some(key) = self.keys.get(text) {
            return key.bind(self.py).clone();
        }
        let key = PyString::new(self.py, text);
        if self.keys.len() < KEPT_KEYS {
            self.keys.insert(text.into(), key.clone().unbind());
        }
        key
    }
}

fn failed<E: de::Error>(error: PyErr) -> E {
    E::custom(error)
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
        Ok(PyInt::new(self.0.py, v).into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PyInt::new(self.0.py, v).into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0.py, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0.py, v).into_any())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.py.None().into_bound(self.0.py))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0.py);
        while let Some(item) = seq.next_element_seed(Value(&mut *self.0))? {
            list.append(item).map_err(failed)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0.py);
        while let Some(key) = map.next_key_seed(Key(&mut *self.0))? {
            let value = map.next_value_seed(Value(&mut *self.0))?;
            dict.set_item(key, value).map_err(failed)?;
        }
        Ok(dict.into_any())
    }
}

/// An object's key, a shared `str` where it was seen before.
struct Key<'a, 'py>(&'a mut Builder<'py>);

impl<'de, 'py> DeserializeSeed<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.key(v))
    }
}

/// Python's cyclic garbage collector off while it lives (as it was before, after): a
/// parse makes millions of lists and dicts, none of them garbage, and each few hundred
/// made would start a collection that walks them all again (a third of the time).
struct NoCollections(bool);

impl NoCollections {
    fn new(_py: Python<'_>) -> Self {
        // SAFETY: the GIL is held (the token); PyGC_Disable returns the previous state.
        NoCollections(unsafe { pyo3::ffi::PyGC_Disable() } != 0)
    }
}

impl Drop for NoCollections {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: dropped where it was made, under the GIL (json_loads never detaches).
            unsafe { pyo3::ffi::PyGC_Enable() };
        }
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
    };
    let _paused = NoCollections::new(py);
    let mut de = serde_json::Deserializer::from_slice(data);
    let parsed = Value(&mut builder)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(Some(PyTuple::new(py, [value])?)),
        Err(_) => Ok(None),
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
