//! CRC32C (Castagnoli) and TFRecord's CRC mask.
//!
//! The checksum itself comes from the `crc-fast` crate: carry-less multiplication folding
//! (PCLMULQDQ, VPCLMULQDQ with AVX-512, ARMv8 PMULL), picked at run time.

use crc_fast::{CrcAlgorithm, Digest};

const MASK_DELTA: u32 = 0xa282_ead8;

/// CRC32C of `data` (RFC 3720).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// Runs `crc-fast`'s one-time set-up (its choice of code for this CPU, kept in a
/// `OnceLock`) now: a process forked while another of its threads runs that set-up
/// would wait for it for ever at its own first CRC. Called when the Python module
/// loads, before the program can start threads of its own.
pub fn set_up() {
    let data = [0u8; 4096];
    let mut digest = Crc32c::default();
    digest.update(&data);
    std::hint::black_box((crc32c(&data), crc32c(&data[..7]), digest.value()));
}

/// CRC32C's polynomial, bit-reflected.
const POLY: u32 = 0x82f6_3b78;

/// `a * b mod POLY` in GF(2), both reflected (bit 31 is x^0).
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `X2N[k]` = x^(2^k) mod POLY, for every bit of a length in bits (a `u64` of bytes
/// times 8).
const X2N: [u32; 67] = {
    let mut table = [0u32; 67];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 67 {
        table[k] = p;
        p = mul_mod(p, p);
        k += 1;
    }
    table
};

/// CRC32C of `a || b` from `crc32c(a)`, `crc32c(b)` and `b`'s length (`b_len`): `crc_a`
/// times x^(8 b_len), plus `crc_b` (zlib's `crc32_combine` method, ~0.5 µs; the
/// matrix method of `crc_fast::checksum_combine` takes tens of µs per call).
pub fn crc32c_combine(crc_a: u32, crc_b: u32, b_len: u64) -> u32 {
    let mut shift = 1u32 << 31; // x^0
    let (mut n, mut k) = (b_len, 3usize); // 8 b_len = b_len * 2^3
    while n != 0 {
        if n & 1 != 0 {
            shift = mul_mod(X2N[k], shift);
        }
        n >>= 1;
        k += 1;
    }
    mul_mod(shift, crc_a) ^ crc_b
}

/// CRC32C of `a || data` from `crc` = `crc32c(a)`: the CRC carried on over more bytes.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The register holds the complement of the CRC so far (CRC32C's init and xorout are
    // both all ones).
    let mut digest = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    digest.update(data);
    digest.finalize() as u32
}

/// Records from this many bytes on are carried into a running CRC by
/// [`crc32c_combine`] (~0.5 µs) from their own CRC instead of being read again: that
/// costs less than hashing them once more from here on, even from cache.
pub const COMBINE_FROM: usize = 16 << 10;

/// `crc` carried on over one TFRecord frame (`header | data | footer`), where the
/// caller knows `data_crc` = `crc32c(data)`: large data is not read again.
#[inline]
pub fn crc32c_append_frame(
    crc: u32,
    header: &[u8],
    data: &[u8],
    data_crc: u32,
    footer: &[u8],
) -> u32 {
    let crc = crc32c_append(crc, header);
    let crc = if data.len() >= COMBINE_FROM {
        crc32c_combine(crc, data_crc, data.len() as u64)
    } else {
        crc32c_append(crc, data)
    };
    crc32c_append(crc, footer)
}

/// CRC32C of `data` computed on up to `threads` threads (contiguous parts, combined).
pub fn crc32c_threads(data: &[u8], threads: usize) -> u32 {
    const MIN_PART: usize = 4 << 20;
    let parts = threads.clamp(
        1,
        data.len().div_ceil(MIN_PART).clamp(1, crate::MAX_THREADS),
    );
    if parts == 1 {
        return crc32c(data);
    }
    let size = data.len().div_ceil(parts);
    let crcs: Vec<(u32, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(size)
            .map(|part| s.spawn(move || (crc32c(part), part.len() as u64)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("CRC thread panicked"))
            .collect()
    });
    crcs.into_iter()
        .fold(0, |acc, (crc, len)| crc32c_combine(acc, crc, len))
}

/// Incremental CRC32C over several pieces.
pub struct Crc32c(Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(Digest::new(CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

/// TFRecord's mask: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
#[inline]
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`].
#[inline]
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// `mask(crc32c(data))`, the value stored in a TFRecord frame.
#[inline]
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_frames_carry_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        for cut in [0, 1, 7, 12, 4096, 50_000, 99_999, 100_000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data), "cut {cut}");
        }
        assert_eq!(crc32c_append(0, b""), 0);
        for len in [
            0,
            1,
            COMBINE_FROM - 1,
            COMBINE_FROM,
            COMBINE_FROM + 1,
            90_000,
        ] {
            let (head, rest) = data.split_at(12);
            let (body, rest) = rest.split_at(len);
            let foot = &rest[..4];
            let start = crc32c(&data[..5]);
            let carried = crc32c_append_frame(start, head, body, crc32c(body), foot);
            let mut whole = data[..5].to_vec();
            whole.extend_from_slice(&data[..12 + len + 4]);
            assert_eq!(carried, crc32c(&whole), "len {len}");
        }
    }

    #[test]
    fn combine_and_threads_equal_one_pass() {
        let data: Vec<u8> = (0..(9u32 << 20) + 7)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        let whole = crc32c(&data);
        for cut in [0, 1, 4096, data.len() / 2, data.len()] {
            let (a, b) = data.split_at(cut);
            assert_eq!(crc32c_combine(crc32c(a), crc32c(b), b.len() as u64), whole);
        }
        for (x, y, len) in [
            (0u32, 0u32, 0u64),
            (0xdead_beef, 7, 1),
            (1, 2, 1 << 40),
            (9, 3, 12345),
        ] {
            let expected = crc_fast::checksum_combine(
                CrcAlgorithm::Crc32Iscsi,
                u64::from(x),
                u64::from(y),
                len,
            ) as u32;
            assert_eq!(crc32c_combine(x, y, len), expected, "{x:x} {y:x} {len}");
        }
        for threads in [1, 2, 3, 8] {
            assert_eq!(crc32c_threads(&data, threads), whole);
            assert_eq!(crc32c_threads(&data[..100], threads), crc32c(&data[..100]));
        }
        assert_eq!(crc32c_threads(&[], 2), 0);
    }

    #[test]
    fn rfc3720_vectors() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let asc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&asc), 0x46dd_794e);
        let desc: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&desc), 0x113f_db5c);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn beam_masked_vectors() {
        assert_eq!(masked_crc32c(&[0u8; 32]), 0x0fd7_fffa);
        assert_eq!(masked_crc32c(&[0xffu8; 32]), 0xf909_b029);
        assert_eq!(masked_crc32c(b"foo"), 0xfebe_8a61);
        assert_eq!(masked_crc32c(&3u64.to_le_bytes()), 0x0e49_99b0);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = Crc32c::default();
        for chunk in data.chunks(999) {
            c.update(chunk);
        }
        assert_eq!(c.value(), crc32c(&data));
    }

    #[test]
    fn mask_roundtrip() {
        for v in [0u32, 1, 0xdead_beef, u32::MAX, 0xa282_ead8] {
            assert_eq!(unmask(mask(v)), v);
        }
    }
}
