//! A walk over a record stream that survives damage: every intact record and every
//! damaged region, in stream order, reading the stream once, front to back, with memory
//! bounded by the largest record allowed (`max_record`) plus a read chunk.
//!
//! In step, each record is checked where the previous one ended (length CRC, length
//! against `max_record`, the whole record present, data CRC when verifying). After
//! anything fails there, the walk resynchronises: it tries every later offset, those
//! inside the damaged record's claimed length included (a torn write leaves intact
//! records there), and takes the first one holding a whole record whose length CRC and
//! data CRC both check. A damaged record whose successor starts exactly where its length
//! says counts as one lost record (its framing was intact); otherwise the number of
//! records lost in a region is unknown.
//!
//! A compressed stream that breaks off (bad block, bad checksum, cut short) ends the walk:
//! what was decompressed before is walked as usual, then [`SpanKind::StreamError`] says
//! where and why.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::ops::Range;

use crate::compression::compressed_stream_error;
use crate::crc::{crc32c_append, crc32c_combine, mask, masked_crc32c};

/// Bytes read from the stream at a time.
const CHUNK: usize = 1 << 20;

/// What a [`Span`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanKind {
    /// An intact record; its payload is [`Walker::payload`] until the next call.
    Record,
    /// A damaged region. `records` is 1 when it is exactly one framed record whose data
    /// CRC failed, else 0 (unknown).
    Damaged { reason: String, records: u64 },
    /// The compressed stream breaks off at `start` (bytes of record stream decompressed):
    /// the rest cannot be decompressed. Always the last span.
    StreamError(String),
}

/// A record or a damaged region: bytes `start..end` of the (decompressed) record stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub kind: SpanKind,
}

/// Where a walk reads its bytes from.
pub trait Source {
    /// Makes the bytes up to `end` available, or all there are; returns the end of what
    /// is available.
    fn fill_to(&mut self, end: u64) -> io::Result<u64>;
    /// Bytes `start..end`, all available and not released.
    fn bytes(&self, start: u64, end: u64) -> &[u8];
    /// Bytes before `before` will not be asked for again.
    fn release(&mut self, before: u64);
    /// Once the bytes have run out: why, when the stream broke off instead of ending.
    fn broken(&mut self) -> Option<String>;
}

/// An in-memory (or memory-mapped) record stream.
pub struct SliceSource<'a>(pub &'a [u8]);

impl Source for SliceSource<'_> {
    fn fill_to(&mut self, end: u64) -> io::Result<u64> {
        Ok(end.min(self.0.len() as u64))
    }

    fn bytes(&self, start: u64, end: u64) -> &[u8] {
        &self.0[start as usize..end as usize]
    }

    fn release(&mut self, _before: u64) {}

    fn broken(&mut self) -> Option<String> {
        None
    }
}

/// A record stream read from `R` (a file, or a [`crate::compression::Decoder`]), kept in
/// a window that holds only what the walk still needs.
pub struct ReadSource<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    error: Option<String>,
}

impl<R: Read> ReadSource<R> {
    pub fn new(inner: R) -> Self {
        ReadSource {
            inner,
            buf: Vec::new(),
            base: 0,
            eof: false,
            error: None,
        }
    }

    /// The reader below.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Source for ReadSource<R> {
    fn fill_to(&mut self, end: u64) -> io::Result<u64> {
        while !self.eof && self.base + (self.buf.len() as u64) < end {
            let before = self.buf.len();
            let step = (&mut self.inner)
                .take(CHUNK as u64)
                .read_to_end(&mut self.buf);
            match step {
                Ok(_) if self.buf.len() == before => self.eof = true,
                Ok(_) => {}
                Err(e) => match compressed_stream_error(&e) {
                    // What came before the error was appended; the stream ends there.
                    Some(msg) => {
                        self.error = Some(msg);
                        self.eof = true;
                    }
                    None => return Err(e),
                },
            }
        }
        Ok(end.min(self.base + self.buf.len() as u64))
    }

    fn bytes(&self, start: u64, end: u64) -> &[u8] {
        &self.buf[(start - self.base) as usize..(end - self.base) as usize]
    }

    fn release(&mut self, before: u64) {
        let k = before.saturating_sub(self.base) as usize;
        // Amortised: move the kept bytes down only once they are at most half the buffer.
        if k >= CHUNK && 2 * k >= self.buf.len() {
            let k = k.min(self.buf.len());
            self.buf.drain(..k);
            self.base += k as u64;
            if self.buf.capacity() > 4 * CHUNK.max(self.buf.len()) {
                self.buf.shrink_to(2 * CHUNK.max(self.buf.len()));
            }
        }
    }

    fn broken(&mut self) -> Option<String> {
        self.error.take()
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Walks a record stream; see the module documentation.
pub struct Walker<S: Source> {
    src: S,
    pos: u64,
    verify: bool,
    max_record: u64,
    done: bool,
    payload: Range<u64>,
    crcs: RangeCrcs,
}

impl<S: Source> Walker<S> {
    /// A walk from the start of `src`, checking data CRCs in step when `verify` (candidates
    /// for resynchronisation always have both checked) and refusing records over
    /// `max_record` bytes.
    pub fn new(src: S, verify: bool, max_record: u64) -> Self {
        Walker {
            src,
            pos: 0,
            verify,
            max_record,
            done: false,
            payload: 0..0,
            crcs: RangeCrcs::default(),
        }
    }

    /// The source below.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// The payload of the record the last call returned.
    pub fn payload(&self) -> &[u8] {
        self.src.bytes(self.payload.start, self.payload.end)
    }

    /// The next record or damaged region; `None` at the end. Only I/O errors of the
    /// source (not damage, not a broken compressed stream) are errors.
    pub fn next_span(&mut self) -> io::Result<Option<Span>> {
        if self.done {
            return Ok(None);
        }
        let pos = self.pos;
        self.src.release(self.crcs.keep_from(pos));
        self.payload = pos..pos;
        let avail = self.src.fill_to(pos + 12)?;
        if avail <= pos {
            self.done = true;
            return Ok(self.src.broken().map(|msg| Span {
                start: pos,
                end: pos,
                kind: SpanKind::StreamError(msg),
            }));
        }
        if avail < pos + 12 {
            self.pos = avail;
            let reason = format!("truncated record header: {} of 12 bytes", avail - pos);
            return Ok(Some(damaged(pos, avail, reason, 0)));
        }
        let header = self.src.bytes(pos, pos + 12);
        let length = u64_le(header);
        if masked_crc32c(&header[..8]) != u32_le(&header[8..]) {
            return self.resync(
                pos,
                "length CRC mismatch (not a record header)".into(),
                None,
            );
        }
        if length > self.max_record {
            let reason = format!(
                "record claims {length} bytes, more than the limit of {} (max_record_bytes)",
                self.max_record
            );
            return self.resync(pos, reason, None);
        }
        let end = pos.saturating_add(length).saturating_add(16);
        let avail = self.src.fill_to(end)?;
        if avail < end {
            let reason = format!(
                "truncated record: expected {} bytes, stream ends after {}",
                u128::from(length) + 16,
                avail - pos
            );
            return self.resync(pos, reason, None);
        }
        if self.verify {
            let stored = u32_le(self.src.bytes(end - 4, end));
            if self.crcs.masked(&self.src, pos + 12, end - 4) != stored {
                return self.resync(pos, "data CRC mismatch".into(), Some(end));
            }
        }
        self.payload = pos + 12..end - 4;
        self.pos = end;
        Ok(Some(Span {
            start: pos,
            end,
            kind: SpanKind::Record,
        }))
    }

    /// The damaged region from `start`. `claimed_end`: where the damaged record's
    /// (intact) length says it ends, when its data CRC failed. A torn write leaves a whole
    /// record inside that length: the region ends at the first one. Else it is one lost
    /// record and the walk goes on where it ends (what is there is checked in turn). Any
    /// other damage ends at the next valid record anywhere after `start`.
    fn resync(
        &mut self,
        start: u64,
        reason: String,
        claimed_end: Option<u64>,
    ) -> io::Result<Option<Span>> {
        if let Some(e) = claimed_end {
            if let Some(q) =
                find_valid(&mut self.src, &mut self.crcs, start + 1, e, self.max_record)?
            {
                self.pos = q;
                let reason = format!("{reason}; an intact record starts inside it at byte {q}");
                return Ok(Some(damaged(start, q, reason, 0)));
            }
            self.pos = e;
            return Ok(Some(damaged(start, e, reason, 1)));
        }
        let span = match find_valid(
            &mut self.src,
            &mut self.crcs,
            start + 1,
            u64::MAX,
            self.max_record,
        )? {
            Some(q) => {
                self.pos = q;
                damaged(
                    start,
                    q,
                    format!("{reason}; next valid record at byte {q}"),
                    0,
                )
            }
            None => {
                // The search read to the end: this is where the stream ends.
                let end = self.src.fill_to(u64::MAX)?;
                self.pos = end;
                if reason.starts_with("truncated") {
                    damaged(start, end, reason, 0)
                } else {
                    damaged(start, end, format!("{reason}; no valid record after it"), 0)
                }
            }
        };
        Ok(Some(span))
    }
}

fn damaged(start: u64, end: u64, reason: String, records: u64) -> Span {
    Span {
        start,
        end,
        kind: SpanKind::Damaged { reason, records },
    }
}

/// The first offset in `from..before` that holds a whole record of at most `max` bytes
/// whose length CRC and data CRC both check (the record itself may extend past
/// `before`); `None` when there is none. Bytes before the offset being tried are
/// released as the search goes (those `crcs` still needs kept), so memory stays within
/// one candidate record. Candidates' data CRCs come from `crcs`, the walk's: each byte
/// is hashed at most twice over, however many candidates claim it.
pub fn find_valid<S: Source>(
    src: &mut S,
    crcs: &mut RangeCrcs,
    from: u64,
    before: u64,
    max: u64,
) -> io::Result<Option<u64>> {
    let mut q = from;
    while q < before {
        src.release(crcs.keep_from(q));
        // The window: every offset with the 16 bytes of an empty record after it.
        let avail = src.fill_to(q.saturating_add(CHUNK as u64 + 16))?;
        if avail < q + 16 {
            return Ok(None); // fewer than 16 bytes left: no record fits
        }
        let last = (avail - 16).min(before - 1); // last offset tried in this window
        let mut candidate = None;
        {
            let window = src.bytes(q, last + 12);
            for (i, h) in window.windows(12).enumerate() {
                let length = u64_le(h);
                if length > max {
                    continue;
                }
                let stored = u32_le(&h[8..]);
                if (length == 0 && stored == 0) || masked_crc32c(&h[..8]) != stored {
                    continue;
                }
                candidate = Some((q + i as u64, length));
                break;
            }
        }
        let Some((at, length)) = candidate else {
            q = last + 1;
            continue;
        };
        // (a length near u64::MAX, under a `max` that large: no record fits)
        if let Some(end) = at.checked_add(16).and_then(|e| e.checked_add(length)) {
            if src.fill_to(end)? >= end
                && crcs.masked(src, at + 12, end - 4) == u32_le(src.bytes(end - 4, end))
            {
                return Ok(Some(at));
            }
        }
        q = at + 1;
    }
    Ok(None)
}

/// The data CRCs a walk checks: of records in step, and of resynchronisation's
/// candidates. Records claim byte ranges; where one claims bytes an earlier check
/// already hashed (back-to-back crafted headers each claiming `L` bytes, or a header
/// claiming `L` before each small record), its CRC comes from prefix CRCs of the bytes
/// ([`Prefixes`]) instead of hashing them again: a walk costs O(size), not O(size x `L`)
/// (2.1 MB of headers claiming 1 MiB each took 5.6 s to count with `--verify`). Bytes
/// hashed for the first time, and short ranges, are hashed whole, as before.
#[derive(Default)]
pub struct RangeCrcs {
    prefixes: Option<Prefixes>,
    /// The end of the furthest range hashed whole.
    hashed_to: u64,
    /// Bytes hashed so far (whole ranges and prefix CRCs).
    hashed: u64,
    /// Every range hashed whole (the tests' oracle: the walk as it was).
    #[cfg(test)]
    whole: bool,
}

impl RangeCrcs {
    /// Where the bytes that a walk now at `pos` still needs start (at most `pos`).
    pub fn keep_from(&mut self, pos: u64) -> u64 {
        self.prefixes.as_mut().map_or(pos, |p| p.forget(pos))
    }

    /// The masked CRC32C of bytes `start..end` of `src` (available; `start` at or after
    /// the last position given to [`RangeCrcs::keep_from`]).
    pub fn masked<S: Source + ?Sized>(&mut self, src: &S, start: u64, end: u64) -> u32 {
        #[cfg(test)]
        let whole = self.whole;
        #[cfg(not(test))]
        let whole = false;
        if whole || end - start <= 2 * STEP || start >= self.hashed_to {
            self.hashed_to = self.hashed_to.max(end);
            self.hashed += end - start;
            return masked_crc32c(src.bytes(start, end));
        }
        self.hashed_to = self.hashed_to.max(end);
        let prefixes = match &mut self.prefixes {
            Some(p) if p.first_pos() <= start => p,
            slot => slot.insert(Prefixes::new(start)),
        };
        mask(prefixes.range(src, start, end, &mut self.hashed))
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }
}

/// Bytes between two prefix CRCs of [`Prefixes`].
const STEP: u64 = 4 << 10;

/// CRC32Cs of the bytes from `base` to every `base + j * STEP`, made as far as asked and
/// dropped behind the search. The CRC of any range of those bytes follows from the
/// prefix CRCs at its two ends (`crc(b) = crc(a || b) ^ crc(a) * x^(8 len(b))`), each
/// carried on over fewer than [`STEP`] bytes, so no byte is hashed twice over.
struct Prefixes {
    base: u64,
    /// `crcs[k]` is the CRC of the bytes from `base` to `base + (first + k) * STEP`.
    first: u64,
    crcs: VecDeque<u32>,
    /// The last CRC asked for the starts of ranges, and for their ends, with its
    /// position: the next one, a little further on, is carried on from there (a
    /// candidate every few bytes costs those bytes, not up to [`STEP`] each).
    last: [(u64, u32); 2],
}

impl Prefixes {
    fn new(base: u64) -> Self {
        Prefixes {
            base,
            first: 0,
            crcs: VecDeque::from([0]),
            last: [(base, 0); 2],
        }
    }

    /// Drops the prefix CRCs no offset from `q` on needs; returns the position of the
    /// first one kept (bytes from there on are still needed).
    fn forget(&mut self, q: u64) -> u64 {
        if q <= self.first_pos() {
            return q; // (a search from before them: all are kept)
        }
        let last = self.first + self.crcs.len() as u64 - 1;
        if self.base + last * STEP <= q {
            // None made past `q` (no candidate since): start again from there.
            *self = Prefixes::new(q);
            return q;
        }
        let keep = (q - self.base) / STEP; // (below `last`: one is kept)
        while self.first < keep {
            self.crcs.pop_front();
            self.first += 1;
        }
        self.base + self.first * STEP
    }

    /// Where the first prefix CRC kept is.
    fn first_pos(&self) -> u64 {
        self.base + self.first * STEP
    }

    /// CRC32C of the bytes from `base` to `pos` (available in `src`).
    fn at<S: Source + ?Sized>(&mut self, src: &S, pos: u64, end: usize, hashed: &mut u64) -> u32 {
        let j = (pos - self.base) / STEP;
        while self.first + (self.crcs.len() as u64) <= j {
            let k = self.first + self.crcs.len() as u64 - 1;
            let start = self.base + k * STEP;
            let last = *self.crcs.back().expect("never empty");
            let crc = crc32c_append(last, src.bytes(start, start + STEP));
            self.crcs.push_back(crc);
            *hashed += STEP;
        }
        let (mut start, mut crc) = (self.base + j * STEP, self.crcs[(j - self.first) as usize]);
        let (at, last) = self.last[end];
        if start <= at && at <= pos {
            (start, crc) = (at, last);
        }
        *hashed += pos - start;
        let crc = crc32c_append(crc, src.bytes(start, pos));
        self.last[end] = (pos, crc);
        crc
    }

    /// CRC32C of the bytes `start..end` (available in `src`), `start` at or after the
    /// last position given to [`Prefixes::forget`].
    fn range<S: Source + ?Sized>(&mut self, src: &S, start: u64, end: u64, n: &mut u64) -> u32 {
        let (a, ab) = (self.at(src, start, 0, n), self.at(src, end, 1, n));
        ab ^ crc32c_combine(a, 0, end - start)
    }
}

/// [`find_valid`] over an in-memory record stream, from `from` to the end.
pub fn next_valid(data: &[u8], from: usize, max: u64) -> Option<usize> {
    let mut src = SliceSource(data);
    match find_valid(
        &mut src,
        &mut RangeCrcs::default(),
        from as u64,
        u64::MAX,
        max,
    ) {
        Ok(Some(q)) => Some(q as usize),
        _ => None,
    }
}

/// A reader that counts the bytes read through it (how far into the file a walk is).
pub struct Counting<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        (
            Counting {
                inner,
                count: count.clone(),
            },
            count,
        )
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::{Compression, Decoder, Encoder};
    use crate::framing::RecordWriter;
    use std::io::Write;

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), Compression::None).unwrap();
        w.write_record(data).unwrap();
        w.finish().unwrap()
    }

    fn spans<S: Source>(mut w: Walker<S>) -> Vec<(u64, u64, String, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(s) = w.next_span().unwrap() {
            let (what, payload) = match s.kind {
                SpanKind::Record => ("ok".to_string(), w.payload().to_vec()),
                SpanKind::Damaged { reason, records } => (format!("{records}:{reason}"), vec![]),
                SpanKind::StreamError(msg) => (format!("stream:{msg}"), vec![]),
            };
            out.push((s.start, s.end, what, payload));
        }
        out
    }

    fn walk_both(data: &[u8], max: u64) -> Vec<(u64, u64, String, Vec<u8>)> {
        let a = spans(Walker::new(SliceSource(data), true, max));
        let b = spans(Walker::new(ReadSource::new(data), true, max));
        assert_eq!(a, b);
        a
    }

    #[test]
    fn a_flipped_data_byte_loses_one_record() {
        let (a, b, c) = (frame(b"first"), frame(b"second"), frame(b"third"));
        let mut data = [a.clone(), b.clone(), c.clone()].concat();
        data[a.len() + 14] ^= 1;
        let got = walk_both(&data, 1 << 20);
        let ends = (a.len() as u64, (a.len() + b.len()) as u64);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            (ends.0, ends.1, "1:data CRC mismatch".into(), vec![])
        );
        assert_eq!(got[2].3, b"third");
    }

    #[test]
    fn a_torn_write_keeps_the_record_inside_the_claimed_length() {
        // Record A claims 100 bytes, but only 10 were written before B, whole, was.
        let a = frame(&[9u8; 100]);
        let b = frame(b"intact");
        let c = frame(b"after");
        let mut data = a[..22].to_vec();
        data.extend_from_slice(&b);
        data.extend_from_slice(&c);
        data.extend_from_slice(&[0u8; 200]);
        let got = walk_both(&data, 1 << 20);
        assert_eq!(got[0].0, 0);
        assert_eq!(got[0].1, 22);
        assert!(got[0].2.contains("inside it at byte 22"), "{}", got[0].2);
        assert_eq!(got[1].3, b"intact");
        assert_eq!(got[2].3, b"after");
        assert!(
            got[3].2.starts_with("0:length CRC mismatch"),
            "{}",
            got[3].2
        );
    }

    #[test]
    fn a_huge_length_with_a_valid_crc_loses_nothing_after_it() {
        let mut header = (1u64 << 40).to_le_bytes().to_vec();
        let crc = masked_crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let mut data = frame(b"before");
        let at = data.len() as u64;
        data.extend_from_slice(&header);
        data.extend_from_slice(&[0u8; 5000]);
        data.extend_from_slice(&frame(b"kept"));
        let got = walk_both(&data, 1 << 30);
        assert_eq!(got[0].3, b"before");
        assert_eq!(got[1].0, at);
        assert!(got[1].2.contains("more than the limit"), "{}", got[1].2);
        assert_eq!(got[2].3, b"kept");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn every_cut_and_flip_keeps_every_untouched_record() {
        let records: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 3 + 7 * i as usize]).collect();
        let framed: Vec<Vec<u8>> = records.iter().map(|r| frame(r)).collect();
        let data = framed.concat();
        let mut starts = vec![0usize];
        for f in &framed {
            starts.push(starts.last().unwrap() + f.len());
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x20;
            let hit = starts.iter().rposition(|&s| s <= i).unwrap();
            let kept: Vec<Vec<u8>> = walk_both(&bad, 1 << 20)
                .into_iter()
                .filter(|s| s.2 == "ok")
                .map(|s| s.3)
                .collect();
            let expected: Vec<Vec<u8>> = (0..records.len())
                .filter(|&k| k != hit)
                .map(|k| records[k].clone())
                .collect();
            assert_eq!(kept, expected, "flip at {i}");
        }
        for cut in 0..data.len() {
            let whole = starts.iter().filter(|&&s| s > 0 && s <= cut).count();
            let got = walk_both(&data[..cut], 1 << 20);
            let kept = got.iter().filter(|s| s.2 == "ok").count();
            assert_eq!(kept, whole, "cut at {cut}");
            assert_eq!(got.last().map_or(0, |s| s.1), cut as u64);
        }
    }

    #[test]
    fn a_broken_compressed_stream_keeps_what_came_before() {
        let records: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| (0..200u32).map(|j| (i * 7 + j * 13) as u8).collect())
            .collect();
        let mut w = Encoder::new(Vec::new(), Compression::Gzip).unwrap();
        for r in &records {
            w.write_all(&frame(r)).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad.truncate(mid);
        let got = spans(Walker::new(
            ReadSource::new(Decoder::new(&bad[..], Compression::Gzip)),
            true,
            1 << 20,
        ));
        let kept = got.iter().filter(|s| s.2 == "ok").count();
        let last = got.last().unwrap();
        assert!(last.2.starts_with("stream:"), "{}", last.2);
        // All but the record the cut fell in (and what zlib held back) survive.
        assert!(kept >= 1400, "{kept}");
        for (s, r) in got.iter().filter(|s| s.2 == "ok").zip(&records) {
            assert_eq!(&s.3, r);
        }
    }

    #[test]
    fn memory_stays_bounded_by_the_limit() {
        // 64 MB of zeros after a 2^40 claim, read through a window.
        struct Zeros(u64);
        impl Read for Zeros {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = (buf.len() as u64).min(self.0) as usize;
                buf[..n].fill(0);
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let mut header = (1u64 << 40).to_le_bytes().to_vec();
        let crc = masked_crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let src = ReadSource::new(io::Cursor::new(header).chain(Zeros(64 << 20)));
        let mut w = Walker::new(src, true, 1 << 20);
        let span = w.next_span().unwrap().unwrap();
        assert_eq!(span.end, (64 << 20) + 12);
        assert!(w.source().buf.capacity() <= 8 * CHUNK);
        assert!(w.next_span().unwrap().is_none());
    }

    /// [`find_valid`] as it was: each candidate's data hashed whole.
    fn find_valid_plainly(data: &[u8], from: usize, before: usize, max: u64) -> Option<usize> {
        (from..before.min(data.len().saturating_sub(15))).find(|&at| {
            let h = &data[at..at + 12];
            let (length, stored) = (u64_le(h), u32_le(&h[8..]));
            let end = (at as u64).saturating_add(16).saturating_add(length);
            length <= max
                && !(length == 0 && stored == 0)
                && masked_crc32c(&h[..8]) == stored
                && end <= data.len() as u64
                && masked_crc32c(&data[at + 12..end as usize - 4])
                    == u32_le(&data[end as usize - 4..end as usize])
        })
    }

    /// A reader that gives at most `n` bytes a call.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn candidates_are_checked_from_prefix_crcs_as_when_hashed_whole() {
        // Noise with headers planted at random offsets: lengths whose frame is whole,
        // cut by the end, or past `max`; data CRCs that fail, and a few that hold (a
        // whole frame planted). Searches start and stop at random offsets across many
        // prefix steps, through a slice and through a stream read in small pieces.
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1d);
        for round in 0..40 {
            let size = 1 + next(6 * STEP as usize);
            let mut data: Vec<u8> = (0..size).map(|_| next(256) as u8).collect();
            for _ in 0..next(40) {
                let at = next(size);
                let length = next(3 * STEP as usize) as u64;
                let mut header = length.to_le_bytes().to_vec();
                header.extend_from_slice(&masked_crc32c(&header).to_le_bytes());
                let planted = if next(4) == 0 {
                    frame(&data[..(length as usize).min(size)])
                } else {
                    header
                };
                let n = planted.len().min(size - at);
                data[at..at + n].copy_from_slice(&planted[..n]);
            }
            let max = [u64::MAX, 1 << 30, STEP][round % 3];
            // Searches from increasing offsets, as one walk makes them, sharing its CRCs
            // (and its stream, read from the start in pieces of any size).
            let mut froms: Vec<usize> = (0..20).map(|_| next(size)).collect();
            froms.sort_unstable();
            let (mut on_slice, mut on_stream) = (RangeCrcs::default(), RangeCrcs::default());
            let mut stream = ReadSource::new(Dribble(&data, 1 + next(5000)));
            for from in froms {
                let before = from + next(size - from + 1);
                let expected = find_valid_plainly(&data, from, before, max);
                let (from64, before64) = (from as u64, before as u64);
                let mut slice = SliceSource(&data);
                let got = find_valid(&mut slice, &mut on_slice, from64, before64, max);
                assert_eq!(got.unwrap().map(|q| q as usize), expected, "round {round}");
                let got = find_valid(&mut stream, &mut on_stream, from64, before64, max);
                assert_eq!(got.unwrap().map(|q| q as usize), expected, "round {round}");
            }
        }
    }

    /// Each span of a walk: its ends, kind and reason, and payload.
    type Walked = Vec<(u64, u64, String, Vec<u8>)>;

    /// A walk's spans over `data` (checking data CRCs), and the bytes it hashed; with
    /// `whole`, every data CRC hashed whole (the walk as it was).
    fn walk_cost(data: &[u8], max: u64, whole: bool) -> (Walked, u64) {
        let mut w = Walker::new(SliceSource(data), true, max);
        w.crcs.whole = whole;
        let mut out = Vec::new();
        while let Some(s) = w.next_span().unwrap() {
            let what = match s.kind {
                SpanKind::Record => "ok".to_string(),
                SpanKind::Damaged { reason, records } => format!("{records}:{reason}"),
                SpanKind::StreamError(msg) => msg,
            };
            out.push((s.start, s.end, what, w.payload().to_vec()));
        }
        (out, w.crcs.hashed())
    }

    fn header(length: u64) -> Vec<u8> {
        let mut h = length.to_le_bytes().to_vec();
        h.extend_from_slice(&masked_crc32c(&h).to_le_bytes());
        h
    }

    #[test]
    fn overlapping_claims_are_hashed_once_over_the_whole_walk() {
        // helper-54's layouts: a header claiming L before each small record (checked in
        // step), a stray byte then such a header before each (found by resyncs, a search
        // each), and back-to-back headers (one long search). Each costs O(size x L)
        // when every claim is hashed whole; here a few times the size, the same spans.
        let claim: u64 = 32 << 10;
        let small = frame(b"kept");
        let layouts: [(&str, Vec<u8>); 3] = [
            ("claim, record", [header(claim), small.clone()].concat()),
            (
                "byte, claim, record",
                [vec![0xff], header(claim), small.clone()].concat(),
            ),
            ("claims", header(claim)),
        ];
        for (name, unit) in layouts {
            let mut data = unit.repeat((256 << 10) / unit.len());
            data.extend_from_slice(&small);
            data.extend_from_slice(&vec![0u8; claim as usize + 64]);
            let (spans, hashed) = walk_cost(&data, 1 << 30, false);
            let (plain, plain_hashed) = walk_cost(&data, 1 << 30, true);
            assert_eq!(spans, plain, "{name}");
            assert!(spans.iter().any(|s| s.3 == b"kept"), "{name}");
            let size = data.len() as u64;
            assert!(
                hashed <= 4 * size,
                "{name}: {hashed} bytes hashed for {size}"
            );
            assert!(
                plain_hashed > 20 * size,
                "{name}: {plain_hashed} (the layout is not hostile)"
            );
        }
    }

    #[test]
    fn random_damage_walks_as_when_every_crc_is_hashed_whole() {
        let records: Vec<Vec<u8>> = (0..40u32)
            .map(|i| vec![(i * 7) as u8; [10, 5000, 9000, 20_000][i as usize % 4]])
            .collect();
        let clean: Vec<u8> = records.iter().flat_map(|r| frame(r)).collect();
        let mut next = crate::testing::below(0x853c_49e6_748f_ea9b);
        for _ in 0..60 {
            let mut data = clean.clone();
            for _ in 0..1 + next(4) {
                let at = next(data.len() - 12);
                match next(3) {
                    0 => data[at] ^= 1 << next(8),
                    1 => data[at..at + 12].copy_from_slice(&header(next(40_000) as u64)),
                    _ => data.truncate(at.max(1)),
                }
            }
            assert_eq!(
                walk_cost(&data, 1 << 30, false).0,
                walk_cost(&data, 1 << 30, true).0
            );
        }
    }

    #[test]
    fn a_claim_near_u64_max_is_no_record() {
        // 8 stray bytes, then a header claiming 2^64 - 1 bytes (under a limit that large):
        // no panic, and no record found there.
        let mut data = vec![7u8; 8];
        data.extend_from_slice(&header(u64::MAX));
        data.extend_from_slice(&[1, 2, 3]);
        data.extend_from_slice(&frame(b"after"));
        let mut crcs = RangeCrcs::default();
        let got = find_valid(&mut SliceSource(&data), &mut crcs, 0, u64::MAX, u64::MAX);
        assert_eq!(got.unwrap(), Some(23));
    }
}
