//! `TFRecordWriter` and `read_records` over paths and Python file objects.

use std::ffi::CString;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Once, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use numpy::PyArray1;
use pyo3::exceptions::{
    PyOSError, PyResourceWarning, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use recordforge_core::crc::Crc32c;
use recordforge_core::framing::{frame_record, frame_starts, stream_records, FileRecords, Frame};
use recordforge_core::scan::{scan_file, scan_stream};
use recordforge_core::{Compression, Error, RecordWriter, DEFAULT_MAX_RECORD_BYTES};
use sha2::{Digest as _, Sha256};

use crate::columns::RecordBatch;
use crate::convert::with_bytes;
use crate::errors::to_py;
use crate::pyfile::{take_py_error, PyReader, PyWriter};

/// A path (`str` / `os.PathLike`) or a file object.
enum Target {
    Path(PathBuf, String),
    File(Py<PyAny>, String),
}

fn target(obj: &Bound<'_, PyAny>, needs: &str) -> PyResult<Target> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let path: PathBuf = obj.extract()?;
        let shown = path.display().to_string();
        return Ok(Target::Path(path, shown));
    }
    if obj.hasattr(needs)? {
        let shown = match obj.getattr("name").and_then(|n| n.str()) {
            Ok(name) => name.to_string(),
            Err(_) => obj.repr()?.to_string(),
        };
        return Ok(Target::File(obj.clone().unbind(), shown));
    }
    Err(PyValueError::new_err(format!(
        "expected a path or a file object with .{needs}(), not {}",
        obj.get_type().name()?
    )))
}

fn parse_compression(name: Option<&str>) -> PyResult<Compression> {
    Compression::parse(name.unwrap_or("")).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// For readers: "auto" (detect) -> `None`.
fn parse_read_compression(name: Option<&str>) -> PyResult<Option<Compression>> {
    match name {
        Some(c) if c.eq_ignore_ascii_case("auto") => Ok(None),
        other => parse_compression(other).map(Some),
    }
}

/// Maps an error, bringing back a Python exception raised by a file object.
fn map_err(py: Python<'_>, e: Error, path: &str) -> PyErr {
    match e {
        Error::Io(io) => match take_py_error(io) {
            Ok(py_err) => py_err,
            Err(io) => to_py(py, Error::Io(io), path),
        },
        other => to_py(py, other, path),
    }
}

type Sink = RecordWriter<Box<dyn Write + Send>>;

const IO_BUFFER: usize = 1 << 20;

/// Where a [`Hashing`] writer's bytes go: a CRC32C computed inline (on chunks of about
/// `IO_BUFFER` bytes, still in cache after framing: ~70 GB/s), or a SHA-256 computed on
/// its own thread (~1 GB/s per core, so it runs beside framing and writing).
enum HashSink {
    Crc32c(Arc<Mutex<Crc32c>>),
    Sha256(SyncSender<Vec<u8>>),
}

/// Passes writes through to `inner` and hashes every byte written.
struct Hashing<W: Write> {
    inner: W,
    sink: HashSink,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // At most one buffer's worth per call (`write_all` loops), so that a large write
        // is hashed while its later parts are still being written.
        let buf = &buf[..buf.len().min(IO_BUFFER)];
        let n = self.inner.write(buf)?;
        match &self.sink {
            HashSink::Crc32c(crc) => crc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(&buf[..n]),
            HashSink::Sha256(chunks) => chunks
                .send(buf[..n].to_vec())
                .map_err(|_| std::io::Error::other("the SHA-256 thread stopped"))?,
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Passes writes through to `inner`, at most `IO_BUFFER` bytes a call (`write_all` loops):
/// a `BufWriter` hands a write larger than its buffer straight to the file, and the page
/// cache takes folios as large as a write; from 2 MB on, on a VM whose free memory goes
/// back to its host, such folios are memory the host backs anew (390 MB in 8.7 MB writes:
/// 0.66-0.80 s of system time, in 1 MB writes 0.07 s).
struct Capped<W: Write>(W);

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(&buf[..buf.len().min(IO_BUFFER)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A file checksum being computed; [`Digest::finish`] gives it as `"<algorithm>:<hex>"`
/// once the writer is done.
enum Digest {
    Crc32c(Arc<Mutex<Crc32c>>),
    /// An uncompressed file's CRC32C: the record stream's, kept by its `RecordWriter`
    /// from each record's own CRC ([`RecordWriter::with_stream_crc`]), its data not
    /// read again.
    Stream,
    /// The SHA-256 thread; it ends when its `Hashing` writer is dropped.
    Sha256(JoinHandle<[u8; 32]>),
}

impl Digest {
    /// The checksum, once the writer is done; `stream` is its `RecordWriter`'s
    /// [`RecordWriter::stream_crc`].
    fn finish(self, stream: Option<u32>) -> PyResult<String> {
        Ok(match self {
            Digest::Stream => format!(
                "crc32c:{:08x}",
                stream.expect("a writer made for Digest::Stream keeps the stream's CRC")
            ),
            Digest::Crc32c(crc) => format!(
                "crc32c:{:08x}",
                crc.lock().unwrap_or_else(|p| p.into_inner()).value()
            ),
            Digest::Sha256(thread) => {
                let hash = thread
                    .join()
                    .map_err(|_| PyValueError::new_err("the SHA-256 thread panicked"))?;
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        })
    }
}

/// Chunks (of about `IO_BUFFER` bytes) in flight to the SHA-256 thread.
const DIGEST_QUEUE: usize = 16;

/// The file checksums a writer computes (`checksum=`).
const CHECKSUMS: &str = "'crc32c' or 'sha256'";

fn parse_checksum(name: Option<&str>) -> PyResult<Option<bool>> {
    match name {
        None => Ok(None),
        Some(n) if n.eq_ignore_ascii_case("crc32c") => Ok(Some(false)),
        Some(n) if n.eq_ignore_ascii_case("sha256") => Ok(Some(true)),
        Some(n) => Err(PyValueError::new_err(format!(
            "checksum must be {CHECKSUMS} or None, not {n:?}"
        ))),
    }
}

/// `inner`, buffered, and (with a checksum; `Some(true)` for SHA-256) hashed below the
/// buffer, so the digest gets large writes. With `stream_crc` (an uncompressed file
/// written by Rust alone) a CRC32C is not hashed here: the `RecordWriter` keeps it from
/// the records' own CRCs ([`Digest::Stream`]).
fn buffered<W: Write + Send + 'static>(
    inner: W,
    checksum: Option<bool>,
    stream_crc: bool,
) -> std::io::Result<(Box<dyn Write + Send>, Option<Digest>)> {
    let (sink, digest) = match checksum {
        None => {
            let capped = Capped(inner);
            return Ok((Box::new(BufWriter::with_capacity(IO_BUFFER, capped)), None));
        }
        Some(false) if stream_crc => {
            let capped = Capped(inner);
            return Ok((
                Box::new(BufWriter::with_capacity(IO_BUFFER, capped)),
                Some(Digest::Stream),
            ));
        }
        Some(false) => {
            let crc = Arc::new(Mutex::new(Crc32c::default()));
            (HashSink::Crc32c(crc.clone()), Digest::Crc32c(crc))
        }
        Some(true) => {
            let (chunks, received) = sync_channel::<Vec<u8>>(DIGEST_QUEUE);
            let thread = std::thread::Builder::new()
                .name("recordforge-sha256".into())
                .spawn(move || {
                    let mut digest = Sha256::new();
                    for chunk in received {
                        digest.update(&chunk);
                    }
                    digest.finalize().into()
                })?;
            (HashSink::Sha256(chunks), Digest::Sha256(thread))
        }
    };
    let hashing = Hashing { inner, sink };
    Ok((
        Box::new(BufWriter::with_capacity(IO_BUFFER, hashing)),
        Some(digest),
    ))
}

/// Writes TFRecord files. See `recordforge.TFRecordWriter` for the documentation.
///
/// Every method takes `&self`: calls from several threads are serialized by a lease on
/// the sink (see [`Lease`]) instead of failing on a borrow, and a caller waits for the
/// call in flight without the GIL, which that call may need (a file object's `write`).
#[pyclass(module = "recordforge._core", subclass, frozen)]
pub struct TFRecordWriter {
    state: Mutex<State>,
    /// Signalled whenever a lease ends.
    idle: Condvar,
    name: String,
    compression: Compression,
    /// The process that made the writer: a forked child must not write into its file.
    owner: u32,
}

/// What a [`TFRecordWriter`] changes, behind its `state` lock. The lock is only held for
/// moments and never across a call into Python, so a thread may block on it attached.
struct State {
    /// The stream; `None` once closed, and while it is leased out.
    sink: Option<Sink>,
    /// The thread ([`thread_token`]) whose call has the sink, while one is in flight.
    busy: Option<usize>,
    /// Threads waiting for the call in flight (woken only if any: a wake is a syscall).
    waiting: usize,
    closed: bool,
    digest: Option<Digest>,
    checksum: Option<String>,
    /// The error of a write that failed: the file may end in a record cut short, so the
    /// writer takes no more records and its close raises (see [`TFRecordWriter::failed`]).
    failed: Option<String>,
}

/// The sink, taken out of a writer for one call; given back (and the next caller woken)
/// when dropped.
struct Lease<'a> {
    writer: &'a TFRecordWriter,
    sink: Option<Sink>,
}

impl Lease<'_> {
    fn sink(&mut self) -> &mut Sink {
        self.sink
            .as_mut()
            .expect("a lease holds the sink until it ends")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.writer.state);
        if let Some(sink) = self.sink.take() {
            state.sink = Some(sink);
        }
        state.busy = None;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.writer.idle.notify_all();
        }
    }
}

/// This process's id, cached (glibc's `getpid` is a system call: a third of a small
/// `write`), and forgotten in a forked child.
fn current_pid() -> u32 {
    static FORK_HOOK: Once = Once::new();
    #[cfg(unix)]
    FORK_HOOK.call_once(|| {
        extern "C" fn forget() {
            PID.store(0, Ordering::Relaxed);
        }
        extern "C" {
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> std::ffi::c_int;
        }
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        unsafe { pthread_atfork(None, None, Some(forget)) };
    });
    #[cfg(not(unix))]
    FORK_HOOK.call_once(|| {});
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// [`current_pid`]'s cache: 0 until known.
static PID: AtomicU32 = AtomicU32::new(0);

/// Identifies the calling thread while it lives (the address of a thread-local).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

impl TFRecordWriter {
    fn in_forked_child(&self) -> bool {
        current_pid() != self.owner
    }

    fn not_owner(&self) -> PyErr {
        PyRuntimeError::new_err(format!(
            "{}: this TFRecordWriter belongs to process {}: a forked child cannot use it \
             (its buffered records are its parent's)",
            self.name, self.owner
        ))
    }

    /// Takes the sink for one call: at once when no other call is in flight, else after
    /// waiting (detached) for the one in flight, at most `wait` when given. `None` when
    /// closed; `closing` marks the writer closed as the lease is taken.
    fn lease(
        &self,
        py: Python<'_>,
        wait: Option<Duration>,
        closing: bool,
    ) -> PyResult<Option<Lease<'_>>> {
        if self.in_forked_child() {
            return Err(self.not_owner());
        }
        let me = thread_token();
        let take = |state: &mut State| {
            if state.closed {
                return None;
            }
            state.closed = closing;
            state.busy = Some(me);
            Some(Lease {
                writer: self,
                sink: state.sink.take(),
            })
        };
        {
            let mut state = lock(&self.state);
            match state.busy {
                None => return Ok(take(&mut state)),
                Some(holder) if holder == me => {
                    return Err(PyRuntimeError::new_err(format!(
                        "{}: TFRecordWriter called again from the same thread while one of \
                         its calls is in flight (from a signal handler, or the file object \
                         it writes to?)",
                        self.name
                    )))
                }
                Some(_) => {}
            }
        }
        // Another thread's call is in flight, and may need the GIL to end.
        // (A wait past the end of time is no limit.)
        let deadline = wait.and_then(|wait| Instant::now().checked_add(wait));
        let leased = py.detach(|| {
            let mut state = lock(&self.state);
            state.waiting += 1;
            while state.busy.is_some() {
                state = match deadline {
                    None => self.idle.wait(state).unwrap_or_else(|p| p.into_inner()),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let (state, _) = self
                            .idle
                            .wait_timeout(state, left)
                            .unwrap_or_else(|p| p.into_inner());
                        state
                    }
                };
            }
            state.waiting -= 1;
            if state.busy.is_some() {
                return Err(()); // timed out
            }
            Ok(take(&mut state))
        });
        leased.map_err(|()| {
            PyTimeoutError::new_err(format!(
                "{}: another thread's call to the TFRecordWriter did not end within {:.3} s",
                self.name,
                wait.unwrap_or_default().as_secs_f64()
            ))
        })
    }

    /// The sink for a call that writes: an error when closed.
    fn open(&self, py: Python<'_>) -> PyResult<Lease<'_>> {
        let lease = self
            .lease(py, None, false)?
            .ok_or_else(|| closed(&self.name))?;
        if let Some(error) = lock(&self.state).failed.clone() {
            return Err(self.broken(&error));
        }
        Ok(lease)
    }

    /// A write to the sink failed with `error`: kept, so that no later record follows a
    /// record that may be cut short, and mapped to the Python error of this call.
    fn failed(&self, py: Python<'_>, error: std::io::Error) -> PyErr {
        lock(&self.state).failed = Some(error.to_string());
        map_err(py, Error::Io(error), &self.name)
    }

    /// The error of a call after a failed write.
    fn broken(&self, error: &str) -> PyErr {
        PyOSError::new_err(format!(
            "{}: an earlier write failed ({error}): the file may end in a record cut \
             short, and this writer takes no more records",
            self.name
        ))
    }

    /// A forked child's close: the buffered bytes are its parent's, so they are dropped
    /// unwritten (not even the buffers' own flush on drop). Never waits: a call in flight
    /// when the parent forked has no thread in the child to end it.
    fn abandon(&self) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        state.closed = true;
        std::mem::forget(state.sink.take());
        // A SHA-256 thread of the parent's does not exist here: never joined.
        std::mem::forget(state.digest.take());
    }
}

#[pymethods]
impl TFRecordWriter {
    #[new]
    #[pyo3(signature = (path_or_file, compression=None, *, checksum=None))]
    fn new(
        py: Python<'_>,
        path_or_file: &Bound<'_, PyAny>,
        compression: Option<&str>,
        checksum: Option<&str>,
    ) -> PyResult<Self> {
        let compression = parse_compression(compression)?;
        let checksum = parse_checksum(checksum)?;
        let (sink, name, digest) = match target(path_or_file, "write")? {
            Target::Path(path, shown) => {
                let file = py
                    .detach(|| std::fs::File::create(&path))
                    .map_err(|e| map_err(py, Error::Io(e), &shown))?;
                let stream_crc = compression == Compression::None;
                let (inner, digest) = buffered(file, checksum, stream_crc)
                    .map_err(|e| map_err(py, Error::Io(e), &shown))?;
                (
                    RecordWriter::new(inner, compression)
                        .map_err(|e| map_err(py, Error::Io(e), &shown))?,
                    shown,
                    digest,
                )
            }
            Target::File(file, shown) => {
                // Hashed below the buffer, whatever the compression: a Python file
                // object's `write` runs Python code, which may change a record's buffer
                // lent in place (a NumPy array) while it is written: the bytes written
                // are what is hashed.
                let (inner, digest) = buffered(PyWriter::new(file), checksum, false)
                    .map_err(|e| map_err(py, Error::Io(e), &shown))?;
                (
                    RecordWriter::new(inner, compression)
                        .map_err(|e| map_err(py, Error::Io(e), &shown))?,
                    shown,
                    digest,
                )
            }
        };
        let sink: Sink = match digest {
            Some(Digest::Stream) => sink.with_stream_crc(),
            _ => sink,
        };
        Ok(TFRecordWriter {
            state: Mutex::new(State {
                sink: Some(sink),
                busy: None,
                waiting: 0,
                closed: false,
                digest,
                checksum: None,
                failed: None,
            }),
            idle: Condvar::new(),
            name,
            compression,
            owner: current_pid(),
        })
    }

    /// Writes one record; returns its byte offset in the (uncompressed) record stream.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        if let Ok(b) = data.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            let mut lease = self.open(py)?;
            let sink = lease.sink();
            return py
                .detach(|| sink.write_record(bytes))
                .map_err(|e| self.failed(py, e));
        }
        // Leased once `data`'s bytes are in hand (which may run Python code).
        with_bytes(data, |bytes| {
            let mut lease = self.open(py)?;
            lease
                .sink()
                .write_record(bytes)
                .map_err(|e| self.failed(py, e))
        })?
    }

    /// Writes many records; returns their offsets.
    fn write_many<'py>(&self, py: Python<'py>, records: &Bound<'py, PyAny>) -> PyResult<Vec<u64>> {
        if self.in_forked_child() {
            return Err(self.not_owner());
        }
        // Each record's bytes are taken as it comes: an iterator may change a buffer it
        // gave before (refilled for the next record), as with write() of each one.
        let mut items: Vec<Bound<'py, PyAny>> = Vec::new();
        let mut owned: Vec<Vec<u8>> = Vec::new();
        let mut which: Vec<Result<usize, usize>> = Vec::new();
        let mut take = |i: usize, item: Bound<'py, PyAny>| -> PyResult<()> {
            if item.is_instance_of::<PyBytes>() {
                which.push(Ok(items.len()));
                items.push(item);
            } else {
                which.push(Err(owned.len()));
                owned.push(with_bytes(&item, |b| b.to_vec()).map_err(|_| {
                    PyTypeError::new_err(format!(
                        "record {i} is not bytes-like: {}",
                        item.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?);
            }
            Ok(())
        };
        match records.cast::<PyList>() {
            Ok(list) => {
                for (i, item) in list.iter().enumerate() {
                    take(i, item)?;
                }
            }
            Err(_) => {
                for (i, item) in records.try_iter()?.enumerate() {
                    take(i, item?)?;
                }
            }
        }
        let slices: Vec<&[u8]> = which
            .iter()
            .map(|w| match *w {
                Ok(i) => items[i]
                    .cast::<PyBytes>()
                    .expect("checked above")
                    .as_bytes(),
                Err(j) => owned[j].as_slice(),
            })
            .collect();
        // Leased once the records are in hand (iterating them may run Python code).
        let mut lease = self.open(py)?;
        let sink = lease.sink();
        py.detach(|| {
            slices
                .iter()
                .map(|s| sink.write_record(s))
                .collect::<std::io::Result<Vec<u64>>>()
        })
        .map_err(|e| self.failed(py, e))
    }

    /// Writes records ``start..stop`` of a ``RecordBatch`` (all by default) in one call;
    /// returns their offsets as a uint64 array.
    #[pyo3(signature = (batch, start=0, stop=None))]
    fn write_batch<'py>(
        &self,
        py: Python<'py>,
        batch: PyRef<'py, RecordBatch>,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        if self.in_forked_child() {
            return Err(self.not_owner());
        }
        let n = batch.batch.len();
        let stop = stop.unwrap_or(n);
        if start > stop || stop > n {
            return Err(PyValueError::new_err(format!(
                "records {start}..{stop} are not within a batch of {n}"
            )));
        }
        let frames = batch.frames(start, stop);
        let mut lease = self.open(py)?;
        let sink = lease.sink();
        let at = py
            .detach(|| sink.write_framed(frames))
            .map_err(|e| self.failed(py, e))?;
        drop(lease);
        Ok(PyArray1::from_iter(
            py,
            batch.frame_starts(start, stop).map(|o| o + at),
        ))
    }

    /// Writes records that are already framed: ``frames`` is complete TFRecord frames
    /// back to back (``length | crc | data | crc``, as ``frame_records`` or
    /// ``RecordBatch.framed`` make them), written as they are (compressed as the file
    /// is); the same bytes as ``write_many`` of their payloads. A buffer whose length
    /// fields do not add up to its size exactly (not ending on a frame boundary) is
    /// refused with ``ValueError`` and nothing is written. Returns the records' offsets
    /// as a uint64 array.
    fn write_framed<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        if self.in_forked_child() {
            return Err(self.not_owner());
        }
        let write = |bytes: &[u8]| -> PyResult<Vec<u64>> {
            let mut starts = py.detach(|| frame_starts(bytes)).map_err(|at| {
                PyValueError::new_err(format!(
                    "not whole TFRecord frames: the frame at byte {at} of {} is cut short \
                     or has a bad length field",
                    bytes.len()
                ))
            })?;
            let mut lease = self.open(py)?;
            let sink = lease.sink();
            let at = py
                .detach(|| sink.write_framed(bytes))
                .map_err(|e| self.failed(py, e))?;
            drop(lease);
            starts.iter_mut().for_each(|s| *s += at);
            Ok(starts)
        };
        let starts = match frames.cast::<PyBytes>() {
            Ok(b) => write(b.as_bytes())?,
            // Leased once the buffer's bytes are in hand (which may run Python code).
            Err(_) => with_bytes(frames, write)??,
        };
        Ok(PyArray1::from_vec(py, starts))
    }

    /// Makes every record written so far readable from the file: flushes the compressed
    /// stream (as TensorFlow does) and the buffers below. Only close writes a compressed
    /// stream's end, without which a reader reports the file as cut short after them.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut lease = self.open(py)?;
        let sink = lease.sink();
        py.detach(|| sink.flush()).map_err(|e| self.failed(py, e))
    }

    /// Completes the stream and closes the file (a file object passed in is flushed, not
    /// closed). A call in flight in another thread is waited for (at most `timeout`
    /// seconds: then `TimeoutError`, and the writer stays open). In a forked child, the
    /// parent's buffered records are dropped: the file is the parent's.
    #[pyo3(signature = (*, timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        if self.in_forked_child() {
            self.abandon();
            return Ok(());
        }
        if timeout.is_some_and(f64::is_nan) {
            return Err(PyValueError::new_err(
                "timeout must be a number of seconds, not NaN",
            ));
        }
        // (A timeout too large for a Duration, infinity, is no limit.)
        let wait = timeout.and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok());
        let Some(mut lease) = self.lease(py, wait, true)? else {
            return Ok(());
        };
        let sink = lease.sink.take().expect("a lease holds the sink");
        let (digest, failed) = {
            let mut state = lock(&self.state);
            (state.digest.take(), state.failed.clone())
        };
        let stream = sink.stream_crc();
        let finished = py.detach(|| sink.finish().and_then(|mut inner| inner.flush()));
        if let Some(error) = failed {
            // Closed all the same (the file is let go); no checksum for a broken file.
            drop(lease);
            return Err(self.broken(&error));
        }
        finished.map_err(|e| map_err(py, Error::Io(e), &self.name))?;
        if let Some(digest) = digest {
            // The sink (and with it the SHA-256 thread's sender) is gone: it ends.
            let checksum = py.detach(|| digest.finish(stream))?;
            lock(&self.state).checksum = Some(checksum);
        }
        drop(lease);
        Ok(())
    }

    /// The file's checksum, ``"crc32c:<8 hex>"`` or ``"sha256:<64 hex>"``, once closed,
    /// when made with ``checksum="crc32c"`` or ``"sha256"``.
    #[getter]
    fn checksum(&self) -> Option<String> {
        lock(&self.state).checksum.clone()
    }

    /// Byte offset the next record will have in the (uncompressed) record stream.
    #[getter]
    fn offset(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self
            .lease(py, None, false)?
            .map_or(0, |mut lease| lease.sink().offset()))
    }

    /// The error of a write that failed (the writer takes no more records), or None.
    #[getter(_failed)]
    fn write_failed(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    /// Does not wait for a call in flight.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The process that made the writer (where it may be used).
    #[getter(_owner)]
    fn owner(&self) -> u32 {
        self.owner
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn compression(&self) -> Option<&'static str> {
        self.compression.name()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*args))]
    fn __exit__(&self, py: Python<'_>, args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        let raising = args.get_item(0).is_ok_and(|kind| !kind.is_none());
        match self.close(py, None) {
            // The block's own error (the failed write's, say) is the one to see.
            Err(_) if raising && lock(&self.state).failed.is_some() => Ok(false),
            closed => closed.map(|()| false),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "TFRecordWriter({:?}, compression={}, {})",
            self.name,
            self.compression,
            if self.closed() { "closed" } else { "open" }
        )
    }
}

/// A Python exception pending when the interpreter drops a writer (an exception raised
/// while the writer sat on the value stack, as one from a signal handler can): set aside
/// while the writer completes its stream and warns, then set again, untouched. (Raw FFI:
/// `PyErr::take` would resume a pending Rust panic, which a `Drop` must not.)
struct PendingError([*mut pyo3::ffi::PyObject; 3]);

impl PendingError {
    fn set_aside(_py: Python<'_>) -> Self {
        let mut e = [std::ptr::null_mut(); 3];
        // SAFETY: attached; the three references move into `e`.
        unsafe { pyo3::ffi::PyErr_Fetch(&mut e[0], &mut e[1], &mut e[2]) };
        PendingError(e)
    }

    fn restore(self, _py: Python<'_>) {
        let [t, v, tb] = self.0;
        // SAFETY: attached; gives back the references taken by `set_aside` (a pending
        // error set meanwhile is replaced, as CPython's own finalizers do).
        unsafe { pyo3::ffi::PyErr_Restore(t, v, tb) };
    }
}

/// A writer dropped without `close` (`del`, garbage collection, the end of the script)
/// completes its stream as `close` does, then says so with a `ResourceWarning`, as Python's
/// files do. The interpreter drops it (from its deallocator, attached), so a file object
/// passed in is written and flushed here; errors become unraisable exceptions, and an
/// exception pending meanwhile is kept. A copy in a forked child writes nothing: the file
/// is its parent's.
impl Drop for TFRecordWriter {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(sink) = state.sink.take() else {
            return;
        };
        if current_pid() != self.owner {
            // Not even the buffers' own flush on drop: the parent writes those bytes.
            std::mem::forget(sink);
            std::mem::forget(state.digest.take());
            return;
        }
        let name = &self.name;
        Python::attach(|py| {
            let pending = PendingError::set_aside(py);
            let what = || PyString::new(py, &format!("closing TFRecordWriter {name}"));
            if let Err(e) = sink.finish().and_then(|mut inner| inner.flush()) {
                map_err(py, Error::Io(e), name).write_unraisable(py, Some(what().as_any()));
            }
            let message = format!("unclosed TFRecordWriter {name}").replace('\0', "?");
            let message = CString::new(message).expect("NUL bytes replaced");
            let category = py.get_type::<PyResourceWarning>();
            if let Err(e) = PyErr::warn(py, category.as_any(), &message, 1) {
                e.write_unraisable(py, Some(what().as_any()));
            }
            pending.restore(py);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn closed(name: &str) -> PyErr {
    PyValueError::new_err(format!("{name}: write to a closed TFRecordWriter"))
}

/// Iterator over the records of one file. See `recordforge.read_records`.
#[pyclass(module = "recordforge._core")]
pub struct RecordIterator {
    records: Mutex<Option<FileRecords>>,
    scratch: Vec<u8>,
    name: String,
    last_offset: Option<u64>,
    /// The error that stopped the iteration: raised again by every later `next()`, so
    /// that a retry loop does not mistake a damaged file for a finished one.
    failed: crate::errors::Kept,
}

#[pymethods]
impl RecordIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.failed.traverse(&visit)
    }

    fn __clear__(&self) {
        self.failed.clear();
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(e) = self.failed.get(py) {
            return Err(e);
        }
        let slot = self.records.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(records) = slot.as_mut() else {
            return Ok(None);
        };
        let mut copied = None; // the offset of a record copied out of the map
        let next = match records.next_mapped() {
            Some(next) => next.frame.and_then(|frame| match frame {
                None => Ok(None),
                Some(frame) => {
                    copied = Some(frame.offset);
                    copy_out(py, &frame, &next.data[frame.payload.clone()], next.verify)
                        .map(|bytes| Some((frame.offset, bytes)))
                }
            }),
            None => {
                let scratch = &mut self.scratch;
                py.detach(|| records.next_record(scratch)).map(|next| {
                    next.map(|(offset, range)| (offset, PyBytes::new(py, &scratch[range])))
                })
            }
        };
        // A copy that failed or met a cut: the file's cut, where the record was lost to it.
        let next = match copied {
            Some(offset) if next.is_err() || records.cut() => {
                records.cut_error(offset).map_or(next, Err)
            }
            _ => next,
        };
        match next {
            Ok(Some((offset, bytes))) => {
                self.last_offset = Some(offset);
                Ok(Some(bytes))
            }
            Ok(None) => {
                *slot = None;
                Ok(None)
            }
            Err(e) => {
                *slot = None;
                Err(self.failed.keep(py, map_err(py, e, &self.name)))
            }
        }
    }

    /// Byte offset of the record most recently returned (in the decompressed stream).
    #[getter]
    fn offset(&self) -> Option<u64> {
        self.last_offset
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
}

/// Records at least this large are copied out with the GIL released.
const DETACH_MIN: usize = 64 * 1024;

/// Copies a mapped record's payload into a new `bytes`, checking its CRC on the way.
fn copy_out<'py>(
    py: Python<'py>,
    frame: &Frame,
    payload: &[u8],
    verify: bool,
) -> Result<Bound<'py, PyBytes>, Error> {
    let len = isize::try_from(payload.len())
        .map_err(|_| Error::InvalidArgument("record too large".into()))?;
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, uninitialised bytes object
    // that nothing else can see yet; it is filled completely before it is returned.
    // (`PyBytes::new_with` would zero it first: a whole extra pass over the record.)
    let bytes = unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len);
        Bound::from_owned_ptr_or_err(py, ptr)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .cast_into_unchecked::<PyBytes>()
    };
    let dst = unsafe {
        std::slice::from_raw_parts_mut(
            pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) as *mut u8,
            payload.len(),
        )
    };
    let outcome = if payload.len() >= DETACH_MIN {
        py.detach(|| frame.copy_checked(payload, dst, verify))
    } else {
        frame.copy_checked(payload, dst, verify)
    };
    outcome.map(|()| bytes)
}

/// Frames ``records`` (bytes-like payloads) as an uncompressed TFRecord stream, in one
/// ``bytes``: what ``TFRecordWriter.write_many`` writes for them without compression.
#[pyfunction]
pub fn frame_records<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let items: Vec<Bound<'py, PyAny>> = match records.cast::<PyList>() {
        Ok(list) => list.iter().collect(),
        Err(_) => records.try_iter()?.collect::<PyResult<_>>()?,
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Ok(b) = item.cast::<PyBytes>() {
            frame_record(&mut out, b.as_bytes());
        } else {
            with_bytes(item, |b| frame_record(&mut out, b)).map_err(|_| {
                PyTypeError::new_err(format!(
                    "record {i} is not bytes-like: {}",
                    item.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
        }
    }
    Ok(PyBytes::new(py, &out))
}

/// Opens a TFRecord file (path or file object) for reading. See `recordforge.read_records`.
#[pyfunction]
#[pyo3(signature = (
    path_or_file, compression="auto", verify=true, *, max_record_bytes=DEFAULT_MAX_RECORD_BYTES
))]
pub fn read_records(
    py: Python<'_>,
    path_or_file: &Bound<'_, PyAny>,
    compression: Option<&str>,
    verify: bool,
    max_record_bytes: u64,
) -> PyResult<RecordIterator> {
    let compression = parse_read_compression(compression)?;
    let max = max_record_bytes;
    let (records, name) = match target(path_or_file, "read")? {
        Target::Path(path, shown) => {
            let r = py
                .detach(|| FileRecords::open(&path, compression, verify, max))
                .map_err(|e| map_err(py, e, &shown))?;
            (r, shown)
        }
        Target::File(file, shown) => {
            let reader = py
                .detach(|| {
                    stream_records(
                        BufReader::with_capacity(IO_BUFFER, PyReader::new(file)),
                        compression,
                        verify,
                        max,
                    )
                })
                .map_err(|e| map_err(py, Error::Io(e), &shown))?;
            (FileRecords::Stream(reader), shown)
        }
    };
    Ok(RecordIterator {
        records: Mutex::new(Some(records)),
        scratch: Vec::new(),
        name,
        last_offset: None,
        failed: crate::errors::Kept::default(),
    })
}

/// Scans a whole file's framing (and CRCs when `verify`) without returning records.
/// Returns `(records, payload_bytes, stream_bytes)`. See `recordforge.scan_records`.
#[pyfunction]
#[pyo3(signature = (
    path_or_file, compression="auto", verify=true, threads=0, *,
    max_record_bytes=DEFAULT_MAX_RECORD_BYTES
))]
pub fn scan_records(
    py: Python<'_>,
    path_or_file: &Bound<'_, PyAny>,
    compression: Option<&str>,
    verify: bool,
    threads: usize,
    max_record_bytes: u64,
) -> PyResult<(u64, u64, u64)> {
    let compression = parse_read_compression(compression)?;
    let max = max_record_bytes;
    let (result, name) = match target(path_or_file, "read")? {
        Target::Path(path, shown) => (
            py.detach(|| scan_file(&path, compression, verify, threads, max)),
            shown,
        ),
        Target::File(file, shown) => {
            let result = py.detach(|| {
                let reader = BufReader::with_capacity(IO_BUFFER, PyReader::new(file));
                let mut records = stream_records(reader, compression, verify, max)?;
                scan_stream(&mut records)
            });
            (result, shown)
        }
    };
    let s = result.map_err(|e| map_err(py, e, &name))?;
    Ok((s.records, s.payload_bytes, s.stream_bytes))
}
