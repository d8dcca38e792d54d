//! Batches of columns read straight from TFRecord files, on background threads.
//!
//! ```text
//! files --loaders (files in parallel)--> chunks of framed, CRC-checked records
//!       --assembler (file order, every n-th record, shuffle buffer)--> batches of slices
//!       --decoders (batches in parallel)--> columns, handed out in order
//! ```
//!
//! Uncompressed files are memory-mapped and decoded from the mapped bytes; compressed
//! ones, and files the caller opens as byte streams (remote objects: [`Opener`]), are
//! read into chunk buffers. Every channel is bounded, so what is in
//! flight is a few chunks per loader and a few batches per decoder, never a whole file.
//! The order of records, and where an error surfaces, are those of a sequential read.

use std::io::{BufReader, Read};
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::batch::{decode_batch_spans, wanted_of, DecodedColumn, Kind};
use crate::blocks::{gather_spans, BlockPool, Pooled};
use crate::compression::Compression;
use crate::error::Error;
use crate::framing::{locate, next_intact, stream_records, FileRecords, RecordReader};
use crate::walker::RangeCrcs;
use crate::walker::{ReadSource, SpanKind, Walker};

/// Records per chunk handed from a loader to the assembler.
const CHUNK_RECORDS: usize = 4096;
/// Payload bytes per chunk (so that decoding starts before a file of large records is
/// all checked).
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks a loader may have ready ahead of the assembler.
const CHUNKS_AHEAD: usize = 2;
/// Bytes asked of an opened stream at a time.
const STREAM_BUFFER: usize = 1 << 20;
/// Room reserved for a batch's records at most (a batch of more grows as it fills: a
/// `batch_size` of 2**40 is not an allocation of 2**40 records).
const RESERVE_RECORDS: usize = 4096;

/// What to read and how.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// `None`: detected per file from its first bytes.
    pub compression: Option<Compression>,
    /// Check the payload CRC of every record (length CRCs are always checked).
    pub verify: bool,
    /// Refuse records that claim more bytes than this (a damaged record, skipped with
    /// `skip_corrupt`).
    pub max_record: u64,
    /// Skip damaged records (listed in [`Batch::skipped`]) instead of stopping there.
    pub skip_corrupt: bool,
    /// `(index, count)`: keep only records whose position in the stream (after skipped
    /// ones are left out) is `index` modulo `count`.
    pub every: Option<(u64, u64)>,
    /// `(buffer, seed)`: pass records through a shuffle buffer (see [`Shuffler`]).
    pub shuffle: Option<(usize, u64)>,
    pub batch_size: usize,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_remainder: bool,
    /// Decoder threads, and at most this many files loaded at once.
    pub threads: usize,
    /// Batches each decoder may have finished ahead of the consumer.
    pub prefetch: usize,
    /// Copy each batch's bytes values into a block of this pool ([`Batch::block`]),
    /// instead of leaving them in the records.
    pub blocks: Option<Arc<BlockPool>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            compression: None,
            verify: true,
            max_record: crate::framing::DEFAULT_MAX_RECORD_BYTES,
            skip_corrupt: false,
            every: None,
            shuffle: None,
            batch_size: 1024,
            drop_remainder: false,
            threads: 2,
            prefetch: 1,
            blocks: None,
        }
    }
}

/// A damaged region left out with `skip_corrupt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// Index of the file in the list given to [`BatchReader::start`].
    pub file: usize,
    pub start: u64,
    /// Where reading resumed; equal to `start` when the rest of a compressed file was
    /// unreadable.
    pub end: u64,
    pub reason: String,
}

/// Decoded columns of `len` records (one per wanted feature, in order), and the damaged
/// regions skipped since the previous batch. The last batch may have `len == 0`: it only
/// carries regions skipped after the last record.
///
/// Bytes values are [`Values::Spans`](crate::batch::Values::Spans) into the batch's
/// records ([`Batch::record`]): they are copied once, by whoever turns them into
/// their final objects. With [`ReadOptions::blocks`] they are spans of [`Batch::block`]
/// instead (copied there by the decoder), and the records are not kept.
pub struct Batch {
    pub len: usize,
    pub columns: Vec<DecodedColumn>,
    pub skipped: Vec<Damaged>,
    /// The bytes values, when read with [`ReadOptions::blocks`] (back to the pool when
    /// dropped, a batch decoded ahead and never handed out included).
    pub block: Option<Pooled>,
    records: Vec<Rec>,
}

impl Batch {
    /// The serialized record `i` of the batch.
    pub fn record(&self, i: usize) -> &[u8] {
        self.records[i].bytes()
    }

    /// The error of a record of the batch that a file cut short under its map took
    /// since it was decoded: for a caller that copied values out of
    /// [`record`](Batch::record)'s bytes (one `fstat` per map; see [`crate::Mapped`]).
    pub fn cut(&self) -> Option<ReadError> {
        cut_in(&self.records)
    }
}

/// Why reading stopped: a file's error (`Corrupt` with its offset, `Io`), or a record
/// that does not decode as asked (`record`: the record's offset; `index`: its number
/// among the records read from its file, where known).
#[derive(Debug)]
pub struct ReadError {
    pub file: usize,
    pub record: Option<u64>,
    pub index: Option<u64>,
    pub error: Error,
}

/// The bytes records are sliced from: a mapped file (mapped by the loader, or kept by the
/// caller across readers) or a decompressed chunk.
enum Data {
    Map(crate::Mapped),
    Shared(Arc<crate::Mapped>),
    Owned(Vec<u8>),
}

impl Data {
    /// The map, for bytes of a mapped file.
    fn mapped(&self) -> Option<&crate::Mapped> {
        match self {
            Data::Map(m) => Some(m),
            Data::Shared(m) => Some(m),
            Data::Owned(_) => None,
        }
    }
}

impl Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Shared(m) => m,
            Data::Owned(v) => v,
        }
    }
}

/// One record: where its payload is, and where it came from.
struct Rec {
    data: Arc<Data>,
    payload: Range<usize>,
    file: usize,
    offset: u64,
    /// The record's number in its file (records of damaged regions skipped not counted).
    index: u64,
}

impl Rec {
    fn bytes(&self) -> &[u8] {
        &self.data[self.payload.clone()]
    }
}

struct Chunk {
    data: Arc<Data>,
    /// (offset, payload range in `data`)
    records: Vec<(u64, Range<usize>)>,
    skipped: Vec<Damaged>,
    /// The file stops here, with this error.
    error: Option<Error>,
}

enum Load {
    Chunk(Chunk),
    EndOfFile,
}

enum Job {
    Batch {
        records: Vec<Rec>,
        skipped: Vec<Damaged>,
    },
    Fail(ReadError),
    End(Vec<Damaged>),
}

enum Output {
    Item(Result<Batch, ReadError>),
    End(Vec<Damaged>),
}

/// A SplitMix64 generator: tiny, and the one source of the shuffle order (the binding
/// crate exports [`Shuffler`] to the readers written in Python).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A shuffle buffer: the first `size` items fill it; then each new item replaces a
/// random one, which comes out; at the end the rest come out in random order (a random
/// one swapped to the back and taken, until none is left).
pub struct Shuffler<T> {
    size: usize,
    buffer: Vec<T>,
    rng: SplitMix,
}

impl<T> Shuffler<T> {
    pub fn new(size: usize, seed: u64) -> Self {
        Shuffler {
            size: size.max(1),
            buffer: Vec::new(),
            rng: SplitMix::new(seed),
        }
    }

    /// Takes `item`; returns the one that leaves the buffer, if any.
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.buffer.len() < self.size {
            self.buffer.push(item);
            return None;
        }
        let j = self.rng.below(self.size);
        Some(std::mem::replace(&mut self.buffer[j], item))
    }

    /// The next of the items left at the end.
    pub fn drain_one(&mut self) -> Option<T> {
        if self.buffer.is_empty() {
            return None;
        }
        let j = self.rng.below(self.buffer.len());
        Some(self.buffer.swap_remove(j))
    }
}

/// Opens a file as a byte stream that the reader reads front to back (a remote object
/// read by range): called once, on the loader thread that reads the file, when its turn
/// comes. `Ok(None)`: the file is read from its path, as without an opener.
pub type Opener = Box<dyn FnOnce() -> std::io::Result<Option<Box<dyn Read + Send>>> + Send>;

/// Reads batches of decoded columns from files on background threads. Dropping it stops
/// the threads (each ends at its next hand-over).
pub struct BatchReader {
    outputs: Vec<Receiver<Output>>,
    seq: usize,
    done: bool,
}

impl BatchReader {
    /// Starts reading `files` in this order, decoding the `wanted` features
    /// `(name, kind, width)` (see [`crate::batch::Wanted`]).
    pub fn start(
        files: Vec<PathBuf>,
        wanted: Vec<(String, Kind, Option<usize>)>,
        options: ReadOptions,
    ) -> Self {
        let maps = vec![None; files.len()];
        Self::start_mapped(files, maps, Vec::new(), wanted, options)
    }

    /// [`start`](BatchReader::start), with `maps[i]` (where given) the map of the
    /// uncompressed file `files[i]`, kept by the caller across readers: read instead of
    /// mapping the file again (no page faults or unmapping per epoch); and
    /// `openers[i]` (where given; `openers` may be empty) opening `files[i]` as a stream.
    pub fn start_mapped(
        files: Vec<PathBuf>,
        maps: Vec<Option<Arc<crate::Mapped>>>,
        openers: Vec<Option<Opener>>,
        wanted: Vec<(String, Kind, Option<usize>)>,
        options: ReadOptions,
    ) -> Self {
        assert_eq!(maps.len(), files.len(), "a map (or None) per file");
        crate::mapped::guard_again(); // (maps made before a handler took the place of ours)
        assert!(
            openers.is_empty() || openers.len() == files.len(),
            "an opener (or None) per file, or none"
        );
        let maps = Arc::new(maps);
        let openers: Arc<Vec<Mutex<Option<Opener>>>> =
            Arc::new(openers.into_iter().map(Mutex::new).collect());
        let threads = options.threads.clamp(1, crate::MAX_THREADS);
        let n_loaders = threads.min(files.len()).max(1);
        let files = Arc::new(files);
        let mut loads = Vec::with_capacity(n_loaders);
        for l in 0..n_loaders {
            let (tx, rx) = sync_channel(CHUNKS_AHEAD);
            let files = Arc::clone(&files);
            let maps = Arc::clone(&maps);
            let openers = Arc::clone(&openers);
            let options = options.clone();
            thread::spawn(move || {
                for i in (l..files.len()).step_by(n_loaders) {
                    let opener = openers.get(i).and_then(|o| {
                        o.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take()
                    });
                    let loaded = match (&maps[i], opener) {
                        (_, Some(open)) => load_opened(i, &files[i], open, &options, &tx),
                        (Some(map), None) => {
                            load_mapped(i, Arc::new(Data::Shared(Arc::clone(map))), &options, &tx)
                        }
                        (None, None) => load_file(i, &files[i], &options, &tx),
                    };
                    if !loaded || tx.send(Load::EndOfFile).is_err() {
                        return;
                    }
                }
            });
            loads.push(rx);
        }
        let wanted = Arc::new(wanted);
        let mut jobs = Vec::with_capacity(threads);
        let mut outputs = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (job_tx, job_rx) = sync_channel::<Job>(1);
            let (out_tx, out_rx) = sync_channel::<Output>(options.prefetch.max(1));
            let wanted = Arc::clone(&wanted);
            let blocks = options.blocks.clone();
            thread::spawn(move || decode_jobs(&job_rx, &out_tx, &wanted, blocks.as_ref()));
            jobs.push(job_tx);
            outputs.push(out_rx);
        }
        let n_files = files.len();
        thread::spawn(move || assemble(n_files, &loads, &jobs, &options));
        BatchReader {
            outputs,
            seq: 0,
            done: false,
        }
    }

    /// The next batch (blocking until it is decoded); `None` after the last one or after
    /// an error.
    pub fn next_batch(&mut self) -> Option<Result<Batch, ReadError>> {
        if self.done {
            return None;
        }
        let n = self.outputs.len();
        let got = self.outputs[self.seq % n].recv();
        self.seq += 1;
        match got {
            Ok(Output::Item(Ok(batch))) => Some(Ok(batch)),
            Ok(Output::Item(Err(e))) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(Output::End(skipped)) => {
                self.done = true;
                (!skipped.is_empty()).then_some(Ok(Batch {
                    len: 0,
                    columns: Vec::new(),
                    skipped,
                    block: None,
                    records: Vec::new(),
                }))
            }
            Err(_) => {
                self.done = true;
                Some(Err(ReadError {
                    file: 0,
                    record: None,
                    index: None,
                    error: Error::InvalidArgument("a reader thread stopped unexpectedly".into()),
                }))
            }
        }
    }
}

impl Iterator for BatchReader {
    type Item = Result<Batch, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

/// Loads one file into chunks sent on `tx`. Returns false when the receiver is gone or
/// the file ended with an error (sent as the last chunk).
fn load_file(file: usize, path: &Path, options: &ReadOptions, tx: &SyncSender<Load>) -> bool {
    let opened = FileRecords::open(
        path,
        options.compression,
        options.verify,
        options.max_record,
    );
    match opened {
        Ok(FileRecords::Mapped { map, .. }) => {
            load_mapped(file, Arc::new(Data::Map(map)), options, tx)
        }
        Ok(FileRecords::Stream(reader)) => load_stream(file, reader, options, tx),
        Err(error) => fail(error, tx),
    }
}

/// Sends a file's error (the last chunk it gives); false, as a loader that stops.
fn fail(error: Error, tx: &SyncSender<Load>) -> bool {
    let _ = tx.send(Load::Chunk(Chunk {
        data: Arc::new(Data::Owned(Vec::new())),
        records: Vec::new(),
        skipped: Vec::new(),
        error: Some(error),
    }));
    false
}

/// Loads the file `path` that `open` opens as a stream (its compression detected from
/// its first bytes unless given).
fn load_opened(
    file: usize,
    path: &Path,
    open: Opener,
    options: &ReadOptions,
    tx: &SyncSender<Load>,
) -> bool {
    let opened = open().and_then(|stream| {
        stream
            .map(|stream| {
                stream_records(
                    BufReader::with_capacity(STREAM_BUFFER, stream),
                    options.compression,
                    options.verify,
                    options.max_record,
                )
            })
            .transpose()
    });
    match opened {
        Ok(Some(reader)) => load_stream(file, reader, options, tx),
        Ok(None) => load_file(file, path, options, tx),
        Err(error) => fail(Error::Io(error), tx),
    }
}

fn load_mapped(file: usize, data: Arc<Data>, options: &ReadOptions, tx: &SyncSender<Load>) -> bool {
    let bytes: &[u8] = &data;
    let new_chunk = || Chunk {
        data: Arc::clone(&data),
        records: Vec::with_capacity(CHUNK_RECORDS),
        skipped: Vec::new(),
        error: None,
    };
    let mut chunk = new_chunk();
    let mut chunk_bytes = 0usize;
    let mut pos = 0usize;
    let map = data.mapped();
    let mut crcs = RangeCrcs::default(); // (the walk's data CRCs: see next_intact)
    while pos < bytes.len() {
        let found = locate(bytes, pos, options.max_record).and_then(|frame| match frame {
            Some(f) if options.verify => f.check_in(bytes, &mut crcs).map(|()| Some(f)),
            other => Ok(other),
        });
        // Zeros from the file's new end on: not damage to skip, the file's error.
        let cut = match map {
            Some(m) if found.is_err() || m.cut() => m.cut_error(pos as u64),
            _ => None,
        };
        if let Some(error) = cut {
            chunk.error = Some(error);
            let _ = tx.send(Load::Chunk(chunk));
            return false;
        }
        match found {
            Ok(None) => break,
            Ok(Some(frame)) => {
                chunk_bytes += frame.payload.len();
                chunk.records.push((pos as u64, frame.payload.clone()));
                pos = frame.end();
            }
            Err(e @ Error::Corrupt { .. }) if options.skip_corrupt => {
                let next = next_intact(bytes, pos, options.max_record, &mut crcs);
                chunk.skipped.push(Damaged {
                    file,
                    start: pos as u64,
                    end: next as u64,
                    reason: e.to_string(),
                });
                pos = next;
            }
            Err(e) => {
                chunk.error = Some(e);
                let _ = tx.send(Load::Chunk(chunk));
                return false;
            }
        }
        if chunk.records.len() == CHUNK_RECORDS || chunk_bytes >= CHUNK_BYTES {
            chunk_bytes = 0;
            if tx
                .send(Load::Chunk(std::mem::replace(&mut chunk, new_chunk())))
                .is_err()
            {
                return false;
            }
        }
    }
    chunk.records.is_empty() && chunk.skipped.is_empty() || tx.send(Load::Chunk(chunk)).is_ok()
}

fn load_stream(
    file: usize,
    mut reader: RecordReader<Box<dyn std::io::Read + Send>>,
    options: &ReadOptions,
    tx: &SyncSender<Load>,
) -> bool {
    if options.skip_corrupt {
        return load_walked(file, reader, tx);
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut records = Vec::new();
    let send = |buf: Vec<u8>, records, error| {
        tx.send(Load::Chunk(Chunk {
            data: Arc::new(Data::Owned(buf)),
            records,
            skipped: Vec::new(),
            error,
        }))
        .is_ok()
    };
    loop {
        let start = buf.len();
        match reader.read_append(&mut buf) {
            Ok(None) => break,
            Ok(Some(at)) => records.push((at, start..buf.len())),
            Err(e) => {
                let _ = send(buf, records, Some(e));
                return false;
            }
        }
        if records.len() == CHUNK_RECORDS || buf.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES));
            if !send(full, std::mem::take(&mut records), None) {
                return false;
            }
        }
    }
    records.is_empty() || send(buf, records, None)
}

/// [`load_stream`] with `skip_corrupt`: the stream is walked by [`crate::walker`], which
/// resynchronises after damage (as the walk of a memory-mapped file does), so every
/// intact record decompressed before a break in the stream is read.
fn load_walked(
    file: usize,
    reader: RecordReader<Box<dyn std::io::Read + Send>>,
    tx: &SyncSender<Load>,
) -> bool {
    let (verify, max) = (reader.verify(), reader.max_record());
    let mut walker = Walker::new(ReadSource::new(reader.into_inner()), verify, max);
    let mut buf: Vec<u8> = Vec::new();
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    let send = |buf: Vec<u8>, records, skipped, error| {
        tx.send(Load::Chunk(Chunk {
            data: Arc::new(Data::Owned(buf)),
            records,
            skipped,
            error,
        }))
        .is_ok()
    };
    loop {
        let span = match walker.next_span() {
            Ok(Some(span)) => span,
            Ok(None) => break,
            Err(e) => {
                let _ = send(buf, records, skipped, Some(Error::Io(e)));
                return false;
            }
        };
        match span.kind {
            SpanKind::Record => {
                let start = buf.len();
                buf.extend_from_slice(walker.payload());
                records.push((span.start, start..buf.len()));
            }
            SpanKind::Damaged { reason, .. } => skipped.push(Damaged {
                file,
                start: span.start,
                end: span.end,
                // As a mapped file's damage is told (`Error::Corrupt`'s message).
                reason: format!("corrupt record at offset {}: {reason}", span.start),
            }),
            SpanKind::StreamError(msg) => skipped.push(Damaged {
                file,
                start: span.start,
                end: span.start,
                reason: format!("{msg} (the rest of the compressed file is unreadable)"),
            }),
        }
        if records.len() == CHUNK_RECORDS || buf.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES));
            if !send(
                full,
                std::mem::take(&mut records),
                std::mem::take(&mut skipped),
                None,
            ) {
                return false;
            }
        }
    }
    records.is_empty() && skipped.is_empty() || send(buf, records, skipped, None)
}

/// Hands jobs to the decoders round-robin, so the consumer finds job `k` at decoder
/// `k % decoders`.
struct Batcher<'a> {
    jobs: &'a [SyncSender<Job>],
    seq: usize,
    batch_size: usize,
    pending: Vec<Rec>,
    skipped: Vec<Damaged>,
}

impl Batcher<'_> {
    fn send(&mut self, job: Job) -> bool {
        let ok = self.jobs[self.seq % self.jobs.len()].send(job).is_ok();
        self.seq += 1;
        ok
    }

    /// Appends a record to the batch being built; sends the batch when full.
    fn emit(&mut self, rec: Rec) -> bool {
        self.pending.push(rec);
        if self.pending.len() < self.batch_size {
            return true;
        }
        let reserve = self.batch_size.min(RESERVE_RECORDS);
        let records = std::mem::replace(&mut self.pending, Vec::with_capacity(reserve));
        let skipped = std::mem::take(&mut self.skipped);
        self.send(Job::Batch { records, skipped })
    }
}

/// Puts records in order into batches and hands them to the decoders.
fn assemble(n_files: usize, loads: &[Receiver<Load>], jobs: &[SyncSender<Job>], o: &ReadOptions) {
    let batch_size = o.batch_size.max(1);
    let mut out = Batcher {
        jobs,
        seq: 0,
        batch_size,
        pending: Vec::with_capacity(batch_size.min(RESERVE_RECORDS)),
        skipped: Vec::new(),
    };
    let mut shuffler = o.shuffle.map(|(size, seed)| Shuffler::new(size, seed));
    let mut position = 0u64;
    for file in 0..n_files {
        let rx = &loads[file % loads.len()];
        let mut in_file = 0u64;
        loop {
            let chunk = match rx.recv() {
                Ok(Load::Chunk(chunk)) => chunk,
                Ok(Load::EndOfFile) => break,
                Err(_) => {
                    let error = Error::InvalidArgument("a loader thread stopped".into());
                    out.send(Job::Fail(ReadError {
                        file,
                        record: None,
                        index: None,
                        error,
                    }));
                    return;
                }
            };
            out.skipped.extend(chunk.skipped);
            let owned = matches!(*chunk.data, Data::Owned(_));
            for (offset, payload) in chunk.records {
                let index = in_file;
                in_file += 1;
                let keep = o.every.is_none_or(|(i, n)| position % n == i);
                position += 1;
                if !keep {
                    continue;
                }
                let mut rec = Rec {
                    data: Arc::clone(&chunk.data),
                    payload,
                    file,
                    offset,
                    index,
                };
                let Some(shuffler) = shuffler.as_mut() else {
                    if !out.emit(rec) {
                        return;
                    }
                    continue;
                };
                if owned {
                    // A record waiting in the buffer keeps only its own bytes alive, not
                    // its whole decompressed chunk.
                    let own = rec.bytes().to_vec();
                    rec.payload = 0..own.len();
                    rec.data = Arc::new(Data::Owned(own));
                }
                if let Some(rec) = shuffler.push(rec) {
                    if !out.emit(rec) {
                        return;
                    }
                }
            }
            if let Some(error) = chunk.error {
                // As a sequential read: the records before the error in this batch are
                // not handed out; the error is.
                out.send(Job::Fail(ReadError {
                    file,
                    record: None,
                    index: None,
                    error,
                }));
                return;
            }
        }
    }
    if let Some(shuffler) = shuffler.as_mut() {
        while let Some(rec) = shuffler.drain_one() {
            if !out.emit(rec) {
                return;
            }
        }
    }
    if !out.pending.is_empty() && !o.drop_remainder {
        let records = std::mem::take(&mut out.pending);
        let skipped = std::mem::take(&mut out.skipped);
        if !out.send(Job::Batch { records, skipped }) {
            return;
        }
    }
    let skipped = std::mem::take(&mut out.skipped);
    out.send(Job::End(skipped));
}

/// One batch's records decoded (and their bytes gathered into a pooled block, where
/// there is a pool). A file cut short under its map reads as zeros past its end: that
/// is an error here, the CRCs checked or not (see [`crate::Mapped`]).
fn decode_job(
    records: Vec<Rec>,
    skipped: Vec<Damaged>,
    wanted: &[crate::batch::Wanted<'_>],
    blocks: Option<&Arc<BlockPool>>,
) -> Result<Batch, ReadError> {
    let failed = |rec: &Rec, error| ReadError {
        file: rec.file,
        record: Some(rec.offset),
        index: Some(rec.index),
        error,
    };
    let decoded = decode_batch_spans(records.iter().map(Rec::bytes), wanted).map(|mut columns| {
        let block = blocks.map(|pool| gather_spans(&mut columns, |i| records[i].bytes(), pool));
        (columns, block)
    });
    // Records read after the loader found them whole: a file cut short since reads as
    // zeros past its new end (a fault or not), which must not reach a batch.
    if let Some(cut) = cut_in(&records) {
        return Err(cut);
    }
    let (columns, block) = decoded.map_err(|e| failed(&records[e.record], e.error))?;
    Ok(Batch {
        len: records.len(),
        columns,
        skipped,
        // The records' maps or chunks are let go as soon as possible.
        records: if block.is_some() { Vec::new() } else { records },
        block,
    })
}

/// The error of the first of `records` that a file cut short under its map since took
/// (see [`crate::Mapped::cut_error`]): one `fstat` per map among them, and the records
/// asked only where the file is shorter now.
fn cut_in(records: &[Rec]) -> Option<ReadError> {
    let mut checked: Vec<*const Data> = Vec::new();
    let mut last: *const Data = std::ptr::null();
    for rec in records {
        let data = Arc::as_ptr(&rec.data);
        if data == last {
            continue;
        }
        last = data;
        let Some(map) = rec.data.mapped() else {
            continue;
        };
        if checked.contains(&data) {
            continue;
        }
        checked.push(data); // (a map is one Data for its whole file)
                            // (a map that met a cut holds zero pages from there, even once the file is whole)
        if map.cut() || map.len_now().is_some_and(|now| now < map.len() as u64) {
            let mut of_map = records
                .iter()
                .filter(|r| r.data.mapped().is_some_and(|m| std::ptr::eq(m, map)));
            if let Some((r, e)) = of_map.find_map(|r| map.cut_error(r.offset).map(|e| (r, e))) {
                // A framing error (CorruptRecordError): the offset is in it.
                return Some(ReadError {
                    file: r.file,
                    record: None,
                    index: Some(r.index),
                    error: e,
                });
            }
        }
    }
    None
}

/// A decoder thread: decodes its jobs in the order they come.
fn decode_jobs(
    jobs: &Receiver<Job>,
    out: &SyncSender<Output>,
    wanted: &[(String, Kind, Option<usize>)],
    blocks: Option<&Arc<BlockPool>>,
) {
    let wanted = wanted_of(wanted);
    while let Ok(job) = jobs.recv() {
        let output = match job {
            Job::End(skipped) => {
                let _ = out.send(Output::End(skipped));
                return;
            }
            Job::Fail(e) => Output::Item(Err(e)),
            Job::Batch { records, skipped } => {
                Output::Item(decode_job(records, skipped, &wanted, blocks))
            }
        };
        if out.send(output).is_err() {
            return;
        }
    }
}
