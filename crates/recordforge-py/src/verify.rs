//! `verify_file`: the framing walk, both CRCs and per-record feature statistics of an
//! uncompressed TFRecord file, from a memory map, without a Python object per record.

use std::fs::File;

use memmap2::Mmap;
use numpy::PyArray1;
use pyo3::prelude::*;
use recordforge_core::verify::{feature_stats_threads, walk};
use recordforge_core::Error;

use crate::errors::to_py;

/// Framed records (offsets, sizes, data CRC ok), damaged regions (start, end, records
/// before, reason), and per record x feature: kind code, value count, int64 sum; and
/// the records that do not parse as Examples (index, message).
type Verified<'py> = (
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<bool>>,
    Vec<(u64, u64, u64, String)>,
    Bound<'py, PyArray1<i8>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<i64>>,
    Vec<(u64, String)>,
);

/// Walks ``path`` (uncompressed), checking length and data CRCs on ``threads`` threads
/// and resynchronising after damage, and parses every intact record as a
/// ``tf.train.Example``, collecting for each of ``names`` its kind (-1 missing, 0 no
/// kind, 1 bytes, 2 float, 3 int64), its number of values and (where ``sums[i]``) the
/// sum of its int64 values. Statistics are flat, row-major, records x names; rows of
/// records failing their data CRC are all missing.
#[pyfunction]
#[pyo3(signature = (path, names, sums, threads=2))]
pub fn verify_file<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    names: Vec<String>,
    sums: Vec<bool>,
    threads: usize,
) -> PyResult<Verified<'py>> {
    let name = path.display().to_string();
    let result = py.detach(|| -> std::io::Result<_> {
        let file = File::open(&path)?;
        let map = if file.metadata()?.len() == 0 {
            None
        } else {
            // SAFETY: read-only map; a file changed underneath is caught by the CRCs.
            Some(unsafe { Mmap::map(&file)? })
        };
        let data: &[u8] = map.as_deref().unwrap_or(&[]);
        let w = walk(data, true, threads);
        let records: Vec<&[u8]> = w
            .offsets
            .iter()
            .zip(&w.sizes)
            .zip(&w.crc_ok)
            .map(|((&o, &s), &ok)| {
                let (o, s) = (o as usize, s as usize);
                if ok {
                    &data[o + 12..o + s - 4]
                } else {
                    &data[0..0]
                }
            })
            .collect();
        let keys: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let stats = feature_stats_threads(&records, &keys, &sums, threads);
        Ok((w, stats))
    });
    let (w, stats) = result.map_err(|e| to_py(py, Error::Io(e), &name))?;
    let damage = w
        .damage
        .into_iter()
        .map(|d| (d.start as u64, d.end as u64, d.record as u64, d.reason))
        .collect();
    let errors = stats
        .errors
        .into_iter()
        .map(|(i, e)| (i as u64, e))
        .collect();
    Ok((
        PyArray1::from_vec(py, w.offsets),
        PyArray1::from_vec(py, w.sizes),
        PyArray1::from_vec(py, w.crc_ok),
        damage,
        PyArray1::from_vec(py, stats.kinds),
        PyArray1::from_vec(py, stats.counts),
        PyArray1::from_vec(py, stats.sums),
        errors,
    ))
}
