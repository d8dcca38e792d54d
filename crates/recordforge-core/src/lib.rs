//! recordforge-core: the byte-level engine of recordforge.
//!
//! Pure Rust, no Python: TFRecord framing (length + masked CRC32C), GZIP/ZLIB streams
//! byte-compatible with TensorFlow, and a hand-written protobuf wire codec for
//! `tf.train.Example` and `tf.train.SequenceExample`.

pub mod batch;
pub mod blocks;
pub mod columns;
pub mod compression;
pub mod crc;
pub mod csvscan;
mod deflate;
pub mod error;
pub mod example;
pub mod framing;
pub mod infer;
pub mod mapped;
mod parallel;
pub mod reader;
pub mod resize;
pub mod row;
pub mod scan;
pub mod sequence;
pub mod verify;
pub mod walker;
mod wire;

/// The most threads one reader, scan or take starts, whatever it is asked for (a number
/// beyond what a process can start would be a panic, or an abort).
pub const MAX_THREADS: usize = 256;

pub use compression::Compression;
pub use crc::{crc32c, crc32c_combine, mask, masked_crc32c, unmask};
pub use error::{CorruptKind, Error, Result};
pub use example::{decode_example, encode_example, example_size, Feature, Features};
pub use framing::{
    FileRecords, RecordReader, RecordWriter, SliceRecords, DEFAULT_MAX_RECORD_BYTES, FRAME_OVERHEAD,
};
pub use mapped::Mapped;
pub use scan::{scan_file, ScanSummary};
pub use sequence::{decode_sequence_example, encode_sequence_example, SequenceExample};
pub use wire::{Out, SliceOut};

/// Test helpers shared by the modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A reproducible xorshift64 generator: each call gives a number below its argument
    /// (the damage tests' random offsets and bits, without a dependency).
    pub(crate) fn below(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }
}
