//! Bilinear resizing of `u8` images (height x width x channels), with TensorFlow's
//! arithmetic: `tf.image.resize(method="bilinear")` (half-pixel centres, no antialias),
//! step for step in `f32`, so the `f32` output equals TensorFlow's bit for bit.

/// For each output row (or column): the two input rows it falls between, and how far
/// it is from the first (TensorFlow's `CachedInterpolation`).
struct Taps {
    lower: Vec<usize>,
    upper: Vec<usize>,
    lerp: Vec<f32>,
}

impl Taps {
    fn new(input: usize, output: usize) -> Self {
        // `in_size / static_cast<float>(out_size)`, then the half-pixel scaler
        // `(x + 0.5f) * scale - 0.5f`, clamped to the image.
        let scale = input as f32 / output as f32;
        let last = input.saturating_sub(1) as i64;
        let mut taps = Taps {
            lower: Vec::with_capacity(output),
            upper: Vec::with_capacity(output),
            lerp: Vec::with_capacity(output),
        };
        for i in 0..output {
            let at = (i as f32 + 0.5) * scale - 0.5;
            let floor = at.floor();
            // Clamped at both ends: at widths near 2^24, f32 rounding can put `floor`
            // past the last pixel.
            taps.lower.push((floor as i64).clamp(0, last) as usize);
            taps.upper.push((at.ceil() as i64).min(last) as usize);
            taps.lerp.push(at - floor);
        }
        taps
    }
}

/// What one output value becomes.
pub trait Pixel: Copy + Send {
    fn from_f32(value: f32) -> Self;
}

impl Pixel for f32 {
    #[inline]
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Pixel for u8 {
    /// Rounded to the nearest level, halves to even (`tf.round`, `np.round`); values are
    /// within 0..=255 already.
    #[inline]
    fn from_f32(value: f32) -> Self {
        // For 0 <= value < 2^23, value + 2^23 has a unit in its last place of 1: its
        // mantissa's low bits are the nearest integer, ties to even (the default
        // rounding mode). Unlike `round_ties_even` (a call to `rintf` per value on
        // baseline x86-64) or a saturating `as u8`, this vectorizes.
        const SHIFT: f32 = 8_388_608.0;
        (value + SHIFT).to_bits() as u8
    }
}

/// Resizes `src` (`height * width * channels` bytes, rows of pixels) into `dst`
/// (`out_height * out_width * channels` values).
///
/// # Panics
/// When a slice's length does not match its dimensions, or a dimension is 0.
pub fn resize_bilinear<P: Pixel>(
    src: &[u8],
    (height, width, channels): (usize, usize, usize),
    dst: &mut [P],
    (out_height, out_width): (usize, usize),
) {
    assert!(height > 0 && width > 0 && channels > 0 && out_height > 0 && out_width > 0);
    assert_eq!(src.len(), height * width * channels, "source size");
    assert_eq!(
        dst.len(),
        out_height * out_width * channels,
        "destination size"
    );
    let ys = Taps::new(height, out_height);
    let xs = Taps::new(width, out_width);
    let row = width * channels;
    let out_row = out_width * channels;
    // Each output row: its two input rows interpolated across (`upper`, `lower`), then
    // between them. The same operations as TensorFlow's `compute_lerp`, in its order
    // (no fused multiply-add), in passes the compiler vectorizes.
    // Two input rows interpolated across, kept while the next output rows use them.
    let mut rows = [
        (usize::MAX, vec![0f32; out_row]),
        (usize::MAX, vec![0f32; out_row]),
    ];
    let mut wide = vec![0f32; row + 1];
    for (y, out) in dst.chunks_exact_mut(out_row).enumerate() {
        let (top, bottom) = (ys.lower[y], ys.upper[y]);
        for wanted in [top, bottom] {
            if rows[0].0 != wanted && rows[1].0 != wanted {
                // Replace the row that is not the other one wanted.
                let free = usize::from(rows[0].0 == top || rows[0].0 == bottom);
                let input = &src[wanted * row..][..row];
                across(input, &xs, channels, &mut wide, &mut rows[free].1);
                rows[free].0 = wanted;
            }
        }
        let upper = &rows[usize::from(rows[0].0 != top)].1;
        let lower = &rows[usize::from(rows[0].0 != bottom)].1;
        let y_lerp = ys.lerp[y];
        for ((value, &u), &l) in out.iter_mut().zip(upper).zip(lower) {
            *value = P::from_f32(u + (l - u) * y_lerp);
        }
    }
}

/// One input row interpolated at each output column: `left + (right - left) * lerp`.
/// `wide` is scratch space of at least `row.len() + 1` values.
fn across(row: &[u8], xs: &Taps, channels: usize, wide: &mut [f32], out: &mut [f32]) {
    if channels == 3 || channels == 4 {
        // Four lanes per pixel (RGB and the next pixel's R, which the next pixel's store
        // overwrites, or RGBA): whole-pixel vector operations instead of one value at a
        // time. Each lane's arithmetic is the scalar one, so the values are the same.
        for (w, &v) in wide.iter_mut().zip(row) {
            *w = f32::from(v);
        }
        let out_len = out.len();
        for (x, ((&l, &r), &lerp)) in xs.lower.iter().zip(&xs.upper).zip(&xs.lerp).enumerate() {
            let left: [f32; 4] = wide[l * channels..][..4].try_into().expect("4 lanes");
            let right: [f32; 4] = wide[r * channels..][..4].try_into().expect("4 lanes");
            let mut lanes = [0f32; 4];
            for c in 0..4 {
                lanes[c] = left[c] + (right[c] - left[c]) * lerp;
            }
            let at = x * channels;
            if at + 4 <= out_len {
                out[at..at + 4].copy_from_slice(&lanes);
            } else {
                out[at..].copy_from_slice(&lanes[..channels]);
            }
        }
        return;
    }
    for (x, pixel) in out.chunks_exact_mut(channels).enumerate() {
        let left = &row[xs.lower[x] * channels..][..channels];
        let right = &row[xs.upper[x] * channels..][..channels];
        let lerp = xs.lerp[x];
        for ((value, &a), &b) in pixel.iter_mut().zip(left).zip(right) {
            let (a, b) = (f32::from(a), f32::from(b));
            *value = a + (b - a) * lerp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(height: usize, width: usize, channels: usize) -> Vec<u8> {
        (0..height * width * channels)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect()
    }

    #[test]
    fn the_same_size_gives_the_pixels_back() {
        let src = image(5, 7, 3);
        let mut out = vec![0u8; src.len()];
        resize_bilinear(&src, (5, 7, 3), &mut out, (5, 7));
        assert_eq!(out, src);
    }

    #[test]
    fn halving_averages_each_two_by_two_block() {
        // Half-pixel centres: output (y, x) sits at input (2y + 0.5, 2x + 0.5), the
        // middle of a 2x2 block, so it is the block's mean.
        let src = image(4, 6, 2);
        let mut out = vec![0f32; 2 * 3 * 2];
        resize_bilinear(&src, (4, 6, 2), &mut out, (2, 3));
        for y in 0..2 {
            for x in 0..3 {
                for c in 0..2 {
                    let at = |yy: usize, xx: usize| f32::from(src[(yy * 6 + xx) * 2 + c]);
                    let (a, b) = (at(2 * y, 2 * x), at(2 * y, 2 * x + 1));
                    let (d, e) = (at(2 * y + 1, 2 * x), at(2 * y + 1, 2 * x + 1));
                    let mean = (a + b + d + e) / 4.0;
                    assert!((out[(y * 3 + x) * 2 + c] - mean).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn edges_clamp_and_u8_rounds() {
        // One input pixel: every output is that pixel.
        let mut out = vec![0u8; 3 * 4];
        resize_bilinear(&[9, 200, 33], (1, 1, 3), &mut out, (2, 2));
        assert_eq!(out, [9, 200, 33].repeat(4));
        // Two pixels 0 and 255 stretched to 4: positions -0.25, 0.25, 0.75, 1.25.
        let mut out = vec![0f32; 4];
        resize_bilinear(&[0, 255], (1, 2, 1), &mut out, (1, 4));
        assert_eq!(out, [0.0, 63.75, 191.25, 255.0]);
        let mut rounded = vec![0u8; 4];
        resize_bilinear(&[0, 255], (1, 2, 1), &mut rounded, (1, 4));
        assert_eq!(rounded, [0, 64, 191, 255]);
        // Halves go to the even level: 0.5 -> 0, 1.5 -> 2.
        let mut half = [9u8; 2];
        resize_bilinear(&[0, 1, 1, 2], (1, 4, 1), &mut half, (1, 2));
        assert_eq!(half, [0, 2]);
    }
}
