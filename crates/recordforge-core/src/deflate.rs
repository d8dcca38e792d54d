//! zlib's deflate, driven directly: TensorFlow compresses with `memLevel` 9, which the
//! `flate2` API cannot set, and byte-identical output needs the same parameters
//! (level 6, 15-bit window, memLevel 9, default strategy).

use std::io;
use std::os::raw::{c_int, c_void};

use libz_sys as z;

const LEVEL: c_int = 6;
const MEM_LEVEL: c_int = 9;
/// 15-bit window with a zlib header; +16 asks zlib for a gzip header and trailer.
pub(crate) const ZLIB_WINDOW_BITS: c_int = 15;
pub(crate) const GZIP_WINDOW_BITS: c_int = 15 + 16;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

unsafe extern "C" fn zalloc(_opaque: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: plain C allocation for zlib's internal state; zlib checks for NULL.
    unsafe { malloc(items as usize * size as usize) }
}

unsafe extern "C" fn zfree(_opaque: z::voidpf, ptr: z::voidpf) {
    // SAFETY: `ptr` came from `zalloc` above.
    unsafe { free(ptr) }
}

/// How far [`Deflate::run`] pushes the stream out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeflateFlush {
    /// Compress as zlib sees fit; bytes may stay inside zlib.
    No,
    /// Everything given so far comes out, decodable (`Z_PARTIAL_FLUSH`: the block is
    /// ended and followed by an empty static block, not byte-aligned). This is what
    /// TensorFlow's `ZlibOutputBuffer::Flush` does, so flushed files stay byte-identical.
    Partial,
    /// End the stream (`Z_FINISH`): end marker and checksum.
    Finish,
}

/// A deflate stream (zlib or gzip framing by `window_bits`).
pub(crate) struct Deflate {
    // Boxed: zlib keeps a pointer back to the z_stream, so it must not move.
    strm: Box<z::z_stream>,
}

// SAFETY: the z_stream and its state are owned by this value alone and only used
// through `&mut self`.
unsafe impl Send for Deflate {}
unsafe impl Sync for Deflate {}

impl Deflate {
    pub(crate) fn new(window_bits: c_int) -> io::Result<Self> {
        let mut strm = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: `strm` is a valid, boxed z_stream with allocators set.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *strm,
                LEVEL,
                z::Z_DEFLATED,
                window_bits,
                MEM_LEVEL,
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if rc != z::Z_OK {
            return Err(io::Error::other(format!(
                "deflateInit2 failed with code {rc}"
            )));
        }
        Ok(Deflate { strm })
    }

    /// Compresses from `input` into the spare capacity of `out`. Returns the input bytes
    /// consumed and whether the stream has ended (only with [`DeflateFlush::Finish`]).
    /// With a flush, call again (same mode) until `out` is left with spare capacity.
    pub(crate) fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        flush: DeflateFlush,
    ) -> io::Result<(usize, bool)> {
        let avail_in = input.len().min(z::uInt::MAX as usize);
        let spare = (out.capacity() - out.len()).min(z::uInt::MAX as usize);
        self.strm.next_in = input.as_ptr() as *mut u8;
        self.strm.avail_in = avail_in as z::uInt;
        // SAFETY: the output pointer and length stay inside `out`'s allocation.
        self.strm.next_out = unsafe { out.as_mut_ptr().add(out.len()) };
        self.strm.avail_out = spare as z::uInt;
        let flush = match flush {
            DeflateFlush::No => z::Z_NO_FLUSH,
            DeflateFlush::Partial => z::Z_PARTIAL_FLUSH,
            DeflateFlush::Finish => z::Z_FINISH,
        };
        // SAFETY: the stream was initialised by deflateInit2 and its buffers are valid.
        let rc = unsafe { z::deflate(&mut *self.strm, flush) };
        let consumed = avail_in - self.strm.avail_in as usize;
        let produced = spare - self.strm.avail_out as usize;
        // SAFETY: zlib wrote exactly `produced` bytes after the old length.
        unsafe { out.set_len(out.len() + produced) };
        self.strm.next_in = std::ptr::null_mut();
        self.strm.next_out = std::ptr::null_mut();
        match rc {
            z::Z_OK | z::Z_BUF_ERROR => Ok((consumed, false)),
            z::Z_STREAM_END => Ok((consumed, true)),
            other => Err(io::Error::other(format!(
                "deflate failed with code {other}"
            ))),
        }
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; ending it once frees zlib's state.
        unsafe {
            z::deflateEnd(&mut *self.strm);
        }
    }
}
