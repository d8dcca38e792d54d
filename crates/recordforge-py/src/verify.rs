//! `verify_file`: the framing walk, both CRCs and per-record feature statistics of an
//! uncompressed TFRecord file, from a memory map, without a Python object per record.

use std::collections::BTreeMap;
use std::fs::File;

use numpy::PyArray1;
use pyo3::prelude::*;
use recordforge_core::crc::crc32c_threads;
use recordforge_core::verify::{
    feature_stats_threads, walk, walk_checksummed, BYTES, FLOAT, INT64, MISSING, NO_KIND,
};
use recordforge_core::{Error, DEFAULT_MAX_RECORD_BYTES};

use crate::errors::to_py;

/// What ``verify_file`` found in one file. Framed records: ``offsets``, ``sizes``
/// (framed), ``crc_ok`` (data CRC); ``damage``: damaged regions ``(start, end, records
/// before, reason)``. Per record x feature (flat, row-major, records x names):
/// ``kinds`` (a code: ``MISSING``, ``NO_KIND`` or a key of ``KINDS``), ``counts`` (values)
/// and ``sums`` (of int64 values, where asked). ``errors``: the records that do not parse
/// as Examples ``(index, message)``; ``crc32c``: the file's CRC32C when asked for.
#[pyclass(module = "recordforge._core", frozen, get_all)]
pub struct VerifiedFile {
    offsets: Py<PyArray1<u64>>,
    sizes: Py<PyArray1<u64>>,
    crc_ok: Py<PyArray1<bool>>,
    damage: Vec<(u64, u64, u64, String)>,
    kinds: Py<PyArray1<i8>>,
    counts: Py<PyArray1<u64>>,
    sums: Py<PyArray1<i64>>,
    errors: Vec<(u64, String)>,
    crc32c: Option<u32>,
}

#[pymethods]
impl VerifiedFile {
    /// The code of a feature a record lacks.
    #[classattr]
    #[allow(non_snake_case)]
    fn MISSING() -> i8 {
        MISSING
    }

    /// The code of a feature without a kind (no value list set).
    #[classattr]
    #[allow(non_snake_case)]
    fn NO_KIND() -> i8 {
        NO_KIND
    }

    /// The codes of the value kinds, with their names (a ``FeatureSpec``'s ``kind``).
    #[classattr]
    #[allow(non_snake_case)]
    fn KINDS() -> BTreeMap<i8, &'static str> {
        BTreeMap::from([(BYTES, "bytes"), (FLOAT, "float32"), (INT64, "int64")])
    }
}

/// Memory-maps `path` (an empty file maps to nothing) and runs `f` on its bytes; a file
/// cut short meanwhile (see `recordforge_core::Mapped`) is an error at its new end.
fn with_map<T>(path: &std::path::Path, f: impl FnOnce(&[u8]) -> T) -> Result<T, Error> {
    let file = File::open(path)?;
    let map = if file.metadata()?.len() == 0 {
        None
    } else {
        Some(recordforge_core::Mapped::map(file)?)
    };
    let result = f(map.as_deref().unwrap_or(&[]));
    if let Some(map) = &map {
        if let Some(now) = map
            .len_now()
            .filter(|&now| map.cut() || now < map.len() as u64)
        {
            return Err(map
                .first_cut()
                .unwrap_or(recordforge_core::framing::cut_at(now, now)));
        }
    }
    Ok(result)
}

/// CRC32C of a whole file (the shard checksum ``crc32c:<8 hex digits>`` in
/// ``dataset.json``), computed on ``threads`` threads from a memory map, GIL released.
#[pyfunction]
#[pyo3(signature = (path, threads=2))]
pub fn file_crc32c(py: Python<'_>, path: std::path::PathBuf, threads: usize) -> PyResult<u32> {
    let name = path.display().to_string();
    py.detach(|| with_map(&path, |data| crc32c_threads(data, threads)))
        .map_err(|e| to_py(py, e, &name))
}

/// Walks ``path`` (uncompressed), checking length and data CRCs on ``threads`` threads
/// and resynchronising after damage, and parses every intact record as a
/// ``tf.train.Example``, collecting for each of ``names`` its kind (a code of
/// ``VerifiedFile``), its number of values and (where ``sums[i]``) the sum of its int64
/// values, in a ``VerifiedFile``; rows of records failing their data CRC are all
/// missing. With ``checksum``, the file's CRC32C is computed in the same pass. A record
/// over ``max_record_bytes`` is damage.
#[pyfunction]
#[pyo3(signature = (
    path, names, sums, threads=2, checksum=false, *, max_record_bytes=DEFAULT_MAX_RECORD_BYTES
))]
#[allow(clippy::too_many_arguments)]
pub fn verify_file(
    py: Python<'_>,
    path: std::path::PathBuf,
    names: Vec<String>,
    sums: Vec<bool>,
    threads: usize,
    checksum: bool,
    max_record_bytes: u64,
) -> PyResult<VerifiedFile> {
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
    let (w, stats, crc) = result.map_err(|e| to_py(py, e, &name))?;
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
    Ok(VerifiedFile {
        offsets: PyArray1::from_vec(py, w.offsets).unbind(),
        sizes: PyArray1::from_vec(py, w.sizes).unbind(),
        crc_ok: PyArray1::from_vec(py, w.crc_ok).unbind(),
        damage,
        kinds: PyArray1::from_vec(py, stats.kinds).unbind(),
        counts: PyArray1::from_vec(py, stats.counts).unbind(),
        sums: PyArray1::from_vec(py, stats.sums).unbind(),
        errors,
        crc32c: crc,
    })
}
