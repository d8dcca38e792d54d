//! The one error type of the core. Every variant documents the message it renders.

use std::fmt;
use std::io;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a framed record (or the compressed stream around it) is corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptKind {
    /// "length CRC mismatch (stored 0x…, computed 0x…)": the 8-byte length field does not
    /// match its masked CRC32C, so the length cannot be trusted.
    LengthCrcMismatch { stored: u32, computed: u32 },
    /// "data CRC mismatch (stored 0x…, computed 0x…)": the payload does not match its CRC.
    DataCrcMismatch { stored: u32, computed: u32 },
    /// "truncated record: expected N bytes, file ends after M": the stream ends inside a
    /// record. N is the full framed size when the length is known, else the 12-byte header.
    Truncated { expected: u64, got: u64 },
    /// "compressed stream error: …": the GZIP/ZLIB layer failed (bad header, bad checksum,
    /// stream cut short) at or after this point of the decompressed stream.
    Compression(String),
    /// "record claims N bytes, more than the limit of M (max_record_bytes)": the length
    /// field (its CRC intact) asks for more than the reader was allowed to hold; refused
    /// before anything is allocated or read.
    TooLarge { length: u64, limit: u64 },
    /// "the file was cut short while it was read, to N bytes (changed by another program?):
    /// the record is past its new end, in part or whole": a memory-mapped file shorter
    /// now than when it was mapped (see [`crate::Mapped`]).
    Cut { size: u64 },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::LengthCrcMismatch { stored, computed } => write!(
                f,
                "length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            CorruptKind::DataCrcMismatch { stored, computed } => write!(
                f,
                "data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            CorruptKind::Truncated { expected, got } => write!(
                f,
                "truncated record: expected {expected} bytes, file ends after {got}"
            ),
            CorruptKind::Compression(msg) => write!(f, "compressed stream error: {msg}"),
            CorruptKind::TooLarge { length, limit } => write!(
                f,
                "record claims {length} bytes, more than the limit of {limit} (max_record_bytes)"
            ),
            CorruptKind::Cut { size } => write!(
                f,
                "the file was cut short while it was read, to {size} bytes (changed by \
                 another program?): the record is past its new end, in part or whole"
            ),
        }
    }
}

/// Every failure the core can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, passed through unchanged (maps to `OSError`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// "corrupt record at offset N: <kind>": a framed record failed its checks. `offset` is
    /// the byte offset of the record's length field in the (decompressed) record stream.
    #[error("corrupt record at offset {offset}: {kind}")]
    Corrupt { offset: u64, kind: CorruptKind },
    /// "cannot decode <message>: <what> at byte N": the bytes are not a valid protobuf
    /// encoding of the expected message (bad varint, length past the end, bad wire type,
    /// float list not a multiple of 4 bytes, ...). `position` is relative to the record.
    #[error("cannot decode {message}: {what} at byte {position}")]
    Decode {
        message: &'static str,
        what: &'static str,
        position: usize,
    },
    /// "invalid argument: …": a caller passed a value the API does not accept (unknown
    /// compression name, a write after close, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// "<what>" (e.g. "feature \"x\" has 2 values, the schema says 3"): a well-formed
    /// record that does not match the schema it is read with (a fixed width, a kind),
    /// or records whose features disagree with each other (maps to `SchemaError`).
    #[error("{0}")]
    Mismatch(String),
}

impl Error {
    pub(crate) fn corrupt(offset: u64, kind: CorruptKind) -> Self {
        Error::Corrupt { offset, kind }
    }
}
