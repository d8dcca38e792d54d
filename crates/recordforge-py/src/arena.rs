//! `Arena`: the reused buffers behind `take(copy=False)`. Records are copied into one
//! from their files' maps, their CRCs checked on the copy while it is in cache, and
//! bytes values are handed out as read-only memoryviews of it: a big take touches no
//! fresh memory.

use std::ops::Range;
use std::sync::Mutex;

use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyMemoryView};
use recordforge_core::batch::{decode_batch_spans_threaded, Wanted};
use recordforge_core::framing::{locate_header, Frame};
use recordforge_core::reader::ReadError;
use recordforge_core::Error;

use crate::decode::columns_to_py_views;
use crate::reader::read_error;

/// Buffers up to this size are kept for the next calls; a bigger one is freed with its
/// last view (one huge `take` does not pin its memory for the dataset's life).
const KEEP: usize = 256 << 20;

/// Buffers kept: two, so that a loop that keeps one call's result while making the next
/// (`batch = ds.take(...)`) alternates between them.
const KEPT: usize = 2;

/// Buffers reused across calls by ``take_records(..., arena=)``. Each call gets one no
/// view of which is alive: a kept buffer that nothing but the arena refers to (every
/// memoryview of it holds a reference), a new one otherwise. So a view stays valid, and
/// unchanged, for as long as it is kept.
#[pyclass(module = "recordforge._core", frozen)]
pub struct Arena {
    kept: Mutex<Vec<Py<PyArray1<u8>>>>,
}

#[pymethods]
impl Arena {
    #[new]
    fn new() -> Self {
        Arena {
            kept: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of the buffers kept for the next calls.
    #[getter]
    fn kept_bytes(&self, py: Python<'_>) -> usize {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().map(|a| a.bind(py).len()).sum()
    }
}

impl Arena {
    /// A buffer of at least `len` bytes that no view refers to, and a read-only
    /// memoryview of all of it (its slices are the values handed out).
    ///
    /// The lock is held only to pick or place a buffer: nothing is allocated or freed
    /// under it (a gc pass or a weakref callback run then could take from this arena, or
    /// wait for a thread that does).
    pub(crate) fn buffer<'py>(
        &self,
        py: Python<'py>,
        len: usize,
    ) -> PyResult<(Bound<'py, PyArray1<u8>>, Bound<'py, PyMemoryView>)> {
        // SAFETY (Py_REFCNT): `a` is a live object and the GIL is held.
        let free = |a: &Py<PyArray1<u8>>| unsafe { pyo3::ffi::Py_REFCNT(a.as_ptr()) } == 1;
        let reused = {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            // Least recently used first; taken (its count raised) under the lock, so that
            // no other call takes it too.
            kept.iter()
                .position(|a| free(a) && a.bind(py).len() >= len.max(1))
                .map(|i| {
                    let a = kept.remove(i);
                    kept.push(a.clone_ref(py));
                    a
                })
        };
        if let Some(a) = reused {
            let view = PyMemoryView::from(a.bind(py).as_any())?;
            return Ok((a.into_bound(py), view));
        }
        let array = new_buffer(py, len)?;
        let size = array.len();
        let dropped = if size <= KEEP {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            // In place of a free buffer (too small), else of the least recently used one
            // (its views keep it alive: it is only no longer reused); freed below.
            let out = match kept.iter().position(free) {
                Some(i) => Some(kept.remove(i)),
                None if kept.len() == KEPT => Some(kept.remove(0)),
                None => None,
            };
            kept.push(array.clone().unbind());
            out
        } else {
            None
        };
        drop(dropped); // outside the lock
        let view = PyMemoryView::from(array.as_any())?;
        Ok((array, view))
    }
}

/// A new read-only buffer for `len` bytes, with room for a somewhat bigger next call (a
/// quarter more) when memory allows; never empty (a view needs a buffer). Allocated by
/// ``numpy.empty``: a failed allocation is a ``MemoryError``.
fn new_buffer(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyArray1<u8>>> {
    let empty = py.import("numpy")?.getattr("empty")?;
    let roomy = len.saturating_add(len / 4).max(1);
    let array = match empty.call1((roomy, "uint8")) {
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) && roomy > len => {
            empty.call1((len.max(1), "uint8"))?
        }
        other => other?,
    };
    let array = array.cast_into::<PyArray1<u8>>()?;
    array.getattr("flags")?.setattr("writeable", false)?;
    Ok(array)
}

/// A mapped file and its record size limit.
pub(crate) type Source<'a> = (&'a [u8], u64);

/// One `take_records(..., arena=)` call: the records at `offsets[k]` of
/// `sources[which[k]]`.
pub(crate) struct TakeInto<'a> {
    pub sources: &'a [Source<'a>],
    pub which: &'a [i64],
    pub offsets: &'a [u64],
    pub wanted: &'a [Wanted<'a>],
    pub verify: bool,
    pub threads: usize,
}

/// The arena's buffer, written with the GIL let go.
struct Base(*mut u8);
// SAFETY: the pointer is only turned into a slice of a buffer no one else sees (the
// closure that does holds it by reference while the GIL is let go).
unsafe impl Send for Base {}
unsafe impl Sync for Base {}

impl Base {
    fn ptr(&self) -> *mut u8 {
        self.0
    }
}

impl TakeInto<'_> {
    pub(crate) fn run<'py>(
        &self,
        py: Python<'py>,
        arena: &Arena,
        names: &[String],
    ) -> PyResult<Bound<'py, PyList>> {
        let payloads = py
            .detach(|| self.payloads())
            .map_err(|e| read_error(py, e, names))?;
        // Record k is at buffer[starts[k]..], followed by its 4-byte CRC.
        let mut starts = Vec::with_capacity(payloads.len() + 1);
        starts.push(0usize);
        for p in &payloads {
            starts.push(starts[starts.len() - 1] + p.len() + 4);
        }
        let total = starts[starts.len() - 1];
        let (array, view) = arena.buffer(py, total)?;
        let base = Base(array.data());
        let columns = py
            .detach(|| {
                // SAFETY: `Arena::buffer` gave a buffer of at least `total` bytes that no
                // view refers to; it stays alive (`array`) until this call returns.
                let dst = unsafe { std::slice::from_raw_parts_mut(base.ptr(), total) };
                self.copy(&payloads, &starts, dst)?;
                let records: Vec<&[u8]> = payloads
                    .iter()
                    .zip(&starts)
                    .map(|(p, &start)| &dst[start..start + p.len()])
                    .collect();
                decode_batch_spans_threaded(&records, self.wanted, self.threads, 1024).map_err(
                    |e| ReadError {
                        file: self.which[e.record] as usize,
                        record: Some(self.offsets[e.record]),
                        index: None,
                        error: e.error,
                    },
                )
            })
            .map_err(|e| read_error(py, e, names))?;
        columns_to_py_views(py, columns, &view, &starts)
    }

    fn failed(&self, k: usize, error: Error) -> ReadError {
        ReadError {
            file: self.which[k] as usize,
            record: None,
            index: None,
            error,
        }
    }

    /// Each record's payload range in its file, from its header (length CRC checked),
    /// in `offsets` order. A record whose header is bad is the error unless a record
    /// asked before it is damaged too (its payload CRC, checked here then): the error is
    /// always the first damaged record in the order asked, as with `bytes` values.
    fn payloads(&self) -> Result<Vec<Range<usize>>, ReadError> {
        let mut out = Vec::with_capacity(self.offsets.len());
        for (k, &offset) in self.offsets.iter().enumerate() {
            match self.header(k, offset) {
                Ok(payload) => out.push(payload),
                Err(error) => {
                    let mut scratch = Vec::new();
                    for (j, payload) in out.iter().enumerate() {
                        scratch.resize(payload.len() + 4, 0);
                        self.copy_one(j, payload, &mut scratch)
                            .map_err(|e| self.failed(j, e))?;
                    }
                    return Err(self.failed(k, error));
                }
            }
        }
        Ok(out)
    }

    /// Record k's payload range, from its header at `offset`.
    fn header(&self, k: usize, offset: u64) -> Result<Range<usize>, Error> {
        let (data, max) = self.sources[self.which[k] as usize];
        let pos = usize::try_from(offset).unwrap_or(usize::MAX);
        if pos >= data.len() {
            let why = format!("offset {offset} is past the end ({} bytes)", data.len());
            return Err(Error::InvalidArgument(why));
        }
        Ok(locate_header(data, pos, max)?.expect("pos is before the end"))
    }

    /// Copies record k's payload and CRC to `out` and checks the CRC on the copy, a
    /// chunk at a time while it is in cache.
    fn copy_one(&self, k: usize, payload: &Range<usize>, out: &mut [u8]) -> Result<(), Error> {
        let (data, _) = self.sources[self.which[k] as usize];
        let (bytes, crc) = out.split_at_mut(payload.len());
        crc.copy_from_slice(&data[payload.end..payload.end + 4]);
        let frame = Frame {
            offset: self.offsets[k],
            payload: payload.clone(),
            data_crc: u32::from_le_bytes((&*crc).try_into().expect("4 bytes")),
        };
        frame.copy_checked(&data[payload.clone()], bytes, self.verify)
    }

    /// Copies every record to `dst[starts[k]..starts[k + 1]]`, on the calling thread:
    /// two threads copying a 9.6 MB take of 150 KB records took 1.35x the CPU for 0.83x
    /// the wall time here (2 cores), and `pread` from the file in place of the copy from
    /// its map 1.4x the time once the map's pages are in (and no less on their first
    /// touch). The first damaged record (in `offsets` order) is the error.
    fn copy(
        &self,
        payloads: &[Range<usize>],
        starts: &[usize],
        dst: &mut [u8],
    ) -> Result<(), ReadError> {
        payloads.iter().enumerate().try_for_each(|(k, payload)| {
            self.copy_one(k, payload, &mut dst[starts[k]..starts[k + 1]])
                .map_err(|e| self.failed(k, e))
        })
    }
}
