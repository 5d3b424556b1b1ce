//! Pictures for evaluation, drawn by hand on an `image::RgbImage`: scatter plots, heat maps with
//! a colormap of our own, image grids with the EDM uint8 export `to_u8` (math.md §7.1), panels
//! side by side; PNG bytes, and natively an atomic `save_png`. Not here: fonts, labels, legends,
//! anti-aliasing, file reading. Point sets are flat (n, 2) f32 slices.

use image::{Rgb, RgbImage};

use super::EvalError;

// ---------------------------------------------------------------------------------------------
// Colours and sizes

/// Background of scatter plots and padding of grids and panels.
pub const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
/// The frame and its tick marks.
pub const FRAME_COLOR: Rgb<u8> = Rgb([40, 40, 40]);
/// Data points in `scatter`.
pub const DATA_COLOR: Rgb<u8> = Rgb([190, 190, 190]);
/// Model samples in `scatter` (matplotlib's tab:blue).
pub const SAMPLE_COLOR: Rgb<u8> = Rgb([31, 119, 180]);
/// NaN cells of a heat map.
pub const NAN_COLOR: Rgb<u8> = Rgb([128, 128, 128]);
/// Fill of overlaid points on a heat map; the rim (`OVERLAY_RIM`) keeps them visible on any colour.
pub const OVERLAY_FILL: Rgb<u8> = Rgb([255, 255, 255]);
/// Rim of overlaid points, one pixel wide.
pub const OVERLAY_RIM: Rgb<u8> = Rgb([0, 0, 0]);

/// Largest side (pixels) a picture may have: keeps width·height·3 bytes well inside memory.
pub const MAX_SIDE: u32 = 16_384;

/// Most tick marks per axis; with more integer coordinates in view the ticks are left out.
const MAX_TICKS: f32 = 50.0;

/// Radius of a point disc in pixels: 0.4% of the picture side, at least 1 (2 px at 512).
fn point_radius(size: u32) -> f64 {
    (f64::from(size) * 0.004).max(1.0)
}

// ---------------------------------------------------------------------------------------------
// Bounds: the data rectangle shown

/// The rectangle [x0, x1] × [y0, y1] of data space that a plot shows (x0 < x1, y0 < y1). It maps
/// onto the whole image, x to the right, y up; pixel (c, r) has r = 0 at the top.
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

    /// Continuous pixel coordinates (column, row) of data point (x, y) in a width × height
    /// picture: column = (x − x0)/(x1 − x0)·width, row = (y1 − y)/(y1 − y0)·height.
    fn pixel_pos(self, x: f32, y: f32, width: u32, height: u32) -> (f64, f64) {
        let (x0, x1, y0, y1) = (f64::from(self.x0), f64::from(self.x1), f64::from(self.y0), f64::from(self.y1));
        ((f64::from(x) - x0) / (x1 - x0) * f64::from(width), (y1 - f64::from(y)) / (y1 - y0) * f64::from(height))
    }

    /// The pixel (column, row) that data point (x, y) falls in, None outside the picture.
    pub fn pixel(&self, x: f32, y: f32, width: u32, height: u32) -> Option<(u32, u32)> {
        let (c, r) = self.pixel_pos(x, y, width, height);
        let inside = c >= 0.0 && r >= 0.0 && c < f64::from(width) && r < f64::from(height);
        inside.then_some((c as u32, r as u32))
    }

    /// Centres of an nx × ny grid of equal cells tiling the rectangle, in heat-map order: row 0 is
    /// the top (y near y1), columns left to right. Evaluate a function there and pass the values
    /// to `heatmap_with_points` with the same bounds. Returns (ny·nx, 2).
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

    fn check(&self) -> Result<(), EvalError> {
        let finite = [self.x0, self.x1, self.y0, self.y1].iter().all(|v| v.is_finite());
        if finite && self.x0 < self.x1 && self.y0 < self.y1 {
            Ok(())
        } else {
            Err(EvalError::Invalid(format!("plot bounds {self:?}: need finite x0 < x1 and y0 < y1")))
        }
    }
}

fn check_side(what: &str, side: u32) -> Result<(), EvalError> {
    if side == 0 || side > MAX_SIDE {
        return Err(EvalError::Invalid(format!("{what} {side} px, need 1 ..= {MAX_SIDE}")));
    }
    Ok(())
}

fn check_pairs(what: &str, points: &[f32]) -> Result<(), EvalError> {
    if !points.len().is_multiple_of(2) {
        return Err(EvalError::Shape(format!("{what} has {} values, not (n, 2)", points.len())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Drawing primitives

/// Paints every pixel whose centre lies within `radius` of (cx, cy) (continuous pixel
/// coordinates); the pixel holding the centre is always painted when radius ≥ sqrt(½).
fn disc(img: &mut RgbImage, cx: f64, cy: f64, radius: f64, color: Rgb<u8>) {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let c_lo = (cx - radius).floor().max(0.0);
    let c_hi = (cx + radius).ceil().min(w - 1.0);
    let r_lo = (cy - radius).floor().max(0.0);
    let r_hi = (cy + radius).ceil().min(h - 1.0);
    if c_lo > c_hi || r_lo > r_hi {
        return;
    }
    for r in r_lo as u32..=r_hi as u32 {
        for c in c_lo as u32..=c_hi as u32 {
            let (dx, dy) = (f64::from(c) + 0.5 - cx, f64::from(r) + 0.5 - cy);
            if dx * dx + dy * dy <= radius * radius {
                img.put_pixel(c, r, color);
            }
        }
    }
}

/// Discs of `radius` at every finite point of `points`: (n, 2) under `bounds`.
fn discs(img: &mut RgbImage, bounds: &Bounds, points: &[f32], radius: f64, color: Rgb<u8>) {
    let (w, h) = (img.width(), img.height());
    for p in points.chunks_exact(2) {
        if p[0].is_finite() && p[1].is_finite() {
            let (cx, cy) = bounds.pixel_pos(p[0], p[1], w, h);
            disc(img, cx, cy, radius, color);
        }
    }
}

/// A one-pixel frame along the picture's edges; with `bounds`, tick marks pointing inwards at
/// every integer coordinate in view (left out when more than `MAX_TICKS` per axis).
fn frame(img: &mut RgbImage, bounds: Option<&Bounds>) {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return;
    }
    for c in 0..w {
        img.put_pixel(c, 0, FRAME_COLOR);
        img.put_pixel(c, h - 1, FRAME_COLOR);
    }
    for r in 0..h {
        img.put_pixel(0, r, FRAME_COLOR);
        img.put_pixel(w - 1, r, FRAME_COLOR);
    }
    let Some(b) = bounds else { return };
    let len = (w.min(h) / 80).max(2);
    // Counted in f32 first: the i64 casts below are then small and exact.
    if b.x1.floor() - b.x0.ceil() < MAX_TICKS {
        let (kx0, kx1) = (b.x0.ceil() as i64, b.x1.floor() as i64);
        for k in kx0..=kx1 {
            if let Some((c, _)) = b.pixel(k as f32, b.y0.midpoint(b.y1), w, h) {
                for t in 0..len.min(h) {
                    img.put_pixel(c, t, FRAME_COLOR);
                    img.put_pixel(c, h - 1 - t, FRAME_COLOR);
                }
            }
        }
    }
    if b.y1.floor() - b.y0.ceil() < MAX_TICKS {
        let (ky0, ky1) = (b.y0.ceil() as i64, b.y1.floor() as i64);
        for k in ky0..=ky1 {
            if let Some((_, r)) = b.pixel(b.x0.midpoint(b.x1), k as f32, w, h) {
                for t in 0..len.min(w) {
                    img.put_pixel(t, r, FRAME_COLOR);
                    img.put_pixel(w - 1 - t, r, FRAME_COLOR);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scatter plots

/// A size × size scatter plot: `data`: (n, 2) as `DATA_COLOR` discs, then `samples`: (m, 2) as
/// `SAMPLE_COLOR` discs on top, on `BACKGROUND`, then the frame with ticks. Non-finite points are
/// skipped; points outside `bounds` are clipped.
pub fn scatter(data: &[f32], samples: &[f32], bounds: Bounds, size: u32) -> Result<RgbImage, EvalError> {
    check_pairs("data", data)?;
    check_pairs("samples", samples)?;
    check_side("scatter size", size)?;
    bounds.check()?;
    let mut img = RgbImage::from_pixel(size, size, BACKGROUND);
    let radius = point_radius(size);
    discs(&mut img, &bounds, data, radius, DATA_COLOR);
    discs(&mut img, &bounds, samples, radius, SAMPLE_COLOR);
    frame(&mut img, Some(&bounds));
    Ok(img)
}

// ---------------------------------------------------------------------------------------------
// Heat maps

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

/// The range `heatmap` uses: (min, max) of the finite values (`Viridis`), or (−a, a) with a the
/// largest finite |value| (`Diverging`); None without finite values.
pub fn auto_range(values: &[f64], colormap: Colormap) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    Some(match colormap {
        Colormap::Viridis => (lo, hi),
        Colormap::Diverging => {
            let a = lo.abs().max(hi.abs());
            (-a, a)
        }
    })
}

/// `heatmap_in_range` over `auto_range` (all-non-finite grids: range (0, 1), so NaN stays grey).
/// values: (ny, nx), row 0 at the top.
pub fn heatmap(values: &[f64], nx: usize, ny: usize, size: u32, colormap: Colormap) -> Result<RgbImage, EvalError> {
    let range = auto_range(values, colormap).unwrap_or((0.0, 1.0));
    heatmap_in_range(values, nx, ny, size, colormap, range)
}

/// A size × size heat map of values: (ny, nx), row-major, row 0 drawn at the top (so with y up,
/// row 0 holds the largest y, as `Bounds::grid_centers` orders it), each cell a block of pixels
/// (nearest neighbour). Colour = colormap((v − lo)/(hi − lo)) with range = (lo, hi), clamped, so
/// ±∞ take the end colours; NaN is `NAN_COLOR`; lo = hi maps everything finite to the middle.
/// A fixed range lets several panels share one scale. Framed, without ticks.
pub fn heatmap_in_range(
    values: &[f64],
    nx: usize,
    ny: usize,
    size: u32,
    colormap: Colormap,
    range: (f64, f64),
) -> Result<RgbImage, EvalError> {
    if nx == 0 || ny == 0 || nx.checked_mul(ny) != Some(values.len()) {
        return Err(EvalError::Shape(format!("heat map of {nx} × {ny} cells given {} values", values.len())));
    }
    check_side("heat map size", size)?;
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(EvalError::Invalid(format!("heat map range ({lo}, {hi}): need finite lo <= hi")));
    }
    let mut img = RgbImage::new(size, size);
    for (c, r, px) in img.enumerate_pixels_mut() {
        let col = (u64::from(c) * nx as u64 / u64::from(size)) as usize;
        let row = (u64::from(r) * ny as u64 / u64::from(size)) as usize;
        let v = values[row * nx + col];
        let t = if hi > lo {
            (v - lo) / (hi - lo)
        } else if v.is_infinite() {
            v.signum().max(0.0)
        } else {
            0.5 + 0.0 * v // NaN stays NaN
        };
        *px = colormap.rgb(t);
    }
    frame(&mut img, None);
    Ok(img)
}

/// Draws `points`: (n, 2) under `bounds` as `OVERLAY_FILL` discs with a one-pixel `OVERLAY_RIM`,
/// on any picture (x over its width, y over its height). Non-finite points are skipped.
pub fn overlay_points(img: &mut RgbImage, bounds: Bounds, points: &[f32]) -> Result<(), EvalError> {
    check_pairs("points", points)?;
    bounds.check()?;
    let radius = point_radius(img.width().min(img.height()));
    discs(img, &bounds, points, radius + 1.0, OVERLAY_RIM);
    discs(img, &bounds, points, radius, OVERLAY_FILL);
    Ok(())
}

/// `heatmap` of values: (ny, nx) whose cells tile `bounds` (see `Bounds::grid_centers`), with
/// `points`: (n, 2) overlaid (`overlay_points`) and the frame with ticks.
pub fn heatmap_with_points(
    values: &[f64],
    nx: usize,
    ny: usize,
    size: u32,
    colormap: Colormap,
    bounds: Bounds,
    points: &[f32],
) -> Result<RgbImage, EvalError> {
    let mut img = heatmap(values, nx, ny, size, colormap)?;
    overlay_points(&mut img, bounds, points)?;
    frame(&mut img, Some(&bounds));
    Ok(img)
}

// ---------------------------------------------------------------------------------------------
// Image grids and panels

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

/// Panels left to right, top-aligned, `pad` pixels of `BACKGROUND` around and between them.
/// Size: (Σ widths + (k + 1)·pad) × (max height + 2·pad); no panels give a 0 × 0 picture.
pub fn side_by_side(images: &[&RgbImage], pad: u32) -> RgbImage {
    if images.is_empty() {
        return RgbImage::new(0, 0);
    }
    let w = images.iter().map(|im| im.width()).sum::<u32>() + pad * (images.len() as u32 + 1);
    let h = images.iter().map(|im| im.height()).max().unwrap_or(0) + 2 * pad;
    let mut out = RgbImage::from_pixel(w, h, BACKGROUND);
    let mut x0 = pad;
    for im in images {
        for (c, r, px) in im.enumerate_pixels() {
            out.put_pixel(x0 + c, pad + r, *px);
        }
        x0 += im.width() + pad;
    }
    out
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
