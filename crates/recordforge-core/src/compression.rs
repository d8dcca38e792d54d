//! GZIP and ZLIB layers, byte-compatible with TensorFlow.
//!
//! Both directions drive zlib itself (statically linked through `libz-sys`) with
//! TensorFlow's parameters: level 6, 15-bit window, memLevel 9, zlib's own gzip header
//! (mtime 0, OS 3), so the compressed bytes equal TensorFlow's, flushes included (see
//! [`Encoder`]'s `flush`). The decoder insists on the stream's end marker and checksum:
//! a stream cut short is an error, never a silent end of file.

use std::fmt;
use std::io::{self, Read, Write};

use flate2::{Decompress, FlushDecompress, Status};

use crate::crc::masked_crc32c;
use crate::deflate::{Deflate, DeflateFlush, GZIP_WINDOW_BITS, ZLIB_WINDOW_BITS};
use crate::error::{Error, Result};

/// The compression of a TFRecord file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zlib,
}

impl Compression {
    /// Parses TensorFlow's names (case-insensitive): "", "none", "gzip", "zlib".
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zlib" => Ok(Compression::Zlib),
            other => Err(Error::InvalidArgument(format!(
                "unknown compression {other:?}: expected None, \"gzip\" or \"zlib\""
            ))),
        }
    }

    /// Detects the compression from the first bytes of a file. A valid TFRecord header
    /// (length whose masked CRC matches) wins; then the GZIP magic; then a ZLIB header.
    /// Anything else is read as plain TFRecord, whose framing checks then report it.
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.len() >= 12 {
            let stored = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            if masked_crc32c(&prefix[..8]) == stored {
                return Compression::None;
            }
        }
        if prefix.len() >= 2 && prefix[0] == 0x1f && prefix[1] == 0x8b {
            return Compression::Gzip;
        }
        if prefix.len() >= 2
            && prefix[0] & 0x0f == 8
            && prefix[0] >> 4 <= 7
            && (u16::from(prefix[0]) * 256 + u16::from(prefix[1])) % 31 == 0
        {
            return Compression::Zlib;
        }
        Compression::None
    }

    /// The name the API takes and `dataset.json` stores (`None` for an uncompressed
    /// file), as [`Compression::parse`] reads it.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zlib => Some("zlib"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or("none"))
    }
}

/// Marker carried inside `io::Error` for failures of the compressed layer, so the framing
/// reader can report them as corruption rather than as operating-system errors.
#[derive(Debug)]
pub struct CompressedStreamError(pub String);

impl fmt::Display for CompressedStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CompressedStreamError {}

fn stream_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        CompressedStreamError(msg.into()),
    )
}

/// If `e` came from the compressed layer, its message.
pub fn compressed_stream_error(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<CompressedStreamError>())
        .map(|c| c.0.clone())
}

const WINDOW_BITS: u8 = 15;
const CHUNK: usize = 256 * 1024;

/// A writer that compresses (or passes through) into `W`.
pub struct Encoder<W: Write> {
    inner: W,
    deflate: Option<Deflate>,
    out: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        let deflate = match compression {
            Compression::None => None,
            Compression::Gzip => Some(Deflate::new(GZIP_WINDOW_BITS)?),
            Compression::Zlib => Some(Deflate::new(ZLIB_WINDOW_BITS)?),
        };
        Ok(Encoder {
            inner,
            deflate,
            out: Vec::with_capacity(if compression == Compression::None {
                0
            } else {
                CHUNK
            }),
        })
    }

    fn run(&mut self, mut input: &[u8], flush: DeflateFlush) -> io::Result<()> {
        let Some(deflate) = self.deflate.as_mut() else {
            return self.inner.write_all(input);
        };
        loop {
            self.out.clear();
            let (consumed, ended) = deflate.run(input, &mut self.out, flush)?;
            input = &input[consumed..];
            self.inner.write_all(&self.out)?;
            // zlib is done with a call once it leaves output space unused (and, to finish,
            // once it has written the end of the stream).
            let output_full = self.out.len() == self.out.capacity();
            let done = match flush {
                DeflateFlush::Finish => ended,
                DeflateFlush::No | DeflateFlush::Partial => input.is_empty() && !output_full,
            };
            if done {
                return Ok(());
            }
        }
    }

    /// The writer below.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes the end of the compressed stream and returns the inner writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if self.deflate.is_some() {
            self.run(&[], DeflateFlush::Finish)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run(buf, DeflateFlush::No)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.run(buf, DeflateFlush::No)
    }

    /// Makes everything written so far decodable from the bytes below, then flushes them.
    /// A compressed stream gets TensorFlow's flush (`Z_PARTIAL_FLUSH`, byte for byte
    /// what `tf.io.TFRecordWriter.flush` writes): a reader of the file as it is then gets
    /// every byte written so far, and then the error of a stream without its end. A
    /// second flush with nothing written in between adds nothing.
    fn flush(&mut self) -> io::Result<()> {
        if self.deflate.is_some() {
            self.run(&[], DeflateFlush::Partial)?;
        }
        self.inner.flush()
    }
}

/// A reader that decompresses GZIP (one or more members) or ZLIB from `R`.
pub struct Decoder<R: Read> {
    inner: R,
    gzip: bool,
    decompress: Decompress,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    input_done: bool,
    stream_ended: bool,
    /// Compressed bytes consumed so far, for error messages.
    consumed: u64,
    /// An error met by a call that also produced bytes: those are handed out first, and
    /// the error is returned by every later call.
    failed: Option<String>,
}

impl<R: Read> Decoder<R> {
    /// `compression` must be `Gzip` or `Zlib`.
    pub fn new(inner: R, compression: Compression) -> Self {
        let gzip = compression == Compression::Gzip;
        Decoder {
            inner,
            gzip,
            decompress: Self::fresh(gzip),
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            input_done: false,
            stream_ended: false,
            consumed: 0,
            failed: None,
        }
    }

    fn fresh(gzip: bool) -> Decompress {
        if gzip {
            Decompress::new_gzip(WINDOW_BITS)
        } else {
            Decompress::new(true)
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end && !self.input_done {
            self.start = 0;
            self.end = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if self.end == 0 {
                self.input_done = true;
            }
        }
        Ok(())
    }

    /// After one stream ended: a gzip file may hold further members; anything else after
    /// the end is corruption.
    fn after_stream_end(&mut self) -> io::Result<bool> {
        self.fill()?;
        if self.start == self.end {
            return Ok(false);
        }
        if self.gzip {
            self.decompress = Self::fresh(true);
            self.stream_ended = false;
            Ok(true)
        } else {
            Err(stream_error(format!(
                "unexpected bytes after the end of the zlib stream at compressed offset {}",
                self.consumed
            )))
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        if let Some(msg) = &self.failed {
            return Err(stream_error(msg.clone()));
        }
        loop {
            if self.stream_ended && !self.after_stream_end()? {
                return Ok(0);
            }
            self.fill()?;
            let before_in = self.decompress.total_in();
            let before_out = self.decompress.total_out();
            let result = self.decompress.decompress(
                &self.buf[self.start..self.end],
                dst,
                FlushDecompress::None,
            );
            let consumed = (self.decompress.total_in() - before_in) as usize;
            let produced = (self.decompress.total_out() - before_out) as usize;
            let status = match result {
                Ok(status) => status,
                Err(e) => {
                    // zlib has consumed input up to the point where it failed; what it
                    // wrote before that is good, and is not lost with the error.
                    let failed_at = self.consumed + consumed as u64;
                    let msg = format!("{e} (after {failed_at} compressed bytes)");
                    if produced > 0 {
                        self.failed = Some(msg);
                        return Ok(produced);
                    }
                    self.failed = Some(msg.clone());
                    return Err(stream_error(msg));
                }
            };
            self.start += consumed;
            self.consumed += consumed as u64;
            if status == Status::StreamEnd {
                self.stream_ended = true;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if self.stream_ended {
                continue;
            }
            if self.input_done && self.start == self.end {
                return Err(stream_error(format!(
                    "compressed stream cut short: it ends after {} bytes without its end marker",
                    self.consumed
                )));
            }
            if consumed == 0 && self.start < self.end {
                return Err(stream_error(format!(
                    "decompressor made no progress at compressed offset {}",
                    self.consumed
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], c: Compression) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), c).unwrap();
        for chunk in data.chunks(1000) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    fn decompress(data: &[u8], c: Compression) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(data, c).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn roundtrip_and_detect() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Gzip, Compression::Zlib] {
            let z = compress(&data, c);
            assert_eq!(Compression::detect(&z), c);
            assert_eq!(decompress(&z, c).unwrap(), data);
        }
        let gz = compress(b"abc", Compression::Gzip);
        // zlib's gzip header: no flags, mtime 0, xfl 0, OS 3 (Unix).
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    }

    #[test]
    fn truncation_is_an_error() {
        let data = vec![7u8; 10_000];
        for c in [Compression::Gzip, Compression::Zlib] {
            let z = compress(&data, c);
            for cut in 0..z.len() {
                let r = decompress(&z[..cut], c);
                assert!(r.is_err(), "{c} cut at {cut} not detected");
            }
        }
    }

    #[test]
    fn flush_makes_everything_written_decodable() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        for c in [Compression::Gzip, Compression::Zlib] {
            let mut e = Encoder::new(Vec::new(), c).unwrap();
            // Before anything is written, then twice in a row: the second adds nothing.
            e.flush().unwrap();
            e.write_all(&data[..1000]).unwrap();
            e.flush().unwrap();
            let once = e.inner.clone();
            e.flush().unwrap();
            assert_eq!(e.inner, once, "{c}: a second flush wrote more");
            e.write_all(&data[1000..]).unwrap();
            e.flush().unwrap();
            let flushed = e.inner.clone();
            // The file as a reader sees it now: every byte so far, then the cut.
            let mut d = Decoder::new(&flushed[..], c);
            let mut out = vec![0u8; data.len()];
            d.read_exact(&mut out).unwrap();
            assert_eq!(out, data);
            let err = d.read(&mut [0u8; 1]).unwrap_err();
            assert!(
                compressed_stream_error(&err).is_some_and(|m| m.contains("cut short")),
                "{c}: {err}"
            );
            let done = e.finish().unwrap();
            assert!(done.starts_with(&flushed));
            assert_eq!(decompress(&done, c).unwrap(), data);
        }
    }

    /// A stream damaged in the middle gives every byte zlib decoded before the damage,
    /// however large the reads: a failing call's output is not lost with its error.
    #[test]
    fn bytes_before_damage_are_not_lost_with_the_error() {
        let data: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for c in [Compression::Gzip, Compression::Zlib] {
            let mut z = compress(&data, c);
            let mid = z.len() / 2;
            z[mid] ^= 0xff;
            // How far zlib gets, fed one byte at a time.
            let mut d = if c == Compression::Gzip {
                Decompress::new_gzip(15)
            } else {
                Decompress::new(true)
            };
            let mut reference = Vec::with_capacity(data.len() * 2);
            for b in &z {
                let mut out = [0u8; 4096];
                let before = d.total_out();
                let failed = d
                    .decompress(&[*b], &mut out, FlushDecompress::None)
                    .is_err();
                reference.extend_from_slice(&out[..(d.total_out() - before) as usize]);
                if failed {
                    break;
                }
            }
            let mut dec = Decoder::new(&z[..], c);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            let err = loop {
                match dec.read(&mut buf) {
                    Ok(0) => panic!("{c}: damage not detected"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            assert!(compressed_stream_error(&err).is_some(), "{c}: {err}");
            assert!(
                got.len() >= reference.len().min(data.len()) - 1,
                "{c}: {} of {}",
                got.len(),
                reference.len()
            );
            let good = got.iter().zip(&data).take_while(|(a, b)| a == b).count();
            assert!(good > data.len() / 4, "{c}: {good}");
            // The error stays.
            assert!(dec.read(&mut buf).is_err());
        }
    }

    #[test]
    fn multi_member_gzip_and_zlib_trailing_garbage() {
        let mut two = compress(b"hello ", Compression::Gzip);
        two.extend(compress(b"world", Compression::Gzip));
        assert_eq!(decompress(&two, Compression::Gzip).unwrap(), b"hello world");
        let mut z = compress(b"hello", Compression::Zlib);
        z.push(0);
        assert!(decompress(&z, Compression::Zlib).is_err());
    }
}
