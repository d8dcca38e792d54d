//! `coco_polygons`: the check and conversion of a COCO annotation's polygons
//! (`sources/_coco_index._polygons`) for the common case, most of a COCO file's numbers.

use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyList, PyTuple};

/// float32's largest finite value: a coordinate beyond it is refused (it would not
/// survive the float32 feature it is written to).
const FLOAT32_MAX: f64 = f32::MAX as f64;

/// One polygon's values as Python floats, or None unless every value is a plain
/// `float` within float32's finite range or a plain `int` that fits in 64 bits, and
/// there is an even count of them.
fn polygon<'py>(
    py: Python<'py>,
    poly: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Ok(poly) = poly.cast_exact::<PyList>() else {
        return Ok(None);
    };
    if poly.len() % 2 != 0 {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(poly.len());
    for value in poly.iter() {
        if let Ok(x) = value.cast_exact::<PyFloat>() {
            let finite = x.value().abs() <= FLOAT32_MAX; // false for NaN
            if !finite {
                return Ok(None); // NaN, infinities, beyond float32
            }
            values.push(value); // float(x) is x itself
        } else if value.is_exact_instance_of::<PyInt>() {
            let Ok(n) = value.extract::<i64>() else {
                return Ok(None);
            };
            // Round to nearest, ties to even: Python's float(int).
            values.push(PyFloat::new(py, n as f64).into_any());
        } else {
            return Ok(None);
        }
    }
    PyTuple::new(py, values).map(Some)
}

/// ``tuple(tuple(map(float, poly)) for poly in segmentation)`` where every polygon is
/// a list of an even count of plain finite numbers (float32's range; ints of 64 bits),
/// else ``None``: the caller then checks them one by one and names the bad one.
#[pyfunction]
pub fn coco_polygons<'py>(
    py: Python<'py>,
    segmentation: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Ok(segmentation) = segmentation.cast_exact::<PyList>() else {
        return Ok(None);
    };
    let mut polygons = Vec::with_capacity(segmentation.len());
    for poly in segmentation.iter() {
        match polygon(py, &poly)? {
            Some(values) => polygons.push(values),
            None => return Ok(None),
        }
    }
    PyTuple::new(py, polygons).map(Some)
}
