//! `verify_file`: the framing walk, both CRCs and per-record feature statistics of an
//! uncompressed TFRecord file, from a memory map, without a Python object per record.

use std::fs::File;

use memmap2::Mmap;
use numpy::PyArray1;
use pyo3::prelude::*;
use recordforge_core::crc::crc32c_threads;
use recordforge_core::verify::{feature_stats_threads, walk, walk_checksummed};
use recordforge_core::{Error, DEFAULT_MAX_RECORD_BYTES};

use crate::errors::to_py;

/// Framed records (offsets, sizes, data CRC ok), damaged regions (start, end, records
/// before, reason), and per record x feature: kind code, value count, int64 sum; the
/// records that do not parse as Examples (index, message); and (when asked) the file's
/// CRC32C.
type Verified<'py> = (
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<bool>>,
    Vec<(u64, u64, u64, String)>,
    Bound<'py, PyArray1<i8>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<i64>>,
    Vec<(u64, String)>,
    Option<u32>,
);

/// Memory-maps `path` (an empty file maps to nothing) and runs `f` on its bytes.
fn with_map<T>(path: &std::path::Path, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    let file = File::open(path)?;
    let map = if file.metadata()?.len() == 0 {
        None
    } else {
        // SAFETY: read-only map; a file changed underneath is caught by the CRCs.
        Some(unsafe { Mmap::map(&file)? })
    };
    Ok(f(map.as_deref().unwrap_or(&[])))
}

/// CRC32C of a whole file (the shard checksum ``crc32c:<8 hex digits>`` in
/// ``dataset.json``), computed on ``threads`` threads from a memory map, GIL released.
#[pyfunction]
#[pyo3(signature = (path, threads=2))]
pub fn file_crc32c(py: Python<'_>, path: std::path::PathBuf, threads: usize) -> PyResult<u32> {
    let name = path.display().to_string();
    py.detach(|| with_map(&path, |data| crc32c_threads(data, threads)))
        .map_err(|e| to_py(py, Error::Io(e), &name))
}

/// Walks ``path`` (uncompressed), checking length and data CRCs on ``threads`` threads
/// and resynchronising after damage, and parses every intact record as a
/// ``tf.train.Example``, collecting for each of ``names`` its kind (-1 missing, 0 no
/// kind, 1 bytes, 2 float, 3 int64), its number of values and (where ``sums[i]``) the
/// sum of its int64 values. Statistics are flat, row-major, records x names; rows of
/// records failing their data CRC are all missing. With ``checksum``, the file's CRC32C
/// is computed in the same pass. A record over ``max_record_bytes`` is damage.
#[pyfunction]
#[pyo3(signature = (
    path, names, sums, threads=2, checksum=false, *, max_record_bytes=DEFAULT_MAX_RECORD_BYTES
))]
#[allow(clippy::too_many_arguments)]
pub fn verify_file<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    names: Vec<String>,
    sums: Vec<bool>,
    threads: usize,
    checksum: bool,
    max_record_bytes: u64,
) -> PyResult<Verified<'py>> {
    let name = path.display().to_string();
    let result = py.detach(|| {
        with_map(&path, |data| {
            let (w, crc) = if checksum {
                let (w, crc) = walk_checksummed(data, threads, max_record_bytes);
                (w, Some(crc))
            } else {
                (walk(data, true, threads, max_record_bytes), None)
            };
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
            (w, stats, crc)
        })
    });
    let (w, stats, crc) = result.map_err(|e| to_py(py, Error::Io(e), &name))?;
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
        crc,
    ))
}
