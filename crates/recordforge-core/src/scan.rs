//! Whole-file framing scans: count records and check every CRC without copying payloads.
//!
//! Memory-mapped files are walked header by header (cheap: 8-byte length CRCs), and the
//! payload CRCs of each window of records are checked on several threads. The error
//! reported is always the one at the lowest offset, exactly as a sequential read would
//! report it.

use std::io::Read;
use std::ops::Range;
use std::path::Path;

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::framing::{locate_header, FileRecords, Frame, RecordReader};
use crate::MAX_THREADS;

/// What a scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Records in the file.
    pub records: u64,
    /// Sum of payload lengths.
    pub payload_bytes: u64,
    /// Bytes of the (decompressed) record stream: payloads plus 16 bytes of framing each.
    pub stream_bytes: u64,
}

/// Payload bytes per window whose CRCs are checked in parallel.
const WINDOW: usize = 64 << 20;

/// Records of one window: each one's offset and payload range, and the error that ended
/// the walk (after these records), if any.
struct Window {
    frames: Vec<(u64, Range<usize>)>,
    pending: Option<Error>,
    /// Where the next window starts.
    end: usize,
}

/// Walks the headers from `pos` until `WINDOW` bytes of records (or the end, or an
/// error). Only each header's page is touched; payloads and footers are left to the CRC.
fn walk_window(
    data: &[u8],
    mut pos: usize,
    verify: bool,
    max_record: u64,
    window: usize,
) -> Window {
    let mut frames = Vec::new();
    let mut bytes = 0usize;
    let mut pending = None;
    while bytes < window {
        match locate_header(data, pos, verify, max_record) {
            Ok(Some(payload)) => {
                bytes += payload.len() + 16;
                frames.push((pos as u64, payload.clone()));
                pos = payload.end + 4;
            }
            Ok(None) => break,
            Err(e) => {
                pending = Some(e);
                break;
            }
        }
    }
    Window {
        frames,
        pending,
        end: pos,
    }
}

/// Scans an in-memory record stream (records over `max_record` bytes refused). The
/// payload CRCs of a window are checked on `threads` threads while this one walks the
/// headers of the next.
pub fn scan_slice(
    data: &[u8],
    verify: bool,
    threads: usize,
    max_record: u64,
) -> Result<ScanSummary> {
    scan_windows(data, verify, threads, max_record, WINDOW)
}

/// [`scan_slice`] with windows of `size` payload bytes.
fn scan_windows(
    data: &[u8],
    verify: bool,
    threads: usize,
    max_record: u64,
    size: usize,
) -> Result<ScanSummary> {
    let threads = threads.clamp(1, MAX_THREADS);
    let mut summary = ScanSummary::default();
    let mut window = walk_window(data, 0, verify, max_record, size);
    loop {
        let last = window.pending.is_some() || window.frames.is_empty() || window.end >= data.len();
        let (checked, next) = std::thread::scope(|s| {
            // One thread: the CRCs first, then the next walk, on this thread.
            let alone = (verify && threads == 1).then(|| check_frames(data, &window.frames, 1));
            let checking = (verify && threads > 1)
                .then(|| s.spawn(|| check_frames(data, &window.frames, threads)));
            let next = (!last).then(|| walk_window(data, window.end, verify, max_record, size));
            let checked = checking.map_or(alone.unwrap_or(Ok(())), |h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (checked, next)
        });
        checked?;
        for (_, payload) in &window.frames {
            summary.records += 1;
            summary.payload_bytes += payload.len() as u64;
        }
        if let Some(e) = window.pending {
            return Err(e);
        }
        match next {
            Some(next) => window = next,
            None => break,
        }
    }
    summary.stream_bytes = summary.payload_bytes + 16 * summary.records;
    Ok(summary)
}

/// Checks one record's payload CRC (the footer after it holds the stored one).
fn check_one(data: &[u8], (offset, payload): &(u64, Range<usize>)) -> Result<()> {
    let footer = &data[payload.end..payload.end + 4];
    let frame = Frame {
        offset: *offset,
        payload: payload.clone(),
        data_crc: u32::from_le_bytes(footer.try_into().expect("4 bytes")),
    };
    frame.check(&data[payload.clone()])
}

/// Checks payload CRCs of `frames`, split into contiguous runs of similar byte size.
fn check_frames(data: &[u8], frames: &[(u64, Range<usize>)], threads: usize) -> Result<()> {
    let total: usize = frames.iter().map(|(_, p)| p.len()).sum();
    if threads == 1 || total < (1 << 20) {
        return frames.iter().try_for_each(|f| check_one(data, f));
    }
    let threads = threads.min(frames.len());
    let per_thread = total.div_ceil(threads);
    let mut runs: Vec<&[(u64, Range<usize>)]> = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0, 0);
    for (i, (_, p)) in frames.iter().enumerate() {
        acc += p.len();
        if acc >= per_thread {
            runs.push(&frames[start..=i]);
            start = i + 1;
            acc = 0;
        }
    }
    if start < frames.len() {
        runs.push(&frames[start..]);
    }
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|run| s.spawn(move || run.iter().try_for_each(|f| check_one(data, f))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    // Runs are in file order, so the first error is the lowest offset.
    results.into_iter().collect()
}

/// Scans a stream (already decompressed) sequentially.
pub fn scan_stream<R: Read>(reader: &mut RecordReader<R>) -> Result<ScanSummary> {
    let mut summary = ScanSummary::default();
    let mut buf = Vec::new();
    while reader.read_into(&mut buf)?.is_some() {
        summary.records += 1;
        summary.payload_bytes += buf.len() as u64;
    }
    summary.stream_bytes = summary.payload_bytes + 16 * summary.records;
    Ok(summary)
}

/// Scans a file: memory-mapped (and checked on several threads) when uncompressed,
/// streamed otherwise. `compression` `None` detects it. `threads` 0 means one per core.
/// Records over `max_record` bytes are refused.
///
/// The map is not populated up front: each CRC thread faults in the pages of its own
/// run, so the kernel's page-table work is spread over the threads (on 231 MB in the page
/// cache, 2 cores: 10-11 ms against 17-19 ms with `MAP_POPULATE`, whose one call maps
/// every page on one thread before any CRC starts; `benchmarks/bench_costs.py --only scan`).
pub fn scan_file(
    path: &Path,
    compression: Option<Compression>,
    verify: bool,
    threads: usize,
    max_record: u64,
) -> Result<ScanSummary> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    match FileRecords::open(path, compression, verify, max_record)? {
        FileRecords::Mapped { map, .. } => scan_slice(&map, verify, threads, max_record),
        FileRecords::Stream(mut reader) => scan_stream(&mut reader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::RecordWriter;

    fn stream(records: usize, size: usize) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), Compression::None).unwrap();
        for i in 0..records {
            w.write_record(&vec![(i % 251) as u8; size]).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn counts_and_bytes() {
        let data = stream(300, 10_000);
        for threads in [1, 2, 4] {
            let s = scan_slice(&data, true, threads, 1 << 30).unwrap();
            assert_eq!(s.records, 300);
            assert_eq!(s.payload_bytes, 3_000_000);
            assert_eq!(s.stream_bytes as usize, data.len());
        }
    }

    #[test]
    fn windows_checked_while_the_next_is_walked_report_the_lowest_offset() {
        // 10 KB windows over 300 records of 10 KB: every window's CRCs are checked while
        // the next window's headers are walked.
        let mut data = stream(300, 10_000);
        let frame = 10_016;
        for threads in [1, 2, 3] {
            let s = scan_windows(&data, true, threads, 1 << 30, 10_000).unwrap();
            assert_eq!((s.records, s.stream_bytes as usize), (300, data.len()));
        }
        data[frame * 120 + 30] ^= 1; // payload of record 120: its window's CRC check
        data[frame * 121 + 2] ^= 1; // length of record 121: the walk of the next window
        for threads in [1, 2, 3] {
            let err = scan_windows(&data, true, threads, 1 << 30, 10_000).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { offset, .. } if offset == (frame * 120) as u64),
                "{err}"
            );
        }
        data[frame * 120 + 30] ^= 1; // only the length error is left
        let err = scan_windows(&data, true, 2, 1 << 30, 25_000).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == (frame * 121) as u64),
            "{err}"
        );
        // A cut tail: the records before it are checked, the cut is the error.
        let cut = &stream(300, 10_000)[..frame * 200 + 7];
        let err = scan_windows(cut, true, 2, 1 << 30, 30_000).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == (frame * 200) as u64),
            "{err}"
        );
    }

    #[test]
    fn lowest_offset_error_wins() {
        let mut data = stream(300, 10_000);
        let frame = 10_016;
        data[frame * 250 + 20] ^= 1; // payload of record 250
        data[frame * 10 + 20] ^= 1; // payload of record 10
        let err = scan_slice(&data, true, 4, 1 << 30).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == (frame * 10) as u64),
            "{err}"
        );
        // A truncated tail after a bad payload: the bad payload is reported.
        let cut = &data[..data.len() - 5];
        let err = scan_slice(cut, true, 2, 1 << 30).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == (frame * 10) as u64),
            "{err}"
        );
        assert_eq!(scan_slice(&data, false, 2, 1 << 30).unwrap().records, 300);
    }
}
