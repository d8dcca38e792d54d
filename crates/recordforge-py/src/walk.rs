//! `RecordWalker`: every intact record and every damaged region of a file, read once,
//! front to back, with bounded memory (salvage, and count / verify of damaged files).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use recordforge_core::compression::Decoder;
use recordforge_core::walker::{Counting, ReadSource, SpanKind, Walker};
use recordforge_core::{Compression, Error, DEFAULT_MAX_RECORD_BYTES};

use crate::errors::to_py;

type FileWalker = Walker<ReadSource<Box<dyn Read + Send>>>;

/// One item of a ``RecordWalker``: ``kind`` is ``"record"`` (an intact record;
/// ``payload`` holds it when asked for), ``"damaged"`` (bytes ``start..end`` of the
/// record stream lost: ``reason``, and ``records`` 1 when they are exactly one framed
/// record whose data CRC failed, else 0) or ``"stream"`` (the compressed stream breaks
/// off at ``start``; ``end`` is None: the rest cannot be decompressed).
#[pyclass(module = "recordforge._core", frozen, get_all)]
pub struct WalkSpan {
    kind: &'static str,
    start: u64,
    end: Option<u64>,
    reason: Option<String>,
    records: u64,
    payload: Option<Py<PyBytes>>,
}

/// Walks a TFRecord file (plain, GZIP or ZLIB) once, front to back, without stopping at
/// damage: after a damaged record it resynchronises at the next offset holding a whole
/// record whose two CRCs check (every offset tried, inside the damaged record's claimed
/// length too). Memory stays within ``max_record_bytes`` plus a read buffer; a GZIP/ZLIB
/// stream that breaks off keeps everything decompressed before the break.
#[pyclass(module = "recordforge._core")]
pub struct RecordWalker {
    walker: Mutex<FileWalker>,
    read: Arc<AtomicU64>,
    name: String,
    compression: Compression,
    payloads: bool,
    failed: crate::errors::Kept,
}

fn compression_of(name: Option<&str>, file: &mut File) -> Result<Compression, Error> {
    match name {
        Some(n) if n.eq_ignore_ascii_case("auto") => {
            let mut prefix = [0u8; 12];
            let mut got = 0;
            while got < prefix.len() {
                match file.read(&mut prefix[got..])? {
                    0 => break,
                    n => got += n,
                }
            }
            Ok(Compression::detect(&prefix[..got]))
        }
        other => Compression::parse(other.unwrap_or("")),
    }
}

/// ``"gzip"``, ``"zlib"`` or None from the first bytes of a file (12 are enough): a
/// valid TFRecord header wins over a compression's magic number, as when reading.
#[pyfunction]
pub fn detect_compression(head: &[u8]) -> Option<&'static str> {
    Compression::detect(head).name()
}

#[pymethods]
impl RecordWalker {
    #[new]
    #[pyo3(signature = (
        path, compression="auto", verify=true, *, payloads=true,
        max_record_bytes=DEFAULT_MAX_RECORD_BYTES
    ))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        compression: Option<&str>,
        verify: bool,
        payloads: bool,
        max_record_bytes: u64,
    ) -> PyResult<Self> {
        let name = path.display().to_string();
        let opened = py.detach(|| -> Result<_, Error> {
            let mut file = File::open(&path)?;
            let c = compression_of(compression, &mut file)?;
            let file = File::open(&path)?;
            Ok((c, file))
        });
        let (c, file) = opened.map_err(|e| match e {
            Error::InvalidArgument(msg) => PyValueError::new_err(msg),
            other => to_py(py, other, &name),
        })?;
        let (counted, read) = Counting::new(file);
        let buffered = BufReader::with_capacity(1 << 20, counted);
        let inner: Box<dyn Read + Send> = match c {
            Compression::None => Box::new(buffered),
            c => Box::new(Decoder::new(buffered, c)),
        };
        let walker = Walker::new(ReadSource::new(inner), verify, max_record_bytes);
        Ok(RecordWalker {
            walker: Mutex::new(walker),
            read,
            name,
            compression: c,
            payloads,
            failed: crate::errors::Kept::default(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.failed.traverse(&visit)
    }

    fn __clear__(&self) {
        self.failed.clear();
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<WalkSpan>> {
        if let Some(e) = self.failed.get(py) {
            return Err(e);
        }
        let walker = self.walker.get_mut().unwrap_or_else(|p| p.into_inner());
        let span = match py.detach(|| walker.next_span()) {
            Ok(Some(span)) => span,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(self.failed.keep(py, to_py(py, Error::Io(e), &self.name)));
            }
        };
        Ok(Some(match span.kind {
            SpanKind::Record => WalkSpan {
                kind: "record",
                start: span.start,
                end: Some(span.end),
                reason: None,
                records: 1,
                payload: self
                    .payloads
                    .then(|| PyBytes::new(py, walker.payload()).unbind()),
            },
            SpanKind::Damaged { reason, records } => WalkSpan {
                kind: "damaged",
                start: span.start,
                end: Some(span.end),
                reason: Some(reason),
                records,
                payload: None,
            },
            SpanKind::StreamError(msg) => WalkSpan {
                kind: "stream",
                start: span.start,
                end: None,
                reason: Some(format!("{} stream error: {msg}", self.compression)),
                records: 0,
                payload: None,
            },
        }))
    }

    /// ``"gzip"``, ``"zlib"`` or None: the file's compression, as detected or given.
    #[getter]
    fn compression(&self) -> Option<&'static str> {
        self.compression.name()
    }

    /// Bytes of the file read so far (for progress).
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
}
