//! TFRecord framing: `u64 length (LE) | u32 masked crc32c(length) | data | u32 masked crc32c(data)`.
//!
//! Readers report every failure with the byte offset of the record's length field. A
//! stream that ends exactly at a record boundary is a clean end; anything else is an error.
//!
//! A length field is input like any other: a record that claims more than the reader's
//! `max_record` bytes ([`DEFAULT_MAX_RECORD_BYTES`] unless the caller says otherwise) is
//! refused before anything is allocated for it ([`CorruptKind::TooLarge`]).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::ops::Range;
use std::path::Path;

use crate::compression::{compressed_stream_error, Compression, Decoder, Encoder};
use crate::crc::{crc32c, crc32c_append, crc32c_append_frame, mask, masked_crc32c, unmask};
use crate::error::{CorruptKind, Error, Result};
use crate::walker::RangeCrcs;

/// Bytes of framing around each record: 8 length + 4 length CRC + 4 data CRC.
pub const FRAME_OVERHEAD: u64 = 16;
const HEADER: usize = 12;
const IO_BUFFER: usize = 1 << 20;

/// The largest record a reader accepts unless told otherwise: 1 GiB. A length field that
/// claims more is [`CorruptKind::TooLarge`], refused before any allocation.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1 << 30;

/// A record's buffer grows by at most this much at a time.
const RESERVE_STEP: u64 = 64 << 20;

/// Writes framed records, optionally compressed, into `W`.
pub struct RecordWriter<W: Write> {
    sink: Encoder<W>,
    offset: u64,
    /// CRC32C of the uncompressed record stream written so far, where asked for
    /// ([`RecordWriter::with_stream_crc`]).
    stream_crc: Option<u32>,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(RecordWriter {
            sink: Encoder::new(inner, compression)?,
            offset: 0,
            stream_crc: None,
        })
    }

    /// Keeps the CRC32C of the uncompressed record stream as it is written (see
    /// [`RecordWriter::stream_crc`]): a record's data is not read again for it, its own
    /// CRC (computed for its frame) is carried in ([`crc32c_append_frame`]). For an
    /// uncompressed file that is the file's CRC32C.
    pub fn with_stream_crc(mut self) -> Self {
        self.stream_crc = Some(0);
        self
    }

    /// CRC32C of the uncompressed record stream written so far (`None` unless made
    /// [`RecordWriter::with_stream_crc`]).
    pub fn stream_crc(&self) -> Option<u32> {
        self.stream_crc
    }

    /// Writes one record; returns its offset in the uncompressed record stream.
    pub fn write_record(&mut self, data: &[u8]) -> io::Result<u64> {
        let head = header(data.len());
        self.sink.write_all(&head)?;
        self.sink.write_all(data)?;
        // Computed once the data is written: a writer into a Python file object runs
        // Python code while it flushes, which may change a buffer lent as `data` (a NumPy
        // array is read in place); the CRC is then that of the bytes copied.
        let crc = crc32c(data);
        let foot = mask(crc).to_le_bytes();
        self.sink.write_all(&foot)?;
        if let Some(stream) = self.stream_crc.as_mut() {
            *stream = crc32c_append_frame(*stream, &head, data, crc, &foot);
        }
        let at = self.offset;
        self.offset += data.len() as u64 + FRAME_OVERHEAD;
        Ok(at)
    }

    /// Writes records that are already framed (each one `length | crc | data | crc`, as
    /// [`crate::columns::encode_batch`] makes them). Returns the offset of the first one in the record stream.
    /// The stream's CRC (where kept) reads every byte: the frames' data CRCs are not
    /// trusted here (see [`frames_crc32c`] for frames made by this crate).
    pub fn write_framed(&mut self, framed: &[u8]) -> io::Result<u64> {
        self.sink.write_all(framed)?;
        if let Some(stream) = self.stream_crc.as_mut() {
            *stream = crc32c_append(*stream, framed);
        }
        let at = self.offset;
        self.offset += framed.len() as u64;
        Ok(at)
    }

    /// Bytes of the uncompressed record stream written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Makes every record written so far readable from the bytes below and flushes
    /// them (a compressed stream gets TensorFlow's flush: see [`Encoder`]). A reader of a
    /// compressed file that ends there gets those records, then an error: the stream has
    /// no end marker yet.
    pub fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }

    /// Ends the (compressed) stream and returns the inner writer, flushed.
    pub fn finish(self) -> io::Result<W> {
        self.sink.finish()
    }
}

/// A record's length field and its masked CRC32C: the 12 bytes before its data.
fn header(len: usize) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(&(len as u64).to_le_bytes());
    let length_crc = masked_crc32c(&header[..8]);
    header[8..].copy_from_slice(&length_crc.to_le_bytes());
    header
}

/// Appends `data` framed as a TFRecord (`length | crc | data | crc`) to `out`: the bytes
/// [`RecordWriter::write_record`] writes for it.
pub fn frame_record(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&header(data.len()));
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// `crc` carried on over `framed`: complete frames, back to back, that this crate made
/// ([`frame_record`], [`crate::columns::encode_batch`]), whose data CRCs are the data's
/// (computed when they were framed). A large record's data is not read: its CRC comes
/// from its frame. `Err(offset)`: the frame at `offset` is not whole (as
/// [`frame_starts`] finds), or `framed` does not end on a frame's end.
pub fn frames_crc32c(crc: u32, framed: &[u8]) -> std::result::Result<u32, usize> {
    let mut crc = crc;
    let mut pos = 0usize;
    while pos < framed.len() {
        let len = whole_frame(framed, pos)?;
        let head = &framed[pos..pos + HEADER];
        let data = &framed[pos + HEADER..pos + HEADER + len];
        let foot = &framed[pos + HEADER + len..pos + HEADER + len + 4];
        let stored = unmask(u32::from_le_bytes(foot.try_into().expect("4 bytes")));
        crc = crc32c_append_frame(crc, head, data, stored, foot);
        pos += HEADER + len + 4;
    }
    Ok(crc)
}

/// Where each frame of `framed` (complete records, back to back, as
/// [`frame_record`] makes them) starts, from the length fields alone (and their CRCs;
/// the data's CRCs are not checked). `Err(offset)`: the frame at `offset` has a length
/// field that is cut short or fails its CRC, or its record runs past the end.
pub fn frame_starts(framed: &[u8]) -> std::result::Result<Vec<u64>, usize> {
    let mut starts = Vec::new();
    let mut pos = 0usize;
    while pos < framed.len() {
        let len = whole_frame(framed, pos)?;
        starts.push(pos as u64);
        pos += len + FRAME_OVERHEAD as usize;
    }
    Ok(starts)
}

/// The data length of the frame at `pos` of `framed`, checked to be whole: its length
/// field there and matching its CRC, its data and data CRC within `framed`. `Err(pos)`
/// otherwise.
fn whole_frame(framed: &[u8], pos: usize) -> std::result::Result<usize, usize> {
    let Some(head) = framed.get(pos..pos + HEADER) else {
        return Err(pos);
    };
    let stored = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
    if masked_crc32c(&head[..8]) != stored {
        return Err(pos);
    }
    let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let rest = (framed.len() - pos) as u64;
    if rest < FRAME_OVERHEAD || len > rest - FRAME_OVERHEAD {
        return Err(pos);
    }
    Ok(len as usize)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read. Errors of the
/// compressed layer become corruption at `offset`.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map_read_error(e, offset)),
        }
    }
    Ok(n)
}

fn map_read_error(e: io::Error, offset: u64) -> Error {
    match compressed_stream_error(&e) {
        Some(msg) => Error::corrupt(offset, CorruptKind::Compression(msg)),
        None => Error::Io(e),
    }
}

/// The record length of `header`, its CRC checked whatever `verify` says (`verify` is
/// for the data's CRC): a length that fails its CRC is never followed, as TensorFlow's
/// reader never follows one. Unchecked, 16 zero bytes appended to a file were counted as
/// a record, and a length bit flipped made a walk jump anywhere. It costs a CRC of 8
/// bytes a record.
fn check_length(header: &[u8; HEADER], offset: u64, max: u64) -> Result<u64> {
    let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
    let computed = masked_crc32c(&header[..8]);
    if stored != computed {
        return Err(Error::corrupt(
            offset,
            CorruptKind::LengthCrcMismatch { stored, computed },
        ));
    }
    if len > max {
        return Err(Error::corrupt(
            offset,
            CorruptKind::TooLarge {
                length: len,
                limit: max,
            },
        ));
    }
    Ok(len)
}

fn check_data(data: &[u8], footer: [u8; 4], offset: u64, verify: bool) -> Result<()> {
    if verify {
        let stored = u32::from_le_bytes(footer);
        let computed = masked_crc32c(data);
        if stored != computed {
            return Err(Error::corrupt(
                offset,
                CorruptKind::DataCrcMismatch { stored, computed },
            ));
        }
    }
    Ok(())
}

fn truncated(offset: u64, expected: u64, got: u64) -> Error {
    Error::corrupt(offset, CorruptKind::Truncated { expected, got })
}

/// Streaming reader of framed records from any `Read` (already decompressed).
pub struct RecordReader<R: Read> {
    inner: R,
    offset: u64,
    verify: bool,
    max_record: u64,
}

impl<R: Read> RecordReader<R> {
    /// A reader that accepts records of up to [`DEFAULT_MAX_RECORD_BYTES`].
    pub fn new(inner: R, verify: bool) -> Self {
        RecordReader {
            inner,
            offset: 0,
            verify,
            max_record: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// The same reader, refusing records that claim more than `max` bytes.
    pub fn with_max_record(mut self, max: u64) -> Self {
        self.max_record = max;
        self
    }

    /// The largest record this reader accepts.
    pub fn max_record(&self) -> u64 {
        self.max_record
    }

    /// Whether payload CRCs are checked.
    pub fn verify(&self) -> bool {
        self.verify
    }

    /// The (decompressed) stream below, positioned at [`offset`](RecordReader::offset).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Offset of the next record in the record stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record into `buf` (replacing its contents). Returns the record's
    /// offset, or `None` at a clean end of the stream.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>> {
        buf.clear();
        self.read_append(buf)
    }

    /// Like [`read_into`](RecordReader::read_into), but appends the record to `buf`
    /// (which then grows by exactly the payload, or not at all on `None` or an error).
    /// After a data CRC mismatch the stream is already past the record: the next call
    /// reads the one after it.
    pub fn read_append(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>> {
        let at = self.offset;
        let base = buf.len();
        let mut header = [0u8; HEADER];
        let got = read_full(&mut self.inner, &mut header, at)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER {
            return Err(truncated(at, HEADER as u64, got as u64));
        }
        let len = check_length(&header, at, self.max_record)?;
        let expected = len.saturating_add(FRAME_OVERHEAD);
        let result = self.read_payload(buf, at, len, expected);
        if result.is_err() {
            buf.truncate(base);
        }
        if matches!(
            result,
            Ok(())
                | Err(Error::Corrupt {
                    kind: CorruptKind::DataCrcMismatch { .. },
                    ..
                })
        ) {
            self.offset = at + expected;
        }
        result.map(|()| Some(at))
    }

    fn read_payload(&mut self, buf: &mut Vec<u8>, at: u64, len: u64, expected: u64) -> Result<()> {
        let base = buf.len();
        // `len` is at most `max_record` (checked with the header). The buffer grows by
        // exact steps as the bytes arrive: never past the record, never doubled, and at
        // most one step ahead of what the stream really holds.
        let mut remaining = len;
        while remaining > 0 {
            let step = remaining.min(RESERVE_STEP);
            buf.try_reserve_exact(step as usize).map_err(|_| {
                Error::Io(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("cannot allocate {len} bytes for the record at offset {at}"),
                ))
            })?;
            let before = buf.len();
            let mut limited = (&mut self.inner).take(step);
            loop {
                match limited.read_to_end(buf) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(map_read_error(e, at)),
                }
            }
            if ((buf.len() - before) as u64) < step {
                break;
            }
            remaining -= step;
        }
        let got = (buf.len() - base) as u64;
        if got < len {
            return Err(truncated(at, expected, HEADER as u64 + got));
        }
        let mut footer = [0u8; 4];
        let n = read_full(&mut self.inner, &mut footer, at)?;
        if n < 4 {
            return Err(truncated(at, expected, HEADER as u64 + len + n as u64));
        }
        check_data(&buf[base..], footer, at, self.verify)
    }
}

/// Where a framed record sits in an in-memory record stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the record's length field.
    pub offset: u64,
    /// The payload's byte range.
    pub payload: Range<usize>,
    /// The stored masked CRC of the payload.
    pub data_crc: u32,
}

impl Frame {
    /// Offset of the record after this one.
    pub fn end(&self) -> usize {
        self.payload.end + 4
    }

    /// Checks `payload` (this frame's bytes) against the stored CRC.
    pub fn check(&self, payload: &[u8]) -> Result<()> {
        check_data(payload, self.data_crc.to_le_bytes(), self.offset, true)
    }

    /// [`Frame::check`] of the frame in `data` (an in-memory stream), its CRC from a
    /// walk's `crcs` (see [`next_intact`]).
    pub fn check_in(&self, data: &[u8], crcs: &mut RangeCrcs) -> Result<()> {
        let src = crate::walker::SliceSource(data);
        let (start, end) = (self.payload.start as u64, self.payload.end as u64);
        let computed = crcs.masked(&src, start, end);
        if computed != self.data_crc {
            let stored = self.data_crc;
            let kind = CorruptKind::DataCrcMismatch { stored, computed };
            return Err(Error::corrupt(self.offset, kind));
        }
        Ok(())
    }

    /// Copies `payload` into `dst` (same length) and checks the CRC on the way, in chunks
    /// that are still in cache when hashed: one pass over memory instead of two.
    pub fn copy_checked(&self, payload: &[u8], dst: &mut [u8], verify: bool) -> Result<()> {
        const CHUNK: usize = 64 * 1024;
        if !verify {
            dst.copy_from_slice(payload);
            return Ok(());
        }
        let mut crc = crate::crc::Crc32c::default();
        for (src, out) in payload.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
            out.copy_from_slice(src);
            crc.update(out);
        }
        let computed = crate::crc::mask(crc.value());
        if computed != self.data_crc {
            return Err(Error::corrupt(
                self.offset,
                CorruptKind::DataCrcMismatch {
                    stored: self.data_crc,
                    computed,
                },
            ));
        }
        Ok(())
    }
}

/// Locates the record starting at `pos` of an in-memory record stream: checks the length
/// CRC, the length against `max`, and that the whole frame is there, but not the payload
/// CRC (see [`Frame::check`]). `None` when `pos` is exactly the end.
pub fn locate(data: &[u8], pos: usize, max: u64) -> Result<Option<Frame>> {
    let Some(payload) = locate_header(data, pos, max)? else {
        return Ok(None);
    };
    let footer: [u8; 4] = data[payload.end..payload.end + 4]
        .try_into()
        .expect("4 bytes");
    Ok(Some(Frame {
        offset: pos as u64,
        payload,
        data_crc: u32::from_le_bytes(footer),
    }))
}

/// The payload range of the record at `pos` from its 12-byte header alone (the length's
/// CRC checked, the whole frame within `data`): [`locate`] without reading
/// the footer, for a reader that copies payload and footer itself (`Ok(None)` at the end).
pub fn locate_header(data: &[u8], pos: usize, max: u64) -> Result<Option<Range<usize>>> {
    let at = pos as u64;
    let rest = &data[pos.min(data.len())..];
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < HEADER {
        return Err(truncated(at, HEADER as u64, rest.len() as u64));
    }
    let header: &[u8; HEADER] = rest[..HEADER].try_into().expect("12 bytes");
    let len = check_length(header, at, max)?;
    let expected = len.saturating_add(FRAME_OVERHEAD);
    if (rest.len() as u64) < expected {
        return Err(truncated(at, expected, rest.len() as u64));
    }
    Ok(Some(pos + HEADER..pos + HEADER + len as usize))
}

/// Parses and fully checks the record starting at `pos` of an in-memory record stream
/// (records over `max` bytes refused). Returns the payload range, or `None` when `pos`
/// is exactly the end.
pub fn frame_at(data: &[u8], pos: usize, verify: bool, max: u64) -> Result<Option<Range<usize>>> {
    match locate(data, pos, max)? {
        None => Ok(None),
        Some(frame) => {
            if verify {
                frame.check(&data[frame.payload.clone()])?;
            }
            Ok(Some(frame.payload))
        }
    }
}

/// Where the next intact record starts after a damaged one at `pos`, as the
/// resynchronising walk of [`crate::walker`] finds it: when the damaged record's length
/// is intact (only its data CRC fails), the first whole, CRC-valid record inside its
/// claimed length (a torn write) or else its end; otherwise the first later offset
/// holding a whole record of at most `max` bytes whose two CRCs check (or the end).
///
/// `crcs` carries the data CRCs of one walk over `data` from call to call (and from its
/// in-step checks, [`Frame::check_in`]): a walk costs O(size) however its records'
/// claims overlap (see [`RangeCrcs`]).
pub fn next_intact(data: &[u8], pos: usize, max: u64, crcs: &mut RangeCrcs) -> usize {
    use crate::walker::{find_valid, SliceSource};
    let mut src = SliceSource(data);
    let (from, before) = (pos as u64 + 1, data.len() as u64);
    if let Ok(Some(frame)) = locate(data, pos, max) {
        let end = frame.end() as u64;
        return match find_valid(&mut src, crcs, from, end, max) {
            Ok(Some(q)) => q as usize,
            _ => end as usize,
        };
    }
    match find_valid(&mut src, crcs, from, before, max) {
        Ok(Some(q)) => q as usize,
        _ => data.len(),
    }
}

/// Records of an in-memory (or memory-mapped) uncompressed record stream.
pub struct SliceRecords<'a> {
    data: &'a [u8],
    pos: usize,
    verify: bool,
    max_record: u64,
    failed: bool,
}

impl<'a> SliceRecords<'a> {
    pub fn new(data: &'a [u8], verify: bool) -> Self {
        SliceRecords {
            data,
            pos: 0,
            verify,
            max_record: DEFAULT_MAX_RECORD_BYTES,
            failed: false,
        }
    }

    /// The same records, refusing any that claims more than `max` bytes.
    pub fn with_max_record(mut self, max: u64) -> Self {
        self.max_record = max;
        self
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }
}

impl<'a> Iterator for SliceRecords<'a> {
    /// (offset of the record, payload)
    type Item = Result<(u64, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match frame_at(self.data, self.pos, self.verify, self.max_record) {
            Ok(None) => None,
            Ok(Some(range)) => {
                let at = self.pos as u64;
                self.pos = range.end + 4;
                Some(Ok((at, &self.data[range])))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A source of records opened from a file: memory-mapped when uncompressed, streamed
/// through the decoder otherwise.
pub enum FileRecords {
    Mapped {
        map: crate::Mapped,
        pos: usize,
        verify: bool,
        max_record: u64,
    },
    Stream(RecordReader<Box<dyn Read + Send>>),
}

/// See [`FileRecords::next_mapped`].
pub struct MappedNext<'a> {
    /// The next record, `None` at a clean end.
    pub frame: Result<Option<Frame>>,
    /// The whole mapped file; the payload is `data[frame.payload]`.
    pub data: &'a [u8],
    /// Whether payload CRCs are to be checked.
    pub verify: bool,
}

/// The error of a mapped file found cut short to `size` bytes (see [`crate::Mapped`]),
/// at the record at byte `offset`.
pub fn cut_at(offset: u64, size: u64) -> Error {
    Error::Corrupt {
        offset,
        kind: CorruptKind::Cut { size },
    }
}

/// `found`, the record at `pos` of the mapped file `map` (None: its end), or the file's
/// cut: checked where reading it failed or met a cut, and at the end of the map (a file
/// cut inside its last page faults nothing, see [`crate::Mapped`]: where no CRC is
/// checked, a record that such a cut took is given before the error at the end; a
/// `fstat` per record would cost 8x the read of a small one).
fn unless_cut<T>(map: &crate::Mapped, pos: usize, found: Result<Option<T>>) -> Result<Option<T>> {
    match found {
        Ok(Some(r)) if !map.cut() => Ok(Some(r)),
        Ok(None) => match map.len_now() {
            Some(now) if now < map.len() as u64 => Err(cut_at(now, now)),
            _ => Ok(None),
        },
        other => map.cut_error(pos as u64).map_or(other, Err),
    }
}

/// Reads the first bytes of `r` to detect its compression, and returns a reader that
/// still yields those bytes.
pub fn detect_stream<R: Read + Send + 'static>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    let mut prefix = vec![0u8; HEADER];
    let mut n = 0;
    while n < HEADER {
        match r.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    prefix.truncate(n);
    let c = Compression::detect(&prefix);
    Ok((c, Box::new(io::Cursor::new(prefix).chain(r))))
}

/// Wraps a raw (possibly compressed) byte stream into a record reader that refuses
/// records over `max_record` bytes.
pub fn stream_records<R: Read + Send + 'static>(
    r: R,
    compression: Option<Compression>,
    verify: bool,
    max_record: u64,
) -> io::Result<RecordReader<Box<dyn Read + Send>>> {
    let (c, r): (Compression, Box<dyn Read + Send>) = match compression {
        Some(c) => (c, Box::new(r)),
        None => detect_stream(r)?,
    };
    let r: Box<dyn Read + Send> = match c {
        Compression::None => r,
        c => Box::new(Decoder::new(r, c)),
    };
    Ok(RecordReader::new(r, verify).with_max_record(max_record))
}

impl FileRecords {
    /// Opens `path`. `compression` `None` means detect from the first bytes; records
    /// over `max_record` bytes are refused.
    pub fn open(
        path: &Path,
        compression: Option<Compression>,
        verify: bool,
        max_record: u64,
    ) -> Result<Self> {
        let mut file = File::open(path)?;
        let c = match compression {
            Some(c) => c,
            None => {
                let mut prefix = [0u8; HEADER];
                let n = read_full(&mut file, &mut prefix, 0)?;
                Compression::detect(&prefix[..n])
            }
        };
        if c == Compression::None {
            let len = file.metadata()?.len();
            if len == 0 {
                let empty: Box<dyn Read + Send> = Box::new(io::empty());
                return Ok(FileRecords::Stream(
                    RecordReader::new(empty, verify).with_max_record(max_record),
                ));
            }
            let map = crate::Mapped::map(file)?;
            #[cfg(unix)]
            let _ = map.advise(memmap2::Advice::Sequential);
            return Ok(FileRecords::Mapped {
                map,
                pos: 0,
                verify,
                max_record,
            });
        }
        let file = File::open(path)?;
        let buffered = BufReader::with_capacity(IO_BUFFER, file);
        let decoder: Box<dyn Read + Send> = Box::new(Decoder::new(buffered, c));
        Ok(FileRecords::Stream(
            RecordReader::new(decoder, verify).with_max_record(max_record),
        ))
    }

    /// Reads the next record: its offset and where its payload is (see [`payload`]).
    /// `Ok(None)` at a clean end. `scratch` holds streamed records between calls.
    ///
    /// [`payload`]: FileRecords::payload
    pub fn next_record(&mut self, scratch: &mut Vec<u8>) -> Result<Option<(u64, Range<usize>)>> {
        match self {
            FileRecords::Mapped {
                map,
                pos,
                verify,
                max_record,
            } => match unless_cut(map, *pos, frame_at(map, *pos, *verify, *max_record))? {
                None => Ok(None),
                Some(range) => {
                    let at = *pos as u64;
                    *pos = range.end + 4;
                    Ok(Some((at, range)))
                }
            },
            FileRecords::Stream(reader) => match reader.read_into(scratch)? {
                None => Ok(None),
                Some(at) => Ok(Some((at, 0..scratch.len()))),
            },
        }
    }

    /// For a memory-mapped file: the next record located but its payload CRC not yet
    /// checked (copy it with [`Frame::copy_checked`]), and the mapped bytes. `None` for
    /// streamed files, which go through [`next_record`](FileRecords::next_record).
    pub fn next_mapped(&mut self) -> Option<MappedNext<'_>> {
        match self {
            FileRecords::Mapped {
                map,
                pos,
                verify,
                max_record,
            } => {
                let frame = unless_cut(map, *pos, locate(map, *pos, *max_record));
                if let Ok(Some(f)) = &frame {
                    *pos = f.end();
                }
                Some(MappedNext {
                    frame,
                    data: &map[..],
                    verify: *verify,
                })
            }
            FileRecords::Stream(_) => None,
        }
    }

    /// The error of the record at `offset` where the mapped file is cut short under it
    /// now (see [`crate::Mapped::cut_error`]): for a caller that copied the record out
    /// of [`next_mapped`](FileRecords::next_mapped)'s bytes, where that failed or met a
    /// cut.
    pub fn cut_error(&self, offset: u64) -> Option<Error> {
        match self {
            FileRecords::Mapped { map, .. } => map.cut_error(offset),
            FileRecords::Stream(_) => None,
        }
    }

    /// Whether a mapped file was found cut short (see [`crate::Mapped::cut`]).
    pub fn cut(&self) -> bool {
        matches!(self, FileRecords::Mapped { map, .. } if map.cut())
    }

    /// The payload bytes of a record returned by [`next_record`](FileRecords::next_record).
    pub fn payload<'a>(&'a self, scratch: &'a [u8], range: Range<usize>) -> &'a [u8] {
        match self {
            FileRecords::Mapped { map, .. } => &map[range],
            FileRecords::Stream(_) => &scratch[range],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_crc_is_the_crc_of_the_bytes_written() {
        let sizes = [0usize, 1, 100, (16 << 10) - 1, 16 << 10, 200_000, 3];
        let records: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * 31 + k * 7) as u8).collect())
            .collect();
        let mut w = RecordWriter::new(Vec::new(), Compression::None)
            .unwrap()
            .with_stream_crc();
        assert_eq!(w.stream_crc(), Some(0));
        let mut framed = Vec::new();
        for r in &records[..4] {
            w.write_record(r).unwrap();
        }
        for r in &records[4..] {
            frame_record(&mut framed, r);
        }
        w.write_framed(&framed).unwrap();
        let crc = w.stream_crc().unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(crc, crc32c(&bytes));
        assert_eq!(frames_crc32c(0, &bytes), Ok(crc));
        let half = frames_crc32c(0, &bytes[..framed_len(&records[..2])]).unwrap();
        assert_eq!(
            frames_crc32c(half, &bytes[framed_len(&records[..2])..]),
            Ok(crc)
        );
        // Not whole frames: cut short, or a length field that fails its CRC.
        assert_eq!(
            frames_crc32c(0, &bytes[..bytes.len() - 1]).map(|_| ()),
            Err(framed_len(&records[..6]))
        );
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(frames_crc32c(0, &bad), Err(0));
        assert_eq!(frames_crc32c(0, &bytes[..5]), Err(0));
        assert_eq!(
            RecordWriter::new(Vec::new(), Compression::None)
                .unwrap()
                .stream_crc(),
            None
        );
    }

    fn framed_len(records: &[Vec<u8>]) -> usize {
        records
            .iter()
            .map(|r| r.len() + FRAME_OVERHEAD as usize)
            .sum()
    }

    const FOO: &[u8] = &[
        3, 0, 0, 0, 0, 0, 0, 0, 0xb0, 0x99, 0x49, 0x0e, b'f', b'o', b'o', 0x61, 0x8a, 0xbe, 0xfe,
    ];

    #[test]
    fn frame_record_is_write_record_and_frame_starts_walks_it() {
        let records: [&[u8]; 4] = [b"foo", b"", &[7u8; 300], b"xy"];
        let mut framed = Vec::new();
        for r in records {
            frame_record(&mut framed, r);
        }
        assert_eq!(framed, write(&records));
        assert_eq!(&framed[..FOO.len()], FOO);
        assert_eq!(frame_starts(&framed), Ok(vec![0, 19, 35, 351]));
        assert_eq!(frame_starts(&[]), Ok(vec![]));
        // Cut anywhere but at a frame boundary: refused at the frame that is cut.
        for cut in 1..framed.len() {
            let got = frame_starts(&framed[..cut]);
            match cut {
                19 | 35 | 351 => assert!(got.is_ok(), "{cut}"),
                _ => assert!(got.is_err(), "{cut}"),
            }
        }
        assert_eq!(frame_starts(&framed[..40]), Err(35));
        // Not at a frame: the length's CRC fails.
        assert_eq!(frame_starts(&framed[1..]), Err(0));
    }

    fn write(records: &[&[u8]]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), Compression::None).unwrap();
        for r in records {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn beam_golden_record() {
        assert_eq!(write(&[b"foo"]), FOO);
        let mut two = FOO.to_vec();
        two.extend_from_slice(&[
            3, 0, 0, 0, 0, 0, 0, 0, 0xb0, 0x99, 0x49, 0x0e, b'b', b'a', b'r', 0x46, 0x00, 0xe5,
            0xc8,
        ]);
        assert_eq!(write(&[b"foo", b"bar"]), two);
    }

    /// Bytes `tf.io.TFRecordWriter` (TensorFlow 2.21) wrote: records b"x" and b"y", each
    /// followed by `flush()`, as the file stood after the second flush and after `close()`.
    #[test]
    fn flush_bytes_equal_tensorflow() {
        fn hex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        const DEFLATED: &str = "62648000c6d27b8e1501b6ab120102881149a0b27de1e2688000";
        let cases = [
            (
                Compression::Gzip,
                format!("1f8b0800000000000003{DEFLATED}"),
                "03009f57a96122000000",
            ),
            (Compression::Zlib, format!("789c{DEFLATED}"), "030062dd07dc"),
        ];
        for (c, flushed, tail) in cases {
            let (flushed, closed_bytes) = (hex(&flushed), hex(&(flushed + tail)));
            let mut w = RecordWriter::new(Vec::new(), c).unwrap();
            w.write_record(b"x").unwrap();
            w.flush().unwrap();
            w.write_record(b"y").unwrap();
            w.flush().unwrap();
            assert_eq!(w.sink.get_ref(), &flushed, "{c} after flush");
            assert_eq!(w.finish().unwrap(), closed_bytes, "{c} after close");
            let mut r = RecordReader::new(Decoder::new(&flushed[..], c), true);
            let mut buf = Vec::new();
            assert_eq!(r.read_into(&mut buf).unwrap(), Some(0));
            assert_eq!(r.read_into(&mut buf).unwrap(), Some(17));
            assert_eq!(buf, b"y");
            let err = r.read_into(&mut buf).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Corrupt {
                        offset: 34,
                        kind: CorruptKind::Compression(_)
                    }
                ),
                "{c}: {err}"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let data = write(&[b"foo", b"hello world"]);
        for cut in 1..data.len() {
            let prefix = &data[..cut];
            let boundary = cut == FOO.len();
            let stream: Result<Vec<_>> = {
                let mut r = RecordReader::new(prefix, true);
                let mut buf = Vec::new();
                let mut out = Vec::new();
                loop {
                    match r.read_into(&mut buf) {
                        Ok(Some(at)) => out.push(at),
                        Ok(None) => break Ok(out),
                        Err(e) => break Err(e),
                    }
                }
            };
            let sliced: Result<Vec<_>> = SliceRecords::new(prefix, true)
                .map(|r| r.map(|(at, _)| at))
                .collect();
            assert_eq!(stream.is_err(), !boundary, "stream cut {cut}");
            assert_eq!(sliced.is_err(), !boundary, "slice cut {cut}");
            if let Err(Error::Corrupt { offset, kind }) = sliced {
                assert_eq!(offset, if cut < FOO.len() { 0 } else { FOO.len() as u64 });
                assert!(matches!(kind, CorruptKind::Truncated { .. }), "{kind}");
            }
        }
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let data = write(&[b"foo", b"hello world"]);
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            let r: Result<Vec<_>> = SliceRecords::new(&bad, true).collect();
            let Err(Error::Corrupt { offset, .. }) = r else {
                panic!("flip at {i} not detected");
            };
            assert_eq!(offset, if i < FOO.len() { 0 } else { FOO.len() as u64 });
        }
    }

    #[test]
    fn huge_length_does_not_allocate() {
        let mut header = [0u8; 12];
        header[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        let crc = masked_crc32c(&header[..8]);
        header[8..].copy_from_slice(&crc.to_le_bytes());
        let mut r = RecordReader::new(&header[..], true);
        let err = r.read_into(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
        assert!(SliceRecords::new(&header, true).next().unwrap().is_err());
        // Without a limit, the claim is checked against the bytes there are.
        let mut r = RecordReader::new(&header[..], true).with_max_record(u64::MAX);
        let err = r.read_into(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated record"), "{err}");
    }

    /// A claimed length over the limit is refused at the header: nothing after it is read,
    /// so a stream of zeros behind it costs nothing.
    #[test]
    fn a_length_over_the_limit_is_refused_before_reading() {
        struct Zeros(u64);
        impl Read for Zeros {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 += buf.len() as u64;
                buf.fill(0);
                Ok(buf.len())
            }
        }
        let mut data = write(&[b"ok", &[7u8; 100]]);
        let cut = data.len() - 100 - 16;
        data.truncate(cut);
        let mut header = (1u64 << 40).to_le_bytes().to_vec();
        let crc = masked_crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        data.extend_from_slice(&header);
        let zeros = Zeros(0);
        let mut r =
            RecordReader::new(io::Cursor::new(data.clone()).chain(zeros), true).with_max_record(64);
        let mut buf = Vec::new();
        assert_eq!(r.read_into(&mut buf).unwrap(), Some(0));
        let err = r.read_into(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "corrupt record at offset {cut}: record claims 1099511627776 bytes, more than \
                 the limit of 64 (max_record_bytes)"
            )
        );
        assert!(buf.capacity() < 1 << 20);
        // The limit is inclusive, and the same in memory.
        let two = write(&[&[1u8; 64], &[2u8; 65]]);
        let got: Vec<_> = SliceRecords::new(&two, true).with_max_record(64).collect();
        assert_eq!(got[0].as_ref().unwrap().1, &[1u8; 64][..]);
        assert!(matches!(
            got[1],
            Err(Error::Corrupt {
                offset: 80,
                kind: CorruptKind::TooLarge {
                    length: 65,
                    limit: 64
                }
            })
        ));
    }
}
