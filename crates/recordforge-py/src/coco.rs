//! `coco_polygons`: the check and conversion of a COCO annotation's polygons
//! (`sources/_coco_index._polygons`) for the common case, most of a COCO file's numbers.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple};

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

/// A plain `int` that fits in 64 bits (not a `bool`, not a subclass).
fn int64(value: Option<Bound<'_, PyAny>>) -> Option<i64> {
    let value = value?;
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    value.extract::<i64>().ok()
}

/// `float(value)` of a plain `float` or `int` within float32's finite range.
fn finite<'py>(py: Python<'py>, value: Option<Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
    let value = value?;
    if let Ok(x) = value.cast_exact::<PyFloat>() {
        return (x.value().abs() <= FLOAT32_MAX).then_some(value); // false for NaN
    }
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    if let Ok(n) = value.extract::<i64>() {
        return Some(PyFloat::new(py, n as f64).into_any());
    }
    // Beyond 64 bits (rare): Python's exact comparison, then its float(int).
    let within = value.le(FLOAT32_MAX).ok()? && value.ge(-FLOAT32_MAX).ok()?;
    let x: f64 = value.extract().ok().filter(|_| within)?;
    Some(PyFloat::new(py, x).into_any())
}

/// ``_coco_fast.plain_annotation`` (its reference, in Python) in one call:
/// ``(id, image_id, category_id, bbox, area, iscrowd, polygons)`` of an annotation
/// whose every field is plain and valid, as the full checks would give them; None
/// otherwise (the full checks then run and name the bad field).
#[pyfunction]
pub fn coco_plain_annotation<'py>(
    py: Python<'py>,
    entry: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Ok(entry) = entry.cast_exact::<PyDict>() else {
        return Ok(None);
    };
    let ids = ["id", "image_id", "category_id"].map(|k| int64(entry.get_item(k).ok()?));
    let [Some(ann_id), Some(image_id), Some(category_id)] = ids else {
        return Ok(None);
    };
    let Some(bbox) = entry.get_item("bbox")? else {
        return Ok(None);
    };
    let Ok(bbox) = bbox.cast_exact::<PyList>() else {
        return Ok(None);
    };
    if bbox.len() != 4 {
        return Ok(None);
    }
    let mut box_values = Vec::with_capacity(4);
    for value in bbox.iter() {
        let Some(x) = finite(py, Some(value)) else {
            return Ok(None);
        };
        box_values.push(x);
    }
    let area = match entry.get_item("area")? {
        None => Some(PyFloat::new(py, 0.0).into_any()),
        some => finite(py, some),
    };
    let Some(area) = area else {
        return Ok(None);
    };
    let iscrowd = match entry.get_item("iscrowd")? {
        None => 0,
        some => match int64(some) {
            Some(n @ (0 | 1)) => n,
            _ => return Ok(None),
        },
    };
    let polygons = match entry.get_item("segmentation")? {
        None => Some(PyTuple::empty(py)),
        Some(s) if s.is_none() => Some(PyTuple::empty(py)),
        Some(s) if s.is_exact_instance_of::<PyList>() => coco_polygons(py, &s)?,
        Some(_) => None, // an RLE (or a bad value): the full checks
    };
    let Some(polygons) = polygons else {
        return Ok(None);
    };
    let parts: [Bound<'py, PyAny>; 7] = [
        ann_id.into_pyobject(py)?.into_any(),
        image_id.into_pyobject(py)?.into_any(),
        category_id.into_pyobject(py)?.into_any(),
        PyTuple::new(py, box_values)?.into_any(),
        area,
        iscrowd.into_pyobject(py)?.into_any(),
        polygons.into_any(),
    ];
    PyTuple::new(py, parts).map(Some)
}
