//! Canvas pictures: points over the data, loss curves, heat maps. Plain 2-D canvas calls; the
//! view of the standardized plane is fixed (`VIEW`) so pictures of different models compare.

use web_sys::CanvasRenderingContext2d as Ctx;

use super::dom;
use crate::eval::plot::Colormap;

/// Half-width of the standardized plane shown in scatter plots and maps.
pub use crate::eval::density::VIEW;

pub const DATA_COLOR: &str = "rgba(120,120,120,0.35)";
pub const DATA_ON_MAP_COLOR: &str = "rgba(0,0,0,0.4)";
pub const STD_COLOR: &str = "#1f6fb2";
pub const CDL_COLOR: &str = "#d2691e";
pub const SAMPLE_COLOR: &str = "rgba(200,40,60,0.75)";

/// Canvas pixel of a standardized point.
pub fn to_px(w: f64, h: f64, x: f64, y: f64) -> (f64, f64) {
    ((x / VIEW + 1.0) * 0.5 * w, (1.0 - y / VIEW) * 0.5 * h)
}

/// A standardized point of a canvas pixel.
pub fn from_px(w: f64, h: f64, px: f64, py: f64) -> (f64, f64) {
    ((px / w * 2.0 - 1.0) * VIEW, (1.0 - py / h * 2.0) * VIEW)
}

fn clear(canvas: &web_sys::HtmlCanvasElement, ctx: &Ctx) -> (f64, f64) {
    let (w, h) = (f64::from(canvas.width()), f64::from(canvas.height()));
    ctx.set_fill_style_str("#fff");
    ctx.fill_rect(0.0, 0.0, w, h);
    (w, h)
}

fn dots(ctx: &Ctx, w: f64, h: f64, xy: impl Iterator<Item = (f64, f64)>, color: &str, r: f64) {
    ctx.set_fill_style_str(color);
    for (x, y) in xy {
        let (px, py) = to_px(w, h, x, y);
        ctx.fill_rect(px - r, py - r, 2.0 * r, 2.0 * r);
    }
}

/// A map under a scatter plot: values on a g×g grid over the view (row 0 at the top), drawn with
/// `colormap` (the CLI's: viridis for log p, the diverging map for logits).
pub struct Heat<'a> {
    pub values: &'a [f64],
    pub g: usize,
    pub colormap: Colormap,
}

/// Data (grey, or black over a map; at most `max_data` points) and samples (red) on canvas `id`,
/// over `heat` when given.
pub fn scatter(id: &str, data: &[f32], max_data: usize, samples: &[f64], heat: Option<Heat>) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    let mapped = heat.is_some_and(|m| heat_map(&ctx, w, h, &m));
    let n = data.len() / 2;
    let stride = n.div_ceil(max_data.max(1)).max(1);
    let pts = (0..n).step_by(stride).map(|i| (f64::from(data[2 * i]), f64::from(data[2 * i + 1])));
    dots(&ctx, w, h, pts, if mapped { DATA_ON_MAP_COLOR } else { DATA_COLOR }, 1.2);
    let s = samples.chunks_exact(2).map(|p| (p[0], p[1]));
    dots(&ctx, w, h, s, SAMPLE_COLOR, 1.5);
}

/// Draws the map, normalised to its own range (symmetric about 0 for the diverging map); false
/// when there is nothing to draw.
fn heat_map(ctx: &Ctx, w: f64, h: f64, m: &Heat) -> bool {
    let finite = m.values.iter().copied().filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if m.colormap == Colormap::Diverging {
        let r = lo.abs().max(hi.abs());
        (lo, hi) = (-r, r);
    }
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || m.values.len() != m.g * m.g {
        return false;
    }
    let (cw, ch) = (w / m.g as f64, h / m.g as f64);
    for (i, v) in m.values.iter().enumerate() {
        let c = m.colormap.rgb((v - lo) / (hi - lo));
        ctx.set_fill_style_str(&format!("rgb({},{},{})", c[0], c[1], c[2]));
        let (r, col) = (i / m.g, i % m.g);
        ctx.fill_rect(col as f64 * cw, r as f64 * ch, cw + 0.5, ch + 0.5);
    }
    true
}

/// Loss curves: the standard part (blue) and the CDL part (orange) of each step, smoothed by an
/// exponential moving average; the y range is robust to the first steps' spikes.
pub fn losses(id: &str, history: &[[f32; 3]]) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    ctx.set_stroke_style_str("#ddd");
    ctx.stroke_rect(0.5, 0.5, w - 1.0, h - 1.0);
    if history.len() < 2 {
        return;
    }
    let smooth = |k: usize| -> Vec<f64> {
        let mut out = Vec::with_capacity(history.len());
        let mut m = f64::from(history[0][k]);
        for r in history {
            m = 0.95 * m + 0.05 * f64::from(r[k]);
            out.push(m);
        }
        out
    };
    let std = smooth(1);
    let cdl = smooth(2);
    let has_cdl = history.iter().any(|r| r[2] != 0.0);
    let mut all: Vec<f64> = std.iter().chain(if has_cdl { cdl.iter() } else { [].iter() }).copied().collect();
    all.retain(|v| v.is_finite());
    if all.is_empty() {
        return;
    }
    all.sort_by(f64::total_cmp);
    let lo = all[0];
    let hi = all[(all.len() as f64 * 0.98) as usize].max(lo + 1e-6);
    let pad = 0.05 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let n = history.len();
    let line = |v: &[f64], color: &str| {
        ctx.set_stroke_style_str(color);
        ctx.begin_path();
        // At most ~2 points per pixel.
        let stride = (n / (2 * w as usize).max(1)).max(1);
        for (j, i) in (0..n).step_by(stride).enumerate() {
            let x = i as f64 / (n - 1) as f64 * (w - 4.0) + 2.0;
            let y = (1.0 - (v[i].clamp(lo, hi) - lo) / (hi - lo)) * (h - 16.0) + 12.0;
            if j == 0 {
                ctx.move_to(x, y);
            } else {
                ctx.line_to(x, y);
            }
        }
        ctx.stroke();
    };
    line(&std, STD_COLOR);
    if has_cdl {
        line(&cdl, CDL_COLOR);
    }
    ctx.set_fill_style_str("#333");
    ctx.set_font("11px system-ui, sans-serif");
    let _ = ctx.fill_text(&format!("{hi:.3}"), 4.0, 10.0);
    let _ = ctx.fill_text(&format!("{lo:.3}"), 4.0, h - 3.0);
}

/// Images (n, 3, side, side) in [−1, 1] as a grid of `cols` columns on canvas `id`, one canvas
/// pixel per image pixel (CSS scales it); the canvas takes the grid's size. Returns whether
/// anything was drawn.
pub fn image_grid(id: &str, images: &[f32], n: usize, side: usize, cols: usize) -> bool {
    let Some((canvas, ctx)) = dom::context2d(id) else { return false };
    let Ok(grid) = crate::eval::plot::image_grid(images, n, 3, side, cols, 2) else { return false };
    let (w, h) = grid.dimensions();
    let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
    for p in grid.pixels() {
        rgba.extend([p[0], p[1], p[2], 255]);
    }
    let Ok(data) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(wasm_bindgen::Clamped(&rgba), w, h) else {
        return false;
    };
    canvas.set_width(w);
    canvas.set_height(h);
    ctx.put_image_data(&data, 0.0, 0.0).is_ok()
}

/// A line of text at the top left of canvas `id`, on a light box so it reads over any plot.
pub fn caption(id: &str, text: &str) {
    let Some((_, ctx)) = dom::context2d(id) else { return };
    ctx.set_font("12px system-ui, sans-serif");
    let w = ctx.measure_text(text).map_or(200.0, |m| m.width());
    ctx.set_fill_style_str("rgba(255,255,255,0.8)");
    ctx.fill_rect(2.0, 2.0, w + 8.0, 17.0);
    ctx.set_fill_style_str("#222");
    let _ = ctx.fill_text(text, 6.0, 15.0);
}

// ---------------------------------------------------------------------------------------------
// The parallel (Picard) sampler

/// Colour of the Picard window and of the error curve; the converged prefix and τ are grey.
pub const WINDOW_COLOR: &str = "#1f6fb2";
const AXIS_FONT: &str = "11px system-ui, sans-serif";

/// Each pass's error (`PicardPass::error`) against the tolerance τ: passes on the x axis, log10
/// error on the y axis (decade ticks), τ as a dashed line, axis labels and a legend. Errors of 0
/// are drawn at the bottom of the axis.
pub fn picard_errors(id: &str, errors: &[f64], tol: f64) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    let (left, right, top, bottom) = (52.0, w - 14.0, 8.0, h - 30.0);
    let logs: Vec<f64> =
        errors.iter().chain([&tol]).filter(|e| **e > 0.0 && e.is_finite()).map(|e| e.log10()).collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min).floor().min(tol.max(1e-12).log10().floor() - 1.0);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    let passes = errors.len().max(1);
    let px = |p: f64| left + (p - 1.0) / (passes.max(2) - 1) as f64 * (right - left);
    let py = |e: f64| {
        let l = if e > 0.0 { e.log10().clamp(lo, hi) } else { lo };
        bottom - (l - lo) / (hi - lo) * (bottom - top)
    };
    ctx.set_font(AXIS_FONT);
    ctx.set_fill_style_str("#333");
    ctx.set_stroke_style_str("#ccc");
    ctx.stroke_rect(left, top, right - left, bottom - top);
    // Decade ticks, at most ~6 labelled.
    let every = (((hi - lo) / 6.0).ceil() as i64).max(1);
    let mut d = lo as i64;
    while d as f64 <= hi {
        if (d - lo as i64) % every == 0 {
            let y = bottom - (d as f64 - lo) / (hi - lo) * (bottom - top);
            let _ = ctx.fill_text(&format!("1e{d}"), 18.0, y + 4.0);
        }
        d += 1;
    }
    // Pass ticks: the first, the last and a few between.
    let step = passes.div_ceil(5).max(1);
    for p in (1..=passes).filter(|p| (p - 1) % step == 0 || *p == passes) {
        let _ = ctx.fill_text(&p.to_string(), px(p as f64) - 3.0, bottom + 12.0);
    }
    let _ = ctx.fill_text("pass", (left + right) / 2.0 - 10.0, h - 4.0);
    ctx.save();
    ctx.translate(10.0, (top + bottom) / 2.0 + 30.0).ok();
    ctx.rotate(-std::f64::consts::FRAC_PI_2).ok();
    let _ = ctx.fill_text("log10 error", 0.0, 0.0);
    ctx.restore();
    // τ, dashed.
    ctx.set_stroke_style_str("#888");
    let _ = ctx.set_line_dash(&js_sys::Array::of2(&4.0.into(), &3.0.into()));
    ctx.begin_path();
    ctx.move_to(left, py(tol));
    ctx.line_to(right, py(tol));
    ctx.stroke();
    let _ = ctx.set_line_dash(&js_sys::Array::new());
    // The errors, a line with a dot per pass.
    ctx.set_stroke_style_str(WINDOW_COLOR);
    ctx.set_fill_style_str(WINDOW_COLOR);
    ctx.begin_path();
    for (i, &e) in errors.iter().enumerate() {
        let (x, y) = (px(i as f64 + 1.0), py(e));
        if i == 0 {
            ctx.move_to(x, y);
        } else {
            ctx.line_to(x, y);
        }
    }
    ctx.stroke();
    for (i, &e) in errors.iter().enumerate() {
        ctx.fill_rect(px(i as f64 + 1.0) - 2.0, py(e) - 2.0, 4.0, 4.0);
    }
    // Legend, top right.
    ctx.set_fill_style_str("rgba(255,255,255,0.85)");
    ctx.fill_rect(right - 118.0, top + 2.0, 114.0, 30.0);
    ctx.set_fill_style_str(WINDOW_COLOR);
    ctx.fill_rect(right - 112.0, top + 9.0, 12.0, 3.0);
    ctx.set_fill_style_str("#888");
    ctx.fill_rect(right - 112.0, top + 23.0, 12.0, 2.0);
    ctx.set_fill_style_str("#333");
    let _ = ctx.fill_text("error of the pass", right - 96.0, top + 14.0);
    let _ = ctx.fill_text(&format!("tolerance τ = {tol}"), right - 96.0, top + 28.0);
}

/// The window as it slides: one row per pass (the first at the top), the sampler steps on the x
/// axis; the converged prefix grey, the evaluated window blue. (begin, end, converged) per pass.
pub fn picard_windows(id: &str, windows: &[(usize, usize, usize)], steps: usize) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    let (left, right, top, bottom) = (40.0, w - 8.0, 4.0, h - 30.0);
    let sx = |j: usize| left + j as f64 / steps.max(1) as f64 * (right - left);
    let row = (bottom - top) / windows.len().max(1) as f64;
    for (i, &(b, e, c)) in windows.iter().enumerate() {
        let y = top + i as f64 * row;
        ctx.set_fill_style_str("#bbb");
        ctx.fill_rect(sx(0), y, sx(b) - sx(0), row.max(1.0));
        ctx.set_fill_style_str(WINDOW_COLOR);
        ctx.fill_rect(sx(b), y, (sx(e) - sx(b)).max(1.0), row.max(1.0));
        // What this pass converged, beyond where it started: a dark tick.
        ctx.set_fill_style_str("#222");
        ctx.fill_rect(sx(c) - 0.5, y, 1.5, row.max(1.0));
    }
    ctx.set_stroke_style_str("#ccc");
    ctx.stroke_rect(left, top, right - left, bottom - top);
    ctx.set_font(AXIS_FONT);
    ctx.set_fill_style_str("#333");
    let _ = ctx.fill_text("0", sx(0) - 3.0, bottom + 12.0);
    let _ = ctx.fill_text(&steps.to_string(), sx(steps) - 18.0, bottom + 12.0);
    let _ = ctx.fill_text("sampler step (grey: converged, blue: window)", left + 20.0, h - 4.0);
    let _ = ctx.fill_text("pass 1", 2.0, top + 10.0);
    let _ = ctx.fill_text(&format!("{}", windows.len()), 2.0, bottom);
}
