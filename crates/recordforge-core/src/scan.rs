//! Whole-file framing scans: count records and check every CRC without copying payloads.
//!
//! Memory-mapped files are walked header by header (cheap: 8-byte length CRCs), and the
//! payload CRCs of each window of records are checked on several threads. The error
//! reported is always the one at the lowest offset, exactly as a sequential read would
//! report it.

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;

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

/// Payload bytes per window handed to a checker thread (small enough that the walk and
/// the checks overlap from the start of a file, and that the checkers share its end).
const WINDOW: usize = 8 << 20;

/// Each record's offset and payload range, in file order.
type Frames = Vec<(u64, Range<usize>)>;

/// Records of one window: each one's offset and payload range, and the error that ended
/// the walk (after these records), if any.
struct Window {
    frames: Frames,
    pending: Option<Error>,
    /// Where the next window starts.
    end: usize,
}

/// Walks the headers from `pos` until `WINDOW` bytes of records (or the end, or an
/// error). Only each header's page is touched; payloads and footers are left to the CRC.
fn walk_window(data: &[u8], mut pos: usize, max_record: u64, window: usize) -> Window {
    let mut frames = Vec::new();
    let mut bytes = 0usize;
    let mut pending = None;
    while bytes < window {
        match locate_header(data, pos, max_record) {
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

/// [`scan_slice`] with windows of `size` payload bytes. This thread walks the headers,
/// window after window, and hands each window to `threads` checker threads that take
/// them in turn: the walk (which faults in each header's page) runs ahead of the CRCs
/// instead of waiting for each window's checks, and no thread is started per window.
fn scan_windows(
    data: &[u8],
    verify: bool,
    threads: usize,
    max_record: u64,
    size: usize,
) -> Result<ScanSummary> {
    let threads = threads.clamp(1, MAX_THREADS);
    let mut summary = ScanSummary::default();
    let mut count = |frames: &[(u64, Range<usize>)]| {
        summary.records += frames.len() as u64;
        summary.payload_bytes += frames.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
    };
    let walked = if !verify || threads == 1 {
        // Alone: each window's CRCs, then the next window's walk.
        let mut pos = 0;
        loop {
            let window = walk_window(data, pos, max_record, size);
            if verify {
                window.frames.iter().try_for_each(|f| check_one(data, f))?;
            }
            count(&window.frames);
            if window.pending.is_some() || window.frames.is_empty() || window.end >= data.len() {
                break window.pending;
            }
            pos = window.end;
        }
    } else {
        let checks = Checks::default();
        let (windows, queue) = sync_channel::<Frames>(threads);
        let queue = Mutex::new(queue);
        let (walked, ()) = std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| checks.run(data, &queue));
            }
            let mut pos = 0;
            let walked = loop {
                let window = walk_window(data, pos, max_record, size);
                count(&window.frames);
                let last = window.pending.is_some()
                    || window.frames.is_empty()
                    || window.end >= data.len();
                if !window.frames.is_empty() && windows.send(window.frames).is_err() {
                    break None; // (the checkers are gone: only by a panic, resumed below)
                }
                if last || checks.failed() {
                    break window.pending;
                }
                pos = window.end;
            };
            drop(windows); // the checkers end once the queue is empty
            (walked, ())
        });
        checks.result()?;
        walked
    };
    // Every record checked comes before where the walk stopped: a CRC error is lower.
    if let Some(e) = walked {
        return Err(e);
    }
    summary.stream_bytes = summary.payload_bytes + 16 * summary.records;
    Ok(summary)
}

/// The payload checks of a scan's checker threads: the error at the lowest offset.
struct Checks {
    /// The lowest offset of a record whose check failed (`u64::MAX`: none yet); records
    /// after it need no check.
    lowest: AtomicU64,
    error: Mutex<Option<(u64, Error)>>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            lowest: AtomicU64::new(u64::MAX),
            error: Mutex::new(None),
        }
    }
}

impl Checks {
    /// Checks windows from `queue` until it is empty and closed.
    fn run(&self, data: &[u8], queue: &Mutex<Receiver<Frames>>) {
        loop {
            let window = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(window) => window,
                Err(_) => return,
            };
            for frame in &window {
                if frame.0 >= self.lowest.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = check_one(data, frame) {
                    let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
                    if error.as_ref().is_none_or(|(at, _)| frame.0 < *at) {
                        *error = Some((frame.0, e));
                        self.lowest.store(frame.0, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }

    fn failed(&self) -> bool {
        self.lowest.load(Ordering::Relaxed) != u64::MAX
    }

    fn result(self) -> Result<()> {
        match self.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
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
/// windows, so the kernel's page-table work is spread over the threads (on 231 MB in the
/// page cache, 2 cores: 10-11 ms against 17-19 ms with `MAP_POPULATE`, whose one call maps
/// every page on one thread before any CRC starts; `benchmarks/bench_costs.py --only scan`).
/// `MADV_POPULATE_READ` of each window by its checker was slower still (10.2 µs a 150 KB
/// record against 7.8-8.1 without). A 150 KB record costs ~3 µs of page mapping on top of
/// its 5.2 µs CRC; a CRC of the mapped file alone on 2 threads (`file_crc32c`) runs at
/// about the speed of this scan.
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
        FileRecords::Mapped { map, .. } => {
            let summary = scan_slice(&map, verify, threads, max_record);
            match map.len_now() {
                // Cut short under the map (a fault or not): the first record past its end.
                Some(now) if map.cut() || now < map.len() as u64 => {
                    Err(map.first_cut().unwrap_or(crate::framing::cut_at(now, now)))
                }
                _ => summary,
            }
        }
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

    #[test]
    fn any_damage_is_reported_where_a_sequential_read_reports_it() {
        // Small windows, so that many are in flight; one to three damaged bytes anywhere
        // (lengths, CRCs, payloads), for 1 to 4 checker threads.
        let clean = stream(200, 3_000);
        let mut next = crate::testing::below(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..300 {
            let mut data = clean.clone();
            for _ in 0..1 + next(3) {
                let at = next(data.len());
                data[at] ^= 1 << next(8);
            }
            let mut reader = RecordReader::new(&data[..], true);
            let mut buf = Vec::new();
            let expected = loop {
                match reader.read_into(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            for threads in 1..=4 {
                let got = scan_windows(&data, true, threads, 1 << 30, 7_000 + next(20_000));
                assert_eq!(
                    got.err().map(|e| e.to_string()),
                    expected,
                    "{threads} threads"
                );
            }
        }
    }
}
