//! Whole-file framing scans: count records and check every CRC without copying payloads.
//!
//! Memory-mapped files are walked header by header (cheap: 8-byte length CRCs), and the
//! payload CRCs of each window of records are checked on several threads. The error
//! reported is always the one at the lowest offset, exactly as a sequential read would
//! report it.

use std::io::Read;
use std::path::Path;

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::framing::{locate, FileRecords, Frame, RecordReader};

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

/// Scans an in-memory record stream (records over `max_record` bytes refused).
pub fn scan_slice(
    data: &[u8],
    verify: bool,
    threads: usize,
    max_record: u64,
) -> Result<ScanSummary> {
    let threads = threads.max(1);
    let mut summary = ScanSummary::default();
    let mut pos = 0usize;
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        frames.clear();
        let mut window_bytes = 0usize;
        let mut pending: Option<Error> = None;
        while window_bytes < WINDOW {
            match locate(data, pos, verify, max_record) {
                Ok(Some(frame)) => {
                    pos = frame.end();
                    window_bytes += frame.payload.len() + 16;
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    pending = Some(e);
                    break;
                }
            }
        }
        if verify {
            check_frames(data, &frames, threads)?;
        }
        for f in &frames {
            summary.records += 1;
            summary.payload_bytes += f.payload.len() as u64;
        }
        if let Some(e) = pending {
            return Err(e);
        }
        if frames.is_empty() || pos >= data.len() {
            break;
        }
    }
    summary.stream_bytes = summary.payload_bytes + 16 * summary.records;
    Ok(summary)
}

/// Checks payload CRCs of `frames`, split into contiguous runs of similar byte size.
fn check_frames(data: &[u8], frames: &[Frame], threads: usize) -> Result<()> {
    let total: usize = frames.iter().map(|f| f.payload.len()).sum();
    if threads == 1 || total < (1 << 20) {
        return frames
            .iter()
            .try_for_each(|f| f.check(&data[f.payload.clone()]));
    }
    let per_thread = total.div_ceil(threads);
    let mut runs: Vec<&[Frame]> = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0, 0);
    for (i, f) in frames.iter().enumerate() {
        acc += f.payload.len();
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
            .map(|run| {
                s.spawn(move || {
                    run.iter()
                        .try_for_each(|f| f.check(&data[f.payload.clone()]))
                })
            })
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
