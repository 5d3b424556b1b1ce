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
/// over `heat` when given. Returns the map's colour range (lo, hi) when one was drawn.
pub fn scatter(id: &str, data: &[f32], max_data: usize, samples: &[f64], heat: Option<Heat>) -> Option<(f64, f64)> {
    let (canvas, ctx) = dom::context2d(id)?;
    let (w, h) = clear(&canvas, &ctx);
    let range = heat.and_then(|m| heat_map(id, &ctx, w, h, &m));
    let n = data.len() / 2;
    let stride = n.div_ceil(max_data.max(1)).max(1);
    let pts = (0..n).step_by(stride).map(|i| (f64::from(data[2 * i]), f64::from(data[2 * i + 1])));
    dots(&ctx, w, h, pts, if range.is_some() { DATA_ON_MAP_COLOR } else { DATA_COLOR }, 1.2);
    let s = samples.chunks_exact(2).map(|p| (p[0], p[1]));
    dots(&ctx, w, h, s, SAMPLE_COLOR, 1.5);
    range
}

/// The colour range of a map: its own (symmetric about 0 for the diverging map), or None when
/// it has no spread or is not g×g.
pub fn heat_range(m: &Heat) -> Option<(f64, f64)> {
    let finite = m.values.iter().copied().filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if m.colormap == Colormap::Diverging {
        let r = lo.abs().max(hi.abs());
        (lo, hi) = (-r, r);
    }
    (hi.partial_cmp(&lo) == Some(std::cmp::Ordering::Greater) && m.values.len() == m.g * m.g).then_some((lo, hi))
}

/// A canvas's last map: the key of the map and its size, and its RGBA bytes.
type MapPixels = (u64, std::rc::Rc<Vec<u8>>);

thread_local! {
    /// The last map drawn on each canvas, as RGBA bytes (canvas id → (key of the map and size,
    /// pixels)): the scatter plots are redrawn after every training chunk, the map only when it
    /// changes. The bytes, not an `ImageData`: one made from a Rust slice views the wasm memory,
    /// which a later allocation may grow and so detach ("the source data has been detached").
    static MAP_PIXELS: std::cell::RefCell<std::collections::HashMap<String, MapPixels>> =
        std::cell::RefCell::default();
}

/// Draws the map over the whole canvas, bilinearly interpolated between the cell centres
/// (`density::cell_centres`; constant beyond the outer centres), normalised to its
/// `heat_range`. Returns that range, or None when there is nothing to draw.
fn heat_map(id: &str, ctx: &Ctx, w: f64, h: f64, m: &Heat) -> Option<(f64, f64)> {
    let (lo, hi) = heat_range(m)?;
    let (pw, ph) = (w as usize, h as usize);
    let key =
        m.values.iter().fold((m.g as u64) ^ ((pw as u64) << 20) ^ ((ph as u64) << 40) ^ (m.colormap as u64), |k, v| {
            (k ^ v.to_bits()).wrapping_mul(0x0100_0000_01b3).rotate_left(5)
        });
    let cached = MAP_PIXELS.with(|c| c.borrow().get(id).filter(|(k, _)| *k == key).map(|(_, d)| d.clone()));
    let rgba = match cached {
        Some(d) => d,
        None => {
            let d = std::rc::Rc::new(map_pixels(m, lo, hi, pw, ph));
            MAP_PIXELS.with(|c| c.borrow_mut().insert(id.to_string(), (key, d.clone())));
            d
        }
    };
    // Made just before it is drawn (putImageData copies it), so its view of the wasm memory is live.
    let data =
        web_sys::ImageData::new_with_u8_clamped_array_and_sh(wasm_bindgen::Clamped(&rgba[..]), pw as u32, ph as u32)
            .ok()?;
    ctx.put_image_data(&data, 0.0, 0.0).ok()?;
    Some((lo, hi))
}

/// The map as pw × ph pixels: each pixel's value interpolated bilinearly from the four nearest
/// cell centres, then coloured (non-finite cells count as the range's bottom), as RGBA bytes.
fn map_pixels(m: &Heat, lo: f64, hi: f64, pw: usize, ph: usize) -> Vec<u8> {
    let g = m.g;
    let at = |r: usize, c: usize| {
        let v = m.values[r * g + c];
        if v.is_finite() {
            v
        } else {
            lo
        }
    };
    // Cell coordinate of a pixel centre: cell k's centre is at (k + 0.5) / g of the side.
    let cell = |p: usize, n: usize| -> (usize, usize, f64) {
        let u = ((p as f64 + 0.5) / n as f64 * g as f64 - 0.5).clamp(0.0, (g - 1) as f64);
        let i = (u.floor() as usize).min(g.saturating_sub(2));
        (i, (i + 1).min(g - 1), u - i as f64)
    };
    let cols: Vec<_> = (0..pw).map(|x| cell(x, pw)).collect();
    let mut rgba = Vec::with_capacity(pw * ph * 4);
    for y in 0..ph {
        let (r0, r1, fy) = cell(y, ph);
        for &(c0, c1, fx) in &cols {
            let top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx;
            let bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx;
            let v = top * (1.0 - fy) + bottom * fy;
            let c = m.colormap.rgb((v - lo) / (hi - lo));
            rgba.extend([c[0], c[1], c[2], 255]);
        }
    }
    rgba
}

/// A colour bar on canvas `id`: `label` above a bar of `colormap` from `lo` (left) to `hi`
/// (right), with the values at both ends and the middle under it.
pub fn colour_bar(id: &str, colormap: Colormap, lo: f64, hi: f64, label: &str) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    let (left, right, top, bottom) = (8.0, w - 8.0, 16.0, h - 16.0);
    let n = (right - left) as usize;
    for i in 0..n {
        let c = colormap.rgb(i as f64 / (n - 1).max(1) as f64);
        ctx.set_fill_style_str(&format!("rgb({},{},{})", c[0], c[1], c[2]));
        ctx.fill_rect(left + i as f64, top, 1.5, bottom - top);
    }
    ctx.set_stroke_style_str("#999");
    ctx.stroke_rect(left, top, right - left, bottom - top);
    ctx.set_font(AXIS_FONT);
    ctx.set_fill_style_str("#333");
    let _ = ctx.fill_text(label, left, 11.0);
    let fmt = |v: f64| if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    let width = |t: &str| ctx.measure_text(t).map_or(30.0, |m| m.width());
    let (a, mid, b) = (fmt(lo), fmt(0.5 * (lo + hi)), fmt(hi));
    let _ = ctx.fill_text(&a, left, h - 3.0);
    let _ = ctx.fill_text(&mid, (left + right - width(&mid)) / 2.0, h - 3.0);
    let _ = ctx.fill_text(&b, right - width(&b), h - 3.0);
}

/// A training curve from elsewhere (a shipped file's run) drawn under a model's own losses.
pub struct PastCurve<'a> {
    pub step: &'a [f64],
    pub std: &'a [f64],
    pub cdl: &'a [f64],
}

/// Loss curves against the training step: the standard part (blue) and the CDL part (orange) of
/// each step trained here (the first at step `first_step` + 1), smoothed by an exponential moving
/// average, after `past` (dashed) when given; the y range is robust to the first steps' spikes.
pub fn losses(id: &str, history: &[[f32; 3]], first_step: u64, past: Option<PastCurve>) {
    let Some((canvas, ctx)) = dom::context2d(id) else { return };
    let (w, h) = clear(&canvas, &ctx);
    ctx.set_stroke_style_str("#ddd");
    ctx.stroke_rect(0.5, 0.5, w - 1.0, h - 1.0);
    let past = past.filter(|p| p.step.len() >= 2 && p.std.len() == p.step.len() && p.cdl.len() == p.step.len());
    if history.len() < 2 && past.is_none() {
        return;
    }
    let smooth = |k: usize| -> Vec<f64> {
        let mut out = Vec::with_capacity(history.len());
        let Some(first) = history.first() else { return out };
        let mut m = f64::from(first[k]);
        for r in history {
            m = 0.95 * m + 0.05 * f64::from(r[k]);
            out.push(m);
        }
        out
    };
    let std = smooth(1);
    let cdl = smooth(2);
    let has_cdl = history.iter().any(|r| r[2] != 0.0) || past.as_ref().is_some_and(|p| p.cdl.iter().any(|v| *v != 0.0));
    let live_steps: Vec<f64> = (0..history.len()).map(|i| (first_step + 1 + i as u64) as f64).collect();
    let mut all: Vec<f64> = std.iter().chain(if has_cdl { cdl.iter() } else { [].iter() }).copied().collect();
    if let Some(p) = &past {
        all.extend(p.std.iter().chain(if has_cdl { p.cdl.iter() } else { [].iter() }));
    }
    all.retain(|v| v.is_finite());
    if all.is_empty() {
        return;
    }
    all.sort_by(f64::total_cmp);
    let lo = all[0];
    let hi = all[(all.len() as f64 * 0.98) as usize].max(lo + 1e-6);
    let pad = 0.05 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let x0 = past.as_ref().map_or(live_steps.first().copied().unwrap_or(0.0), |p| p.step[0]);
    let x1 = live_steps.last().copied().unwrap_or(0.0).max(past.as_ref().map_or(0.0, |p| p.step[p.step.len() - 1]));
    let x1 = x1.max(x0 + 1.0);
    let line = |xs: &[f64], v: &[f64], color: &str| {
        let n = xs.len();
        if n < 2 {
            return;
        }
        ctx.set_stroke_style_str(color);
        ctx.begin_path();
        // At most ~2 points per pixel.
        let stride = (n / (2 * w as usize).max(1)).max(1);
        for (j, i) in (0..n).step_by(stride).chain([n - 1]).enumerate() {
            let x = (xs[i] - x0) / (x1 - x0) * (w - 4.0) + 2.0;
            let y = (1.0 - (v[i].clamp(lo, hi) - lo) / (hi - lo)) * (h - 28.0) + 12.0;
            if j == 0 {
                ctx.move_to(x, y);
            } else {
                ctx.line_to(x, y);
            }
        }
        ctx.stroke();
    };
    if let Some(p) = &past {
        let _ = ctx.set_line_dash(&js_sys::Array::of2(&4.0.into(), &3.0.into()));
        line(p.step, p.std, STD_COLOR);
        if has_cdl {
            line(p.step, p.cdl, CDL_COLOR);
        }
        let _ = ctx.set_line_dash(&js_sys::Array::new());
    }
    line(&live_steps, &std, STD_COLOR);
    if has_cdl {
        line(&live_steps, &cdl, CDL_COLOR);
    }
    ctx.set_fill_style_str("#333");
    ctx.set_font("11px system-ui, sans-serif");
    let _ = ctx.fill_text(&format!("{hi:.3}"), 4.0, 10.0);
    let _ = ctx.fill_text(&format!("{lo:.3}"), 4.0, h - 17.0);
    let steps = |v: f64| format!("{v:.0}");
    let _ = ctx.fill_text(&format!("step {}", steps(x0)), 4.0, h - 3.0);
    let end = steps(x1);
    let ew = ctx.measure_text(&end).map_or(30.0, |m| m.width());
    let _ = ctx.fill_text(&end, w - 4.0 - ew, h - 3.0);
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
