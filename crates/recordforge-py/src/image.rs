//! `resize_bilinear`: TensorFlow's bilinear resize of a `uint8` image, GIL released.

use numpy::{PyReadonlyArray3, PyReadwriteArray3, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use recordforge_core::resize::{resize_bilinear as resize, Pixel};

fn run<P: Pixel + numpy::Element>(
    py: Python<'_>,
    image: &PyReadonlyArray3<'_, u8>,
    out: &mut PyReadwriteArray3<'_, P>,
) -> PyResult<()> {
    let shape = image.shape();
    let (height, width, channels) = (shape[0], shape[1], shape[2]);
    let out_shape = out.shape();
    let (out_height, out_width) = (out_shape[0], out_shape[1]);
    if out_shape[2] != channels || [height, width, channels, out_height, out_width].contains(&0) {
        return Err(PyValueError::new_err(format!(
            "cannot resize an image of shape {shape:?} into one of shape {out_shape:?}"
        )));
    }
    let src = image.as_slice()?;
    let dst = out.as_slice_mut()?;
    py.detach(|| resize(src, (height, width, channels), dst, (out_height, out_width)));
    Ok(())
}

/// Resizes ``image`` (``uint8``, height x width x channels, C-contiguous) into ``out``
/// (C-contiguous, ``uint8`` or ``float32``, new height x new width x channels) with
/// ``tf.image.resize(method="bilinear")``'s arithmetic: ``float32`` output equals
/// TensorFlow's bit for bit, ``uint8`` is that rounded to the nearest level.
#[pyfunction]
pub fn resize_bilinear(
    py: Python<'_>,
    image: PyReadonlyArray3<'_, u8>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Ok(mut out) = out.extract::<PyReadwriteArray3<'_, u8>>() {
        return run(py, &image, &mut out);
    }
    if let Ok(mut out) = out.extract::<PyReadwriteArray3<'_, f32>>() {
        return run(py, &image, &mut out);
    }
    Err(PyValueError::new_err(
        "out must be a writable 3-D uint8 or float32 array",
    ))
}
