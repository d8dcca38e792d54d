//! Checking a record stream without materialising it: a framing walk that survives
//! damage (resynchronising on the next valid header), and per-record feature statistics
//! (kind, number of values, sum of int64 values) from which a schema check is made
//! without decoding any value into an object.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::crc::{crc32c, crc32c_combine, crc32c_threads, mask, masked_crc32c};
use crate::error::Result;
use crate::example::parse_map_entry;
use crate::parallel::map_parts;
use crate::walker::{SliceSource, SpanKind, Walker};
use crate::wire::{for_each_len_field, Cursor, WT_FIXED32, WT_LEN, WT_VARINT};

/// A damaged region of the stream (a record whose data CRC fails is one too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub start: usize,
    pub end: usize,
    /// Records (intact or failing only their data CRC) before this region.
    pub record: usize,
    pub reason: String,
}

/// Every framed record (intact header, whole record present) and every damaged region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Offset and framed size (payload + 16) of each framed record.
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Whether each framed record's data CRC checks (all true when not verified).
    pub crc_ok: Vec<bool>,
    /// Damaged regions in stream order.
    pub damage: Vec<Damage>,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Walks a plain record stream. Headers are checked (length CRC, length at most
/// `max_record`) one after the other, and with `verify` data CRCs on `threads` threads.
/// A stream with any damage is walked again by the resynchronising walk of
/// [`crate::walker`] (one thread; damage is rare): after a damaged record the walk goes on
/// at the next offset holding a whole record whose two CRCs check. A record whose data
/// CRC fails and whose successor starts where its length says is one lost record.
pub fn walk(buf: &[u8], verify: bool, threads: usize, max_record: u64) -> Walk {
    walk_impl(buf, verify, threads, false, max_record).0
}

/// [`walk`] with data CRCs verified, plus the CRC32C of the whole buffer (the shard
/// checksum), computed in the same pass: each thread hashes its part of the buffer a
/// window ahead of the records it checks, so the record CRCs read bytes still in cache,
/// and a large record's data CRC is combined into the buffer's instead of read twice.
pub fn walk_checksummed(buf: &[u8], threads: usize, max_record: u64) -> (Walk, u32) {
    let (w, crc) = walk_impl(buf, true, threads, true, max_record);
    (w, crc.expect("asked for"))
}

/// Where the record whose header is at `pos` ends (its footer included), when the header
/// is whole, its length CRC checks, the length is at most `max_record` and the record
/// fits in `buf`; None otherwise (damage).
fn record_end(buf: &[u8], pos: usize, max_record: u64) -> Option<usize> {
    let n = buf.len();
    if n - pos < 12 || masked_crc32c(&buf[pos..pos + 8]) != u32_at(buf, pos + 8) {
        return None;
    }
    let length = u64_at(buf, pos);
    usize::try_from(length)
        .ok()
        .filter(|_| length <= max_record)
        .and_then(|l| l.checked_add(pos + 16))
        .filter(|&e| e <= n)
}

fn walk_impl(
    buf: &[u8],
    verify: bool,
    threads: usize,
    file_crc: bool,
    max_record: u64,
) -> (Walk, Option<u32>) {
    let threads = threads.clamp(1, crate::MAX_THREADS);
    if verify && threads > 1 {
        return walk_windows(buf, threads, file_crc, max_record, WALK_WINDOW);
    }
    let n = buf.len();
    let mut out = Walk::default();
    let mut pos = 0usize;
    let mut damaged = false;
    while pos < n {
        let Some(end) = record_end(buf, pos, max_record) else {
            damaged = true;
            break;
        };
        out.offsets.push(pos as u64);
        out.sizes.push((end - pos) as u64);
        pos = end;
    }
    out.crc_ok = vec![true; out.offsets.len()];
    if damaged {
        return careful(buf, verify, threads, file_crc, max_record);
    }
    let mut crc = None;
    if verify {
        crc = check_data_crcs(buf, &mut out, threads.max(1), file_crc);
        if out.crc_ok.iter().any(|ok| !ok) {
            return careful(buf, verify, threads, file_crc, max_record);
        }
    } else if file_crc {
        crc = Some(crc32c_threads(buf, threads.max(1)));
    }
    (out, crc)
}

/// Bytes of records per window handed to a checking thread by [`walk_windows`].
const WALK_WINDOW: usize = 8 << 20;

/// One window of records for a checking thread: the `k`th, its records' offsets and
/// sizes, and the part of the buffer it covers (`lo..hi`, contiguous with its neighbours').
struct Job {
    k: usize,
    offsets: Vec<u64>,
    sizes: Vec<u64>,
    span: (usize, usize),
}

/// A window's outcome: its data CRCs, and the CRC32C of its part of the buffer.
type Checked = (usize, Vec<bool>, u32, u64);

/// The walk of `walk_impl` with data CRCs verified on `threads` threads while this one
/// walks the headers: window after window (`window` bytes of records) goes to the checking
/// threads through a bounded queue, so the walk (which faults in each header's page) runs
/// ahead of the CRCs instead of walking the whole buffer before the first CRC (as scans
/// do). Each window's part of the buffer is hashed by its thread and the parts' CRCs
/// combined in order. Any damage, in a header or a data CRC, ends in [`careful`].
fn walk_windows(
    buf: &[u8],
    threads: usize,
    file_crc: bool,
    max_record: u64,
    window: usize,
) -> (Walk, Option<u32>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::sync::Mutex;

    let n = buf.len();
    let mut out = Walk::default();
    let failed = AtomicBool::new(false);
    let checked: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
    let (jobs, queue) = sync_channel::<Job>(threads);
    let queue: Mutex<Receiver<Job>> = Mutex::new(queue);
    let check = || loop {
        let Ok(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).recv() else {
            return;
        };
        if failed.load(Ordering::Relaxed) {
            continue; // the careful walk redoes everything
        }
        let mut oks = vec![true; job.offsets.len()];
        let crc = check_part(
            buf,
            &job.offsets,
            &job.sizes,
            0,
            &mut oks,
            job.span,
            file_crc,
        );
        if oks.iter().any(|ok| !ok) {
            failed.store(true, Ordering::Relaxed);
        }
        let len = (job.span.1 - job.span.0) as u64;
        checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((job.k, oks, crc, len));
    };
    let damaged = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(check);
        }
        let (mut pos, mut k) = (0usize, 0usize);
        let damaged = loop {
            let (first, lo) = (out.offsets.len(), pos);
            let mut bytes = 0usize;
            let mut damaged = false;
            while pos < n && bytes < window {
                let Some(end) = record_end(buf, pos, max_record) else {
                    damaged = true;
                    break;
                };
                out.offsets.push(pos as u64);
                out.sizes.push((end - pos) as u64);
                bytes += end - pos;
                pos = end;
            }
            if damaged || failed.load(Ordering::Relaxed) {
                break true;
            }
            if out.offsets.len() > first {
                let job = Job {
                    k,
                    offsets: out.offsets[first..].to_vec(),
                    sizes: out.sizes[first..].to_vec(),
                    span: (lo, pos),
                };
                if jobs.send(job).is_err() {
                    break true; // (the checkers are gone: only by a panic, resumed below)
                }
                k += 1;
            }
            if pos >= n {
                break false;
            }
        };
        drop(jobs); // the checkers end once the queue is empty
        damaged
    });
    if damaged || failed.load(Ordering::Relaxed) {
        return careful(buf, true, threads, file_crc, max_record);
    }
    let mut checked = checked.into_inner().unwrap_or_else(|p| p.into_inner());
    checked.sort_unstable_by_key(|c| c.0);
    let mut crc = 0u32;
    out.crc_ok.reserve(out.offsets.len());
    for (_, oks, part, len) in checked {
        out.crc_ok.extend(oks);
        crc = crc32c_combine(crc, part, len);
    }
    (out, file_crc.then_some(crc))
}

/// The walk of a damaged stream, by [`crate::walker::Walker`].
fn careful(
    buf: &[u8],
    verify: bool,
    threads: usize,
    file_crc: bool,
    max_record: u64,
) -> (Walk, Option<u32>) {
    let mut out = Walk::default();
    let mut walker = Walker::new(SliceSource(buf), verify, max_record);
    while let Ok(Some(span)) = walker.next_span() {
        let (start, end) = (span.start as usize, span.end as usize);
        match span.kind {
            SpanKind::Record => {
                out.offsets.push(span.start);
                out.sizes.push(span.end - span.start);
                out.crc_ok.push(true);
            }
            SpanKind::Damaged { reason, records } => {
                out.damage.push(Damage {
                    start,
                    end,
                    record: out.offsets.len(),
                    reason,
                });
                if records == 1 {
                    out.offsets.push(span.start);
                    out.sizes.push(span.end - span.start);
                    out.crc_ok.push(false);
                }
            }
            SpanKind::StreamError(_) => {}
        }
    }
    (out, file_crc.then(|| crc32c_threads(buf, threads.max(1))))
}

/// How far ahead of the records being checked the buffer's CRC is computed.
const WINDOW: usize = 256 << 10;

/// Records of at least this size have their data CRC combined into the buffer's (two
/// combines, ~1 µs) rather than their bytes hashed twice (once from cache).
const COMBINE_MIN: usize = 64 << 10;

/// Extends `acc`, the CRC32C of the bytes hashed so far (up to `*hashed`), to `to`.
fn hash_to(buf: &[u8], acc: &mut u32, hashed: &mut usize, to: usize) {
    if to > *hashed {
        *acc = crc32c_combine(*acc, crc32c(&buf[*hashed..to]), (to - *hashed) as u64);
        *hashed = to;
    }
}

/// Checks the data CRCs of records `first..first + oks.len()`; with `file_crc`, also
/// returns the CRC32C of `buf[lo..hi]`, the part of the buffer these records are in.
#[allow(clippy::too_many_arguments)]
fn check_part(
    buf: &[u8],
    offsets: &[u64],
    sizes: &[u64],
    first: usize,
    oks: &mut [bool],
    (lo, hi): (usize, usize),
    file_crc: bool,
) -> u32 {
    let (mut acc, mut hashed) = (0u32, lo);
    for (j, ok) in oks.iter_mut().enumerate() {
        let start = offsets[first + j] as usize;
        let end = start + sizes[first + j] as usize;
        let data = &buf[start + 12..end - 4];
        let stored = u32_at(buf, end - 4);
        if file_crc && data.len() >= COMBINE_MIN && hashed <= start + 12 {
            hash_to(buf, &mut acc, &mut hashed, start + 12);
            let crc = crc32c(data);
            *ok = mask(crc) == stored;
            acc = crc32c_combine(acc, crc, data.len() as u64);
            hashed = end - 4;
            continue;
        }
        if file_crc && hashed < end {
            let to = end.max(hashed + WINDOW).min(hi);
            hash_to(buf, &mut acc, &mut hashed, to);
        }
        *ok = masked_crc32c(data) == stored;
    }
    if file_crc {
        hash_to(buf, &mut acc, &mut hashed, hi);
    }
    acc
}

fn check_data_crcs(buf: &[u8], out: &mut Walk, threads: usize, file_crc: bool) -> Option<u32> {
    let offsets = &out.offsets;
    let sizes = &out.sizes;
    let total = offsets.len();
    if total == 0 {
        return file_crc.then(|| crc32c_threads(buf, threads));
    }
    let chunk = total.div_ceil(threads).max(1);
    let parts = total.div_ceil(chunk);
    // Part k hashes from its first record (byte 0 for the first part) to the next part's.
    let bound = |k: usize| match k {
        0 => 0,
        k if k == parts => buf.len(),
        k => offsets[k * chunk] as usize,
    };
    let crcs: Vec<(u32, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .crc_ok
            .chunks_mut(chunk)
            .enumerate()
            .map(|(k, oks)| {
                let range = (bound(k), bound(k + 1));
                s.spawn(move || {
                    let crc = check_part(buf, offsets, sizes, k * chunk, oks, range, file_crc);
                    (crc, (range.1 - range.0) as u64)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("CRC thread panicked"))
            .collect()
    });
    let crc = crcs
        .into_iter()
        .fold(0u32, |acc, (crc, len)| crc32c_combine(acc, crc, len));
    file_crc.then_some(crc)
}

/// Kind codes in [`Stats::kinds`].
pub const MISSING: i8 = -1;
pub const NO_KIND: i8 = 0;
pub const BYTES: i8 = 1;
pub const FLOAT: i8 = 2;
pub const INT64: i8 = 3;

/// Per record and wanted feature (row-major, `records x features`): the kind found
/// (`MISSING`, `NO_KIND`, `BYTES`, `FLOAT`, `INT64`), the number of values and, where
/// asked, the sum of the int64 values. A record that does not parse as a
/// `tf.train.Example` is listed in `errors` (its statistics are left as missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub kinds: Vec<i8>,
    pub counts: Vec<u64>,
    pub sums: Vec<i64>,
    pub errors: Vec<(usize, String)>,
}

const MSG: &str = "tf.train.Example";

#[derive(Clone, Copy, Default)]
struct FeatureStat {
    kind: i8,
    count: u64,
    sum: i64,
}

/// Statistics of `records` for the features `names`; `sums[i]` asks for the sum of
/// feature `i`'s int64 values. Every record is parsed whole (unwanted features too), so
/// a record is an error exactly when `decode_example` would reject it.
pub fn feature_stats<'r, I>(records: I, names: &[&[u8]], sums: &[bool]) -> Stats
where
    I: IntoIterator<Item = &'r [u8]>,
{
    let index: HashMap<&[u8], usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let nf = names.len();
    let mut out = Stats::default();
    let mut row = vec![
        FeatureStat {
            kind: MISSING,
            count: 0,
            sum: 0
        };
        nf
    ];
    for (r, record) in records.into_iter().enumerate() {
        row.iter_mut().for_each(|s| {
            *s = FeatureStat {
                kind: MISSING,
                count: 0,
                sum: 0,
            }
        });
        if let Err(e) = stats_one(record, &index, sums, &mut row) {
            out.errors.push((r, e.to_string()));
            row.iter_mut().for_each(|s| s.kind = MISSING);
        }
        for s in &row {
            out.kinds.push(s.kind);
            out.counts.push(s.count);
            out.sums.push(s.sum);
        }
    }
    out
}

/// [`feature_stats`] of a slice of records on `threads` threads (contiguous parts).
pub fn feature_stats_threads(
    records: &[&[u8]],
    names: &[&[u8]],
    sums: &[bool],
    threads: usize,
) -> Stats {
    let threads = threads.clamp(1, crate::MAX_THREADS);
    let bytes: usize = records.iter().map(|r| r.len()).sum();
    if threads == 1 || records.len() < 2 * threads || bytes < (1 << 20) {
        return feature_stats(records.iter().copied(), names, sums);
    }
    let parts = map_parts(records, threads, |part| {
        feature_stats(part.iter().copied(), names, sums)
    });
    let mut out = Stats::default();
    for (start, mut part) in parts {
        out.kinds.append(&mut part.kinds);
        out.counts.append(&mut part.counts);
        out.sums.append(&mut part.sums);
        out.errors
            .extend(part.errors.into_iter().map(|(i, e)| (start + i, e)));
    }
    out
}

fn stats_one(
    buf: &[u8],
    index: &HashMap<&[u8], usize>,
    sums: &[bool],
    row: &mut [FeatureStat],
) -> Result<()> {
    for_each_len_field(buf, 0, MSG, 1, |features, at| {
        for_each_len_field(features, at, MSG, 1, |entry, at| {
            let (key, stat) = entry_stat(entry, at)?;
            if let Some(&i) = index.get(key.as_ref()) {
                // A repeated key: the map keeps the last entry.
                row[i] = stat;
                if !sums.get(i).copied().unwrap_or(false) {
                    row[i].sum = 0;
                }
            }
            Ok(())
        })
    })
}

/// One map entry `{key, Feature}`: its key and the merged statistics of its Feature
/// messages (a repeated value merges: the same kind adds up, another kind replaces).
fn entry_stat(entry: &[u8], base: usize) -> Result<(Cow<'_, [u8]>, FeatureStat)> {
    let (key, stat) = parse_map_entry(entry, base, MSG, |feature, at, stat: &mut FeatureStat| {
        feature_stat(feature, at, stat)
    })?;
    Ok((key, stat.unwrap_or_default()))
}

fn feature_stat(buf: &[u8], base: usize, stat: &mut FeatureStat) -> Result<()> {
    let mut c = Cursor::new(buf, base, MSG);
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        if wt != WT_LEN || !(1..=3).contains(&field) {
            c.skip(field, wt)?;
            continue;
        }
        let (list, at) = c.len_delimited()?;
        let kind = field as i8;
        let (count, sum) = list_stat(list, at, kind)?;
        if stat.kind == kind {
            stat.count += count;
            stat.sum = stat.sum.wrapping_add(sum);
        } else {
            *stat = FeatureStat { kind, count, sum };
        }
    }
    Ok(())
}

fn list_stat(buf: &[u8], base: usize, kind: i8) -> Result<(u64, i64)> {
    let mut c = Cursor::new(buf, base, MSG);
    let mut count = 0u64;
    let mut sum = 0i64;
    while !c.at_end() {
        let (field, wt) = c.tag()?;
        match (kind, field, wt) {
            (BYTES, 1, WT_LEN) => {
                c.len_delimited()?;
                count += 1;
            }
            (FLOAT, 1, WT_LEN) => {
                let (payload, _) = c.len_delimited()?;
                if payload.len() % 4 != 0 {
                    return Err(c.error("packed float list length is not a multiple of 4"));
                }
                count += (payload.len() / 4) as u64;
            }
            (FLOAT, 1, WT_FIXED32) => {
                c.fixed32()?;
                count += 1;
            }
            (INT64, 1, WT_LEN) => {
                let (payload, at) = c.len_delimited()?;
                let mut p = Cursor::new(payload, at, MSG);
                while !p.at_end() {
                    sum = sum.wrapping_add(p.varint()? as i64);
                    count += 1;
                }
            }
            (INT64, 1, WT_VARINT) => {
                sum = sum.wrapping_add(c.varint()? as i64);
                count += 1;
            }
            _ => c.skip(field, wt)?,
        }
    }
    Ok((count, sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{decode_example, encode_example, Feature};
    use crate::framing::RecordWriter;
    use crate::Compression;
    use std::borrow::Cow;

    fn stream(records: &[Vec<u8>]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), Compression::None).unwrap();
        for r in records {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn walk_finds_every_record_and_every_damage() {
        let records: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + i as usize]).collect();
        let mut buf = stream(&records);
        let clean = walk(&buf, true, 2, 1 << 30);
        assert_eq!(clean.offsets.len(), 20);
        assert!(clean.damage.is_empty());
        // Damage record 3's header and record 7's payload, and cut the tail.
        let h3 = clean.offsets[3] as usize;
        buf[h3 + 2] ^= 0xff;
        let p7 = clean.offsets[7] as usize + 20;
        buf[p7] ^= 1;
        buf.truncate(buf.len() - 5);
        for threads in [1, 2, 3] {
            let w = walk(&buf, true, threads, 1 << 30);
            assert_eq!(w.offsets.len(), 18, "record 3 lost, record 19 cut");
            let reasons: Vec<(usize, &str)> = w
                .damage
                .iter()
                .map(|d| (d.record, &d.reason[..12]))
                .collect();
            assert_eq!(
                reasons,
                vec![
                    (3, "length CRC m"),
                    (6, "data CRC mis"),
                    (18, "truncated re")
                ]
            );
            assert_eq!(w.damage[0].end, clean.offsets[4] as usize);
            assert_eq!(w.crc_ok.iter().filter(|ok| !**ok).count(), 1);
        }
        let unverified = walk(&buf, false, 1, 1 << 30);
        assert!(unverified.crc_ok.iter().all(|ok| *ok));
        assert_eq!(unverified.damage.len(), 2);
    }

    #[test]
    fn walk_checksummed_gives_the_buffers_crc32c() {
        // Small and large (>= COMBINE_MIN, >= WINDOW) records mixed: both ways of hashing.
        let records: Vec<Vec<u8>> = (0..40usize)
            .map(|i| {
                let len = if i % 7 == 3 {
                    WINDOW + 1000 * i
                } else {
                    50 + 37 * i
                };
                (0..len).map(|j| (j * 31 + i) as u8).collect()
            })
            .collect();
        let clean = stream(&records);
        let mut damaged = clean.clone();
        let first = walk(&clean, false, 1, 1 << 30);
        damaged[first.offsets[5] as usize + 3] ^= 0x40; // a header: resync
        damaged[first.offsets[10] as usize + 20] ^= 1; // a large record's data
        damaged[first.offsets[20] as usize + 20] ^= 1; // a small record's data
        let mut cut = damaged.clone();
        cut.truncate(cut.len() - 9);
        for buf in [&clean, &damaged, &cut, &clean[..0], &clean[..7]] {
            for threads in [1, 2, 3, 5] {
                let (w, crc) = walk_checksummed(buf, threads, 1 << 30);
                assert_eq!(crc, crc32c(buf), "{} bytes, {threads} threads", buf.len());
                assert_eq!(w, walk(buf, true, threads, 1 << 30));
            }
        }
        let (w, _) = walk_checksummed(&damaged, 2, 1 << 30);
        assert_eq!(w.crc_ok.iter().filter(|ok| !**ok).count(), 2);
    }

    #[test]
    fn walking_in_windows_finds_what_the_sequential_walk_finds() {
        // Small windows, so that many are in flight; one to three damaged bytes anywhere
        // (headers, CRCs, payloads) or a cut tail, for 2 to 4 checking threads: the same
        // records, damage and CRCs as the one-thread walk, and the buffer's CRC32C.
        let records: Vec<Vec<u8>> = (0..150usize)
            .map(|i| {
                let len = if i % 37 == 5 {
                    COMBINE_MIN + i
                } else {
                    40 + (i * 97) % 3_000
                };
                (0..len).map(|j| (j ^ i) as u8).collect()
            })
            .collect();
        let clean = stream(&records);
        let mut next = crate::testing::below(0x2545_f491_4f6c_dd1du64);
        for round in 0..200 {
            let mut buf = clean.clone();
            if round > 0 {
                for _ in 0..1 + next(3) {
                    let at = next(buf.len());
                    buf[at] ^= 1 << next(8);
                }
            }
            if round % 10 == 9 {
                buf.truncate(buf.len() - 1 - next(5_000));
            }
            for file_crc in [false, true] {
                let expected = walk_impl(&buf, true, 1, file_crc, 1 << 30);
                assert_eq!(expected.1.is_some(), file_crc);
                if file_crc {
                    assert_eq!(expected.1, Some(crc32c(&buf)));
                }
                for threads in 2..=4 {
                    let window = 1 + next(20_000);
                    let got = walk_windows(&buf, threads, file_crc, 1 << 30, window);
                    assert_eq!(got, expected, "round {round}, {threads} threads, {window}");
                }
            }
        }
    }

    #[test]
    fn stats_match_decoded_examples() {
        let make = |n: i64, tags: &[&[u8]]| {
            let feats: Vec<(&str, Feature<'_>)> = vec![
                ("x", Feature::Int64(Cow::Owned((0..n).collect()))),
                ("f", Feature::Float(Cow::Owned(vec![1.5; n as usize]))),
                (
                    "t",
                    Feature::Bytes(tags.iter().map(|t| Cow::Borrowed(*t)).collect()),
                ),
                ("e", Feature::Empty),
            ];
            let mut out = Vec::new();
            encode_example(&feats, &mut out);
            out
        };
        let records = [make(3, &[b"a"]), make(0, &[]), b"\x0a\x05\x0a\x03".to_vec()];
        let names: Vec<&[u8]> = vec![b"x", b"f", b"t", b"e", b"nope"];
        let stats = feature_stats(
            records.iter().map(|r| &r[..]),
            &names,
            &[true, false, false, false, false],
        );
        assert_eq!(&stats.kinds[..5], &[INT64, FLOAT, BYTES, NO_KIND, MISSING]);
        assert_eq!(&stats.counts[..5], &[3, 3, 1, 0, 0]);
        assert_eq!(stats.sums[0], 3);
        assert_eq!(&stats.counts[5..10], &[0, 0, 0, 0, 0]);
        assert_eq!(stats.errors.len(), 1);
        assert_eq!(stats.errors[0].0, 2);
        let expected = decode_example(&records[2]).unwrap_err().to_string();
        assert_eq!(stats.errors[0].1, expected);
    }
}
