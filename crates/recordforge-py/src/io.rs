//! `TFRecordWriter` and `read_records` over paths and Python file objects.

use std::ffi::CString;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use numpy::PyArray1;
use pyo3::exceptions::{PyResourceWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use recordforge_core::crc::Crc32c;
use recordforge_core::framing::{stream_records, FileRecords, Frame};
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

/// A file checksum being computed; [`Digest::finish`] gives it as `"<algorithm>:<hex>"`
/// once the writer is done.
enum Digest {
    Crc32c(Arc<Mutex<Crc32c>>),
    /// The SHA-256 thread; it ends when its `Hashing` writer is dropped.
    Sha256(JoinHandle<[u8; 32]>),
}

impl Digest {
    fn finish(self) -> PyResult<String> {
        Ok(match self {
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
/// buffer, so the digest gets large writes.
fn buffered<W: Write + Send + 'static>(
    inner: W,
    checksum: Option<bool>,
) -> std::io::Result<(Box<dyn Write + Send>, Option<Digest>)> {
    let (sink, digest) = match checksum {
        None => return Ok((Box::new(BufWriter::with_capacity(IO_BUFFER, inner)), None)),
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
#[pyclass(module = "recordforge._core", subclass)]
pub struct TFRecordWriter {
    // The Mutex only makes the class Sync; `&mut self` methods reach it without locking.
    sink: Mutex<Option<Sink>>,
    name: String,
    compression: Compression,
    digest: Option<Digest>,
    checksum: Option<String>,
    /// The process that made the writer: a forked child must not write into its file.
    owner: u32,
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
                let (inner, digest) =
                    buffered(file, checksum).map_err(|e| map_err(py, Error::Io(e), &shown))?;
                (
                    RecordWriter::new(inner, compression)
                        .map_err(|e| map_err(py, Error::Io(e), &shown))?,
                    shown,
                    digest,
                )
            }
            Target::File(file, shown) => {
                let (inner, digest) = buffered(PyWriter::new(file), checksum)
                    .map_err(|e| map_err(py, Error::Io(e), &shown))?;
                (
                    RecordWriter::new(inner, compression)
                        .map_err(|e| map_err(py, Error::Io(e), &shown))?,
                    shown,
                    digest,
                )
            }
        };
        let sink: Sink = sink;
        Ok(TFRecordWriter {
            sink: Mutex::new(Some(sink)),
            name,
            compression,
            digest,
            checksum: None,
            owner: std::process::id(),
        })
    }

    /// Writes one record; returns its byte offset in the (uncompressed) record stream.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let name = &self.name;
        let sink = open_sink(&mut self.sink).ok_or_else(|| closed(name))?;
        if let Ok(b) = data.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            return py
                .detach(|| sink.write_record(bytes))
                .map_err(|e| map_err(py, Error::Io(e), name));
        }
        with_bytes(data, |bytes| sink.write_record(bytes))?
            .map_err(|e| map_err(py, Error::Io(e), name))
    }

    /// Writes many records; returns their offsets.
    fn write_many<'py>(
        &mut self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<u64>> {
        let name = &self.name;
        let sink = open_sink(&mut self.sink).ok_or_else(|| closed(name))?;
        let items: Vec<Bound<'py, PyAny>> = match records.cast::<PyList>() {
            Ok(list) => list.iter().collect(),
            Err(_) => records.try_iter()?.collect::<PyResult<_>>()?,
        };
        let mut owned: Vec<Vec<u8>> = Vec::new();
        let mut which: Vec<Result<usize, usize>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_instance_of::<PyBytes>() {
                which.push(Ok(i));
            } else {
                which.push(Err(owned.len()));
                owned.push(with_bytes(item, |b| b.to_vec()).map_err(|_| {
                    PyValueError::new_err(format!(
                        "record {i} is not bytes-like: {}",
                        item.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?);
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
        py.detach(|| {
            slices
                .iter()
                .map(|s| sink.write_record(s))
                .collect::<std::io::Result<Vec<u64>>>()
        })
        .map_err(|e| map_err(py, Error::Io(e), name))
    }

    /// Writes records ``start..stop`` of a ``RecordBatch`` (all by default) in one call;
    /// returns their offsets as a uint64 array.
    #[pyo3(signature = (batch, start=0, stop=None))]
    fn write_batch<'py>(
        &mut self,
        py: Python<'py>,
        batch: PyRef<'py, RecordBatch>,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let name = &self.name;
        let sink = open_sink(&mut self.sink).ok_or_else(|| closed(name))?;
        let n = batch.batch.len();
        let stop = stop.unwrap_or(n);
        if start > stop || stop > n {
            return Err(PyValueError::new_err(format!(
                "records {start}..{stop} are not within a batch of {n}"
            )));
        }
        let frames = batch.frames(start, stop);
        let at = py
            .detach(|| sink.write_framed(frames))
            .map_err(|e| map_err(py, Error::Io(e), name))?;
        Ok(PyArray1::from_iter(
            py,
            batch.frame_starts(start, stop).map(|o| o + at),
        ))
    }

    /// Makes every record written so far readable from the file: flushes the compressed
    /// stream (as TensorFlow does) and the buffers below. Only close writes a compressed
    /// stream's end, without which a reader reports the file as cut short after them.
    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        let name = &self.name;
        let sink = open_sink(&mut self.sink).ok_or_else(|| closed(name))?;
        py.detach(|| sink.flush())
            .map_err(|e| map_err(py, Error::Io(e), name))
    }

    /// Completes the stream and closes the file (a file object passed in is flushed, not closed).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(sink) = self
            .sink
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            py.detach(|| sink.finish().and_then(|mut inner| inner.flush()))
                .map_err(|e| map_err(py, Error::Io(e), &self.name))?;
            if let Some(digest) = self.digest.take() {
                // The sink (and with it the SHA-256 thread's sender) is gone: it ends.
                self.checksum = Some(py.detach(|| digest.finish())?);
            }
        }
        Ok(())
    }

    /// The file's checksum, ``"crc32c:<8 hex>"`` or ``"sha256:<64 hex>"``, once closed,
    /// when made with ``checksum="crc32c"`` or ``"sha256"``.
    #[getter]
    fn checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }

    /// Byte offset the next record will have in the (uncompressed) record stream.
    #[getter]
    fn offset(&self) -> u64 {
        lock(&self.sink).as_ref().map_or(0, |s| s.offset())
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.sink).is_none()
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn compression(&self) -> Option<&'static str> {
        match self.compression {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zlib => Some("zlib"),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
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

/// A writer dropped without `close` (`del`, garbage collection, the end of the script)
/// completes its stream as `close` does, then says so with a `ResourceWarning`, as Python's
/// files do. The interpreter drops it (from its deallocator, attached), so a file object
/// passed in is written and flushed here; errors become unraisable exceptions. A copy in
/// a forked child writes nothing: the file is its parent's.
impl Drop for TFRecordWriter {
    fn drop(&mut self) {
        let Some(sink) = self
            .sink
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        if std::process::id() != self.owner {
            // Not even the buffers' own flush on drop: the parent writes those bytes.
            std::mem::forget(sink);
            return;
        }
        let name = &self.name;
        Python::attach(|py| {
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
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_sink(m: &mut Mutex<Option<Sink>>) -> Option<&mut Sink> {
    m.get_mut()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_mut()
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
    failed: Option<PyErr>,
}

#[pymethods]
impl RecordIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(e) = &self.failed {
            return Err(e.clone_ref(py));
        }
        let slot = self.records.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(records) = slot.as_mut() else {
            return Ok(None);
        };
        let next = match records.next_mapped() {
            Some(next) => next.frame.and_then(|frame| match frame {
                None => Ok(None),
                Some(frame) => copy_out(py, &frame, &next.data[frame.payload.clone()], next.verify)
                    .map(|bytes| Some((frame.offset, bytes))),
            }),
            None => {
                let scratch = &mut self.scratch;
                py.detach(|| records.next_record(scratch)).map(|next| {
                    next.map(|(offset, range)| (offset, PyBytes::new(py, &scratch[range])))
                })
            }
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
                let e = map_err(py, e, &self.name);
                self.failed = Some(e.clone_ref(py));
                Err(e)
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
        failed: None,
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
