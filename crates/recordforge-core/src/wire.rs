//! Protobuf wire-format primitives shared by the Example and SequenceExample codecs.
//!
//! Decoding never trusts a length: every length-delimited field is checked against the
//! bytes that remain before it is sliced, so no allocation is ever sized from input.

use crate::error::{Error, Result};

pub(crate) const WT_VARINT: u8 = 0;
pub(crate) const WT_FIXED64: u8 = 1;
pub(crate) const WT_LEN: u8 = 2;
pub(crate) const WT_START_GROUP: u8 = 3;
pub(crate) const WT_END_GROUP: u8 = 4;
pub(crate) const WT_FIXED32: u8 = 5;

/// Nesting limit for unknown groups, the same as protobuf's default recursion limit.
const MAX_GROUP_DEPTH: usize = 100;

/// A cursor over one message's bytes. `base` is the message's position inside the
/// record, so errors report positions relative to the whole record.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize, message: &'static str) -> Self {
        Cursor {
            buf,
            pos: 0,
            base,
            message,
        }
    }

    #[inline]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Consumes `n` bytes already looked at (with [`peek`](Cursor::peek)).
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Absolute position (within the record) of the next byte.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn error(&self, what: &'static str) -> Error {
        Error::Decode {
            message: self.message,
            what,
            position: self.position(),
        }
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64> {
        // One byte: most tags and lengths.
        if let Some(&byte) = self.buf.get(self.pos) {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error("varint runs past the end"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(self.error("varint longer than 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// Reads a tag; returns (field number, wire type).
    #[inline]
    pub(crate) fn tag(&mut self) -> Result<(u32, u8)> {
        let start = self.pos;
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            self.pos = start;
            return Err(self.error("invalid field number"));
        }
        Ok((field as u32, (tag & 7) as u8))
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(self.error("length runs past the end"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a length-delimited payload; returns (payload, absolute position of payload).
    #[inline]
    pub(crate) fn len_delimited(&mut self) -> Result<(&'a [u8], usize)> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.error("length runs past the end"))?;
        let at = self.position();
        Ok((self.bytes(len)?, at))
    }

    #[inline]
    pub(crate) fn fixed32(&mut self) -> Result<[u8; 4]> {
        let b = self.bytes(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// Skips one field of the given wire type (the tag is already consumed).
    pub(crate) fn skip(&mut self, field: u32, wire_type: u8) -> Result<()> {
        match wire_type {
            WT_VARINT => self.varint().map(|_| ()),
            WT_FIXED64 => self.bytes(8).map(|_| ()),
            WT_LEN => self.len_delimited().map(|_| ()),
            WT_FIXED32 => self.bytes(4).map(|_| ()),
            WT_START_GROUP => self.skip_group(field),
            WT_END_GROUP => Err(self.error("unexpected end-group tag")),
            _ => Err(self.error("invalid wire type")),
        }
    }

    fn skip_group(&mut self, field: u32) -> Result<()> {
        // An explicit stack of open group field numbers: no recursion on untrusted input.
        let mut open = vec![field];
        while let Some(&current) = open.last() {
            if self.at_end() {
                return Err(self.error("group runs past the end"));
            }
            let (f, wt) = self.tag()?;
            match wt {
                WT_START_GROUP => {
                    if open.len() >= MAX_GROUP_DEPTH {
                        return Err(self.error("groups nested too deeply"));
                    }
                    open.push(f);
                }
                WT_END_GROUP => {
                    if f != current {
                        return Err(self.error("mismatched end-group tag"));
                    }
                    open.pop();
                }
                _ => self.skip(f, wt)?,
            }
        }
        Ok(())
    }
}

/// Calls `f(payload, position)` for each length-delimited field number `field` of a
/// message (other fields are skipped): e.g. the entries of a `Features` map.
pub(crate) fn for_each_len_field<'a>(
    buf: &'a [u8],
    base: usize,
    message: &'static str,
    field: u32,
    mut f: impl FnMut(&'a [u8], usize) -> Result<()>,
) -> Result<()> {
    let mut c = Cursor::new(buf, base, message);
    while !c.at_end() {
        let (number, wt) = c.tag()?;
        if number != field || wt != WT_LEN {
            c.skip(number, wt)?;
            continue;
        }
        let (payload, at) = c.len_delimited()?;
        f(payload, at)?;
    }
    Ok(())
}

#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // ceil(bits / 7) without a division (protobuf's formula); v == 0 takes one byte.
    let log2 = 63 - (v | 1).leading_zeros() as usize;
    (log2 * 9 + 73) / 64
}

/// Where encoded bytes go: a growing `Vec`, or a [`SliceOut`] of the exact size.
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends one byte.
    fn put_byte(&mut self, b: u8);
    /// Room for `additional` more bytes (a hint).
    fn reserve(&mut self, _additional: usize) {}
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

/// A buffer filled from its start, for an encoding whose size is computed first (a
/// write past its end panics).
pub struct SliceOut<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceOut<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceOut { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl Out for SliceOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    #[inline]
    fn put_byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }
}

#[inline]
pub(crate) fn put_varint(out: &mut (impl Out + ?Sized), mut v: u64) {
    while v >= 0x80 {
        out.put_byte((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_byte(v as u8);
}

/// Size of a length-delimited field (one-byte tag) whose payload has `len` bytes.
#[inline]
pub(crate) fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Writes the one-byte tag and length prefix of a length-delimited field.
#[inline]
pub(crate) fn put_len_header(out: &mut (impl Out + ?Sized), field: u8, len: usize) {
    out.put_byte((field << 3) | WT_LEN);
    put_varint(out, len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
            1 << 63,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut c = Cursor::new(&out, 0, "test");
            assert_eq!(c.varint().unwrap(), v);
            assert!(c.at_end());
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let buf = [0xffu8; 11];
        assert!(Cursor::new(&buf, 0, "t").varint().is_err());
        let buf = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Cursor::new(&buf, 0, "t").varint().is_err());
    }

    #[test]
    fn nested_groups_are_skipped() {
        // field 2 start group, field 3 start group, field 3 end, field 2 end, then varint.
        let buf = [0x13, 0x1b, 0x1c, 0x14, 0x08, 0x01];
        let mut c = Cursor::new(&buf, 0, "t");
        let (f, wt) = c.tag().unwrap();
        c.skip(f, wt).unwrap();
        assert_eq!(c.tag().unwrap(), (1, WT_VARINT));
    }
}
