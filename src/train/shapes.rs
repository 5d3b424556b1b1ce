//! `shapes`: a built-in RGB image set drawn procedurally, so an image model trains with nothing
//! to download (the browser's image mode, `cdl train --model unet-compact --data shapes`). Every
//! image is a pure function of (seed, index) (`Scene`).

use crate::diffusion::rng::HostRng;
use crate::train::images::ImageSet;

/// The name the CLI and the page use for this set.
pub const NAME: &str = "shapes";
/// Stream tag of the drawing parameters (one stream per image).
pub const TAG_SHAPES: u32 = 0x12;
/// Images in the set when the caller has no reason to pick another number.
pub const DEFAULT_COUNT: usize = 10_000;

/// The kinds of shape, in the order the generator picks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Disc,
    Square,
    Triangle,
}

/// One image's drawing parameters, in units of the side (0..1, y down).
///
/// A two-colour linear gradient in a random direction, with one filled disc, square or triangle
/// of a third colour on it, its edges anti-aliased over one pixel: the structure a small UNet
/// learns in minutes (flat regions, sharp edges, a few colours) and enough variety (shape, size,
/// place, colours) that samples show whether it did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scene {
    pub shape: Shape,
    /// Centre of the shape.
    pub center: [f64; 2],
    /// Radius (half the side for a square, the circumradius for a triangle).
    pub radius: f64,
    /// Rotation of squares and triangles, radians.
    pub angle: f64,
    /// Colours in [0, 1]: gradient start, gradient end, shape.
    pub colors: [[f64; 3]; 3],
    /// Direction of the gradient, radians.
    pub gradient: f64,
}

impl Scene {
    /// The parameters of image `index` of the set drawn with `seed`.
    pub fn of(seed: u64, index: usize) -> Self {
        let rng = HostRng::new(seed, [index as u32, TAG_SHAPES, (index as u64 >> 32) as u32]);
        let u = |k: u64| rng.uniform_at(k);
        let shape = match (u(0) * 3.0) as usize {
            0 => Shape::Disc,
            1 => Shape::Square,
            _ => Shape::Triangle,
        };
        let radius = 0.14 + 0.16 * u(1);
        let center = [radius + (1.0 - 2.0 * radius) * u(2), radius + (1.0 - 2.0 * radius) * u(3)];
        let color = |k: u64| [u(k), u(k + 1), u(k + 2)];
        // Backgrounds are muted, shapes saturated: the shape is one of six strong hues.
        let mut colors = [color(6), color(9), [0.0; 3]];
        for c in &mut colors[..2] {
            for v in c.iter_mut() {
                *v = 0.15 + 0.5 * *v;
            }
        }
        let hue = (u(12) * 6.0) as usize % 6;
        let (hi, lo) = (0.85 + 0.15 * u(13), 0.1 * u(14));
        colors[2] = match hue {
            0 => [hi, lo, lo],
            1 => [lo, hi, lo],
            2 => [lo, lo, hi],
            3 => [hi, hi, lo],
            4 => [hi, lo, hi],
            _ => [lo, hi, hi],
        };
        Self {
            shape,
            center,
            radius,
            angle: u(4) * std::f64::consts::TAU,
            colors,
            gradient: u(5) * std::f64::consts::TAU,
        }
    }

    /// Signed distance (side units) from `p` to the shape's edge: negative inside.
    pub fn distance(&self, p: [f64; 2]) -> f64 {
        let (dx, dy) = (p[0] - self.center[0], p[1] - self.center[1]);
        let (s, c) = self.angle.sin_cos();
        // Into the shape's own frame.
        let (x, y) = (c * dx + s * dy, -s * dx + c * dy);
        match self.shape {
            Shape::Disc => (dx * dx + dy * dy).sqrt() - self.radius,
            Shape::Square => {
                let (qx, qy) = (x.abs() - self.radius, y.abs() - self.radius);
                let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
                outside + qx.max(qy).min(0.0)
            }
            Shape::Triangle => {
                // Equilateral: the largest distance to its three edge lines (exact inside, a
                // bound outside, which is all one pixel of anti-aliasing needs).
                let inradius = self.radius / 2.0;
                (0..3)
                    .map(|k| {
                        let a = std::f64::consts::FRAC_PI_2 + k as f64 * std::f64::consts::TAU / 3.0;
                        x * a.cos() + y * a.sin() - inradius
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            }
        }
    }

    /// Draws the scene as (3, size, size) u8, planes R, G, B.
    pub fn render(&self, size: usize) -> Vec<u8> {
        let plane = size * size;
        let mut out = vec![0u8; 3 * plane];
        let (gs, gc) = self.gradient.sin_cos();
        let px = 1.0 / size as f64;
        for r in 0..size {
            for col in 0..size {
                let p = [(col as f64 + 0.5) * px, (r as f64 + 0.5) * px];
                // Gradient position in [0, 1] along its direction through the centre.
                let t = (0.5 + (p[0] - 0.5) * gc + (p[1] - 0.5) * gs).clamp(0.0, 1.0);
                // Coverage of the shape: 1 inside, 0 outside, linear over one pixel.
                let cover = (0.5 - self.distance(p) / px).clamp(0.0, 1.0);
                for ch in 0..3 {
                    let bg = self.colors[0][ch] * (1.0 - t) + self.colors[1][ch] * t;
                    let v = bg * (1.0 - cover) + self.colors[2][ch] * cover;
                    out[ch * plane + r * size + col] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}

/// `n` images of size×size RGB drawn with `seed` (image i is `Scene::of(seed, i)`), flips off.
pub fn generate(n: usize, size: u32, seed: u64) -> ImageSet {
    let mut set = ImageSet::new(size, 3);
    set.images.reserve(n * set.image_bytes());
    for i in 0..n {
        set.images.extend(Scene::of(seed, i).render(size as usize));
        set.names.push(format!("{NAME}-{i}"));
    }
    set
}
