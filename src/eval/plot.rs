//! Picture building blocks for both targets: the data rectangle a plot shows (`Bounds`), colormaps,
//! image grids with the EDM uint8 export `to_u8` (math.md §7.1), PNG bytes, and natively an atomic
//! `save_png`. The page draws with these; native figures with titles, axes and legends are
//! `eval::figure`. Point sets are flat (n, 2) f32 slices.

use image::{Rgb, RgbImage};

use super::EvalError;

// ---------------------------------------------------------------------------------------------
// Colours and sizes

/// Background of figures and padding of image grids.
pub const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
/// NaN cells of a map.
pub const NAN_COLOR: Rgb<u8> = Rgb([128, 128, 128]);
/// Largest side (pixels) a picture may have: keeps width·height·3 bytes well inside memory.
pub const MAX_SIDE: u32 = 16_384;

// ---------------------------------------------------------------------------------------------
// Bounds: the data rectangle shown

/// The rectangle [x0, x1] × [y0, y1] of data space that a plot shows (x0 < x1, y0 < y1), x to
/// the right, y up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Left edge (data units).
    pub x0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y0: f32,
    /// Top edge.
    pub y1: f32,
}

impl Bounds {
    /// The smallest rectangle holding every finite (x, y) point of `sets` (each (n, 2); a trailing
    /// odd value is ignored), widened by `margin` × its span on each side. An axis with zero span
    /// gets span 1 around its value; no finite point at all gives [−1, 1]².
    pub fn covering(sets: &[&[f32]], margin: f32) -> Bounds {
        let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
        for p in sets.iter().flat_map(|s| s.chunks_exact(2)) {
            if p[0].is_finite() && p[1].is_finite() {
                for k in 0..2 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
            }
        }
        if lo[0] > hi[0] {
            return Bounds { x0: -1.0, x1: 1.0, y0: -1.0, y1: 1.0 };
        }
        let margin = if margin.is_finite() { margin.max(0.0) } else { 0.0 };
        let mut out = [0.0f32; 4];
        for k in 0..2 {
            let (mut a, mut b) = (lo[k], hi[k]);
            if b - a <= 0.0 {
                a -= 0.5;
                b += 0.5;
            }
            let pad = (b - a) * margin;
            out[2 * k] = a - pad;
            out[2 * k + 1] = b + pad;
        }
        Bounds { x0: out[0], x1: out[1], y0: out[2], y1: out[3] }
    }

    /// The same rectangle grown along its shorter axis (about its centre) to equal spans, so a
    /// square picture keeps the data's aspect ratio.
    pub fn squared(self) -> Bounds {
        let (w, h) = (self.x1 - self.x0, self.y1 - self.y0);
        let (cx, cy, half) = (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1), 0.5 * w.max(h));
        Bounds { x0: cx - half, x1: cx + half, y0: cy - half, y1: cy + half }
    }

    /// Centres of an nx × ny grid of equal cells tiling the rectangle, in heat-map order: row 0 is
    /// the top (y near y1), columns left to right. Evaluate a function there and pass the values
    /// to `figure::heatmap` with the same bounds. Returns (ny·nx, 2).
    pub fn grid_centers(&self, nx: usize, ny: usize) -> Vec<f32> {
        let (dx, dy) = (f64::from(self.x1 - self.x0) / nx as f64, f64::from(self.y1 - self.y0) / ny as f64);
        let mut out = Vec::with_capacity(2 * nx * ny);
        for r in 0..ny {
            let y = f64::from(self.y1) - (r as f64 + 0.5) * dy;
            for c in 0..nx {
                out.push((f64::from(self.x0) + (c as f64 + 0.5) * dx) as f32);
                out.push(y as f32);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Colormaps

/// A colormap: piecewise-linear RGB between evenly spaced control points, t ∈ [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colormap {
    /// Dark purple → blue → green → yellow, perceptually ordered: the ten colours of matplotlib's
    /// viridis at t = k/9. For magnitudes (−log p).
    Viridis,
    /// Blue → light grey → red (after Moreland's cool-warm), for signed values; automatic ranges
    /// are symmetric about 0 so that 0 is the middle grey. For logits.
    Diverging,
}

const VIRIDIS: [[u8; 3]; 10] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x28, 0x78],
    [0x3e, 0x49, 0x89],
    [0x31, 0x68, 0x8e],
    [0x26, 0x82, 0x8e],
    [0x1f, 0x9e, 0x89],
    [0x35, 0xb7, 0x79],
    [0x6d, 0xcd, 0x59],
    [0xb4, 0xde, 0x2c],
    [0xfd, 0xe7, 0x25],
];

const DIVERGING: [[u8; 3]; 5] = [[59, 76, 192], [141, 176, 254], [221, 221, 221], [244, 154, 123], [180, 4, 38]];

impl Colormap {
    /// The control points, t = k/(len − 1).
    pub fn stops(self) -> &'static [[u8; 3]] {
        match self {
            Self::Viridis => &VIRIDIS,
            Self::Diverging => &DIVERGING,
        }
    }

    /// The colour at t (clamped to [0, 1]; NaN gives `NAN_COLOR`). t = 0 and t = 1 are exactly the
    /// first and last control points.
    pub fn rgb(self, t: f64) -> Rgb<u8> {
        if t.is_nan() {
            return NAN_COLOR;
        }
        let stops = self.stops();
        let pos = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
        let i = (pos.floor() as usize).min(stops.len() - 2);
        let f = pos - i as f64;
        let mix = |k: usize| (f64::from(stops[i][k]) * (1.0 - f) + f64::from(stops[i + 1][k]) * f).round() as u8;
        Rgb([mix(0), mix(1), mix(2)])
    }
}

// ---------------------------------------------------------------------------------------------
// Image grids

/// The EDM export of a pixel value in [−1, 1]: clip(x·127.5 + 128, 0, 255), truncated toward 0
/// as PyTorch's `.to(torch.uint8)` does (math.md §7.1): −1 → 0, 0 → 128, 1 → 255. NaN → 0.
pub fn to_u8(x: f32) -> u8 {
    (x * 127.5 + 128.0).clamp(0.0, 255.0) as u8
}

/// Tiles images: (n, channels, size, size) in [−1, 1], CHW, into rows of cols' = min(cols, n)
/// tiles, image k at column k % cols', row k / cols', its top-left pixel at
/// (pad + (k % cols')·(size + pad), pad + (k / cols')·(size + pad)); padding is `BACKGROUND`.
/// Pixels go through `to_u8`; one channel is replicated to grey RGB, three are R, G, B.
/// The picture is (cols'·size + (cols' + 1)·pad) × (rows·size + (rows + 1)·pad).
pub fn image_grid(
    images: &[f32],
    n: usize,
    channels: usize,
    size: usize,
    cols: usize,
    pad: usize,
) -> Result<RgbImage, EvalError> {
    if n == 0 {
        return Err(EvalError::TooFew { what: "image grid", n, need: 1 });
    }
    if channels != 1 && channels != 3 {
        return Err(EvalError::Shape(format!("image grid of {channels} channels, need 1 or 3")));
    }
    if size == 0 || cols == 0 {
        return Err(EvalError::Invalid(format!("image grid with tile size {size} and {cols} columns")));
    }
    let plane = size * size;
    if n.checked_mul(channels * plane) != Some(images.len()) {
        let msg = format!("{} values for {n} images of {channels} × {size} × {size}", images.len());
        return Err(EvalError::Shape(msg));
    }
    let cols = cols.min(n);
    let rows = n.div_ceil(cols);
    let side = |k: usize| k.checked_mul(size + pad).and_then(|v| v.checked_add(pad));
    let (w, h) = (side(cols), side(rows));
    let (w, h) = match (w.and_then(|w| u32::try_from(w).ok()), h.and_then(|h| u32::try_from(h).ok())) {
        (Some(w), Some(h)) if w <= MAX_SIDE && h <= MAX_SIDE => (w, h),
        _ => return Err(EvalError::Invalid(format!("image grid larger than {MAX_SIDE} px a side"))),
    };
    let mut img = RgbImage::from_pixel(w, h, BACKGROUND);
    for (k, im) in images.chunks_exact(channels * plane).enumerate() {
        let (x0, y0) = (pad + (k % cols) * (size + pad), pad + (k / cols) * (size + pad));
        for r in 0..size {
            for c in 0..size {
                let at = r * size + c;
                let px = if channels == 1 {
                    let g = to_u8(im[at]);
                    [g, g, g]
                } else {
                    [to_u8(im[at]), to_u8(im[plane + at]), to_u8(im[2 * plane + at])]
                };
                // In range: x0 + c < w and y0 + r < h, both ≤ MAX_SIDE.
                img.put_pixel((x0 + c) as u32, (y0 + r) as u32, Rgb(px));
            }
        }
    }
    Ok(img)
}

// ---------------------------------------------------------------------------------------------
// PNG

/// The picture as PNG file bytes (8-bit RGB).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>, EvalError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| EvalError::Encode(e.to_string()))?;
    Ok(out)
}

/// Writes the picture as a PNG file, atomically (`train::checkpoint::write_atomic`: temporary
/// file, fsync, rename): on error `path` keeps its previous contents and the error names it.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_png(path: impl AsRef<std::path::Path>, img: &RgbImage) -> Result<(), EvalError> {
    let bytes = png_bytes(img)?;
    super::write_file_atomic(path.as_ref(), &bytes)
}
