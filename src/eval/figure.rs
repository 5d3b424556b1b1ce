//! Native PNG figures drawn with plotters: scatter plots and sheets of them with legends, density
//! maps (bilinear) with a colour bar, loss curves, and image grids under a title and above a caption.
//! Every figure has a title band and, but for image grids, axes with tick labels. Text uses the
//! DejaVu Sans file shipped in assets/fonts/, registered from bytes: no system font is read.

use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{Bounds, Colormap, BACKGROUND, MAX_SIDE};
use super::EvalError;

// ---------------------------------------------------------------------------------------------
// Colours, sizes and the font

/// Titles, tick labels, axis names and legend text.
pub const TEXT_COLOR: Rgb<u8> = Rgb([0, 0, 0]);
/// Data points under model samples (light grey, so samples read on top).
pub const DATA_COLOR: Rgb<u8> = Rgb([170, 170, 170]);
/// Model samples (matplotlib's tab:blue).
pub const SAMPLE_COLOR: Rgb<u8> = Rgb([31, 119, 180]);
/// Fill of points overlaid on a map; the rim (`OVERLAY_RIM`) keeps them visible on any colour.
pub const OVERLAY_FILL: Rgb<u8> = Rgb([255, 255, 255]);
/// Rim of overlaid points.
pub const OVERLAY_RIM: Rgb<u8> = Rgb([0, 0, 0]);
/// Colours of loss curves, in order (matplotlib's tab10: blue, orange, green, red).
pub const CURVE_COLORS: [Rgb<u8>; 4] =
    [Rgb([31, 119, 180]), Rgb([255, 127, 14]), Rgb([44, 160, 44]), Rgb([214, 39, 40])];

/// Height of the title band at the top of every figure (and of each panel of a sheet).
pub const TITLE_BAND: u32 = 36;
/// Height of the caption line under an image grid.
pub const CAPTION_BAND: u32 = 28;
/// Width of the colour bar's column right of a map: bar, tick labels and the bar's name.
pub const COLORBAR_WIDTH: u32 = 120;
/// Image grids are scaled up (nearest neighbour, whole factors) to at least this width.
pub const MIN_GRID_WIDTH: u32 = 400;

const FONT: &str = "sans-serif";
const TITLE_PX: f64 = 20.0;
const LABEL_PX: f64 = 14.0;
const MARGIN: u32 = 10;
const X_LABEL_AREA: u32 = 44;
const Y_LABEL_AREA: u32 = 64;
const BAR_WIDTH: u32 = 22;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core; licence beside it).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() -> Result<(), EvalError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    ok.then_some(()).ok_or_else(|| EvalError::Draw("the bundled DejaVu Sans font does not parse".into()))
}

fn color(c: Rgb<u8>) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn text(px: f64) -> TextStyle<'static> {
    (FONT, px).into_font().color(&color(TEXT_COLOR))
}

fn draw_err(e: impl std::fmt::Debug) -> EvalError {
    EvalError::Draw(format!("{e:?}"))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A width × height `BACKGROUND` picture painted by `paint`.
fn canvas(width: u32, height: u32, paint: impl FnOnce(&Area) -> Result<(), EvalError>) -> Result<RgbImage, EvalError> {
    for side in [width, height] {
        if side == 0 || side > MAX_SIDE {
            return Err(EvalError::Invalid(format!("figure of {width} × {height} px, need 1 ..= {MAX_SIDE} a side")));
        }
    }
    register_font()?;
    let mut buf = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&color(BACKGROUND)).map_err(draw_err)?;
        paint(&root)?;
        root.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| EvalError::Draw("figure buffer of the wrong size".into()))
}

/// `text` with each combining tilde (U+0303, as in β̃) drawn as a spacing tilde (U+02DC) after
/// its letter: the text layout counts a combining mark as a character of its own and drops the
/// one after it ("(β̃ τ" lost its comma).
fn drawable(text: &str) -> String {
    text.replace('\u{303}', "\u{2dc}")
}

/// Splits off the title band of `area`, writes `title` centred in it and returns the rest.
fn titled<'a>(area: &Area<'a>, title: &str) -> Result<Area<'a>, EvalError> {
    let (band, body) = area.split_vertically(TITLE_BAND);
    let (w, h) = band.dim_in_pixel();
    let style = text(TITLE_PX).pos(Pos::new(HPos::Center, VPos::Center));
    band.draw_text(&drawable(title), &style, (w as i32 / 2, h as i32 / 2)).map_err(draw_err)?;
    Ok(body)
}

/// Tick label: up to three decimals without trailing zeros, or scientific for very small or
/// large magnitudes.
fn tick(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The plotting area's size (pixels) of a chart built on a `w` × `h` area with our margin and label areas.
fn plot_size(w: u32, h: u32, right: u32) -> (u32, u32) {
    (w.saturating_sub(2 * MARGIN + Y_LABEL_AREA + right).max(1), h.saturating_sub(2 * MARGIN + X_LABEL_AREA).max(1))
}

/// `b` grown along one axis (about its centre) so that a `w` × `h` pixel area shows equal data
/// units per pixel on both axes.
fn fitted(b: Bounds, w: u32, h: u32) -> Bounds {
    let (sx, sy) = (f64::from(b.x1 - b.x0) / f64::from(w), f64::from(b.y1 - b.y0) / f64::from(h));
    let s = sx.max(sy);
    let (cx, cy) = (0.5 * (f64::from(b.x0) + f64::from(b.x1)), 0.5 * (f64::from(b.y0) + f64::from(b.y1)));
    let (hw, hh) = (0.5 * s * f64::from(w), 0.5 * s * f64::from(h));
    Bounds { x0: (cx - hw) as f32, x1: (cx + hw) as f32, y0: (cy - hh) as f32, y1: (cy + hh) as f32 }
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart over x × y on `area`, with axes, tick labels, axis names and, with `grid`, light grid lines.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    x: (f64, f64),
    y: (f64, f64),
    names: (&str, &str),
    grid: bool,
) -> Result<Chart<'a, 'b>, EvalError> {
    let mut ch = ChartBuilder::on(area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(draw_err)?;
    let fmt = |v: &f64| tick(*v);
    let mut mesh = ch.configure_mesh();
    mesh.x_labels(6)
        .y_labels(6)
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .label_style(text(LABEL_PX))
        .axis_desc_style(text(LABEL_PX))
        .axis_style(color(TEXT_COLOR))
        .x_desc(names.0)
        .y_desc(names.1)
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(color(BACKGROUND));
    if !grid {
        mesh.disable_mesh();
    }
    mesh.draw().map_err(draw_err)?;
    Ok(ch)
}

/// The legend of every labelled series, in a framed box at `pos`.
fn legend<'a, 'b: 'a>(ch: &mut Chart<'a, 'b>, pos: SeriesLabelPosition) -> Result<(), EvalError> {
    ch.configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(color(TEXT_COLOR))
        .label_font(text(LABEL_PX))
        .draw()
        .map_err(draw_err)
}

fn check_pairs(what: &str, points: &[f32]) -> Result<(), EvalError> {
    if !points.len().is_multiple_of(2) {
        return Err(EvalError::Shape(format!("{what} has {} values, not (n, 2)", points.len())));
    }
    Ok(())
}

/// Finite points of `points`: (n, 2) inside `b`, as f64 pairs.
fn inside(points: &[f32], b: Bounds) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .chunks_exact(2)
        .filter(move |p| (b.x0..=b.x1).contains(&p[0]) && (b.y0..=b.y1).contains(&p[1]))
        .map(|p| (f64::from(p[0]), f64::from(p[1])))
}

// ---------------------------------------------------------------------------------------------
// Scatter plots

/// One set of 2-D points: (n, 2), its legend label and colour.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [f32],
    pub color: Rgb<u8>,
}

/// One panel of a sheet: its title and point sets (drawn in order, later ones on top).
#[derive(Clone, Debug)]
pub struct Panel<'a> {
    pub title: String,
    pub series: Vec<Series<'a>>,
}

/// Draws a titled scatter plot of `series` over `bounds` (grown to equal units per pixel) on `area`.
fn draw_scatter(area: &Area, title: &str, series: &[Series], bounds: Bounds) -> Result<(), EvalError> {
    let body = titled(area, title)?;
    let (w, h) = body.dim_in_pixel();
    let (pw, ph) = plot_size(w, h, 0);
    let b = fitted(bounds, pw, ph);
    let mut ch =
        chart(&body, (f64::from(b.x0), f64::from(b.x1)), (f64::from(b.y0), f64::from(b.y1)), ("x", "y"), true)?;
    // 0.4% of the plot's side, at least 1.5 px: 2 px at 500 px.
    let r = (f64::from(pw.min(ph)) * 0.004).max(1.5).round() as i32;
    for s in series {
        let c = color(s.color);
        ch.draw_series(inside(s.points, b).map(|p| Circle::new(p, r, c.filled())))
            .map_err(draw_err)?
            .label(drawable(s.label))
            .legend(move |p| Circle::new(p, 5, c.filled()));
    }
    if series.is_empty() {
        return Ok(());
    }
    legend(&mut ch, SeriesLabelPosition::UpperLeft)
}

/// Largest |coordinate| a figure's bounds may reach: plotters' tick search does not end on
/// ranges near f32::MAX (diverged samples), so those are refused with a message instead.
pub const MAX_COORD: f32 = 1e12;

fn check_series(series: &[Series], bounds: Bounds) -> Result<(), EvalError> {
    for s in series {
        check_pairs(s.label, s.points)?;
    }
    let finite = [bounds.x0, bounds.x1, bounds.y0, bounds.y1].iter().all(|v| v.is_finite());
    if !(finite && bounds.x0 < bounds.x1 && bounds.y0 < bounds.y1) {
        return Err(EvalError::Invalid(format!("plot bounds {bounds:?}: need finite x0 < x1 and y0 < y1")));
    }
    if [bounds.x0, bounds.x1, bounds.y0, bounds.y1].iter().any(|v| v.abs() > MAX_COORD) {
        return Err(EvalError::Invalid(format!("plot bounds {bounds:?} reach beyond ±{MAX_COORD:e}")));
    }
    Ok(())
}

/// A size × size scatter plot of `series` over `bounds`: title, axes x and y with tick labels, a
/// legend entry per series. Non-finite points and points outside `bounds` are left out.
pub fn scatter(title: &str, series: &[Series], bounds: Bounds, size: u32) -> Result<RgbImage, EvalError> {
    check_series(series, bounds)?;
    canvas(size, size, |root| draw_scatter(root, title, series, bounds))
}

/// Scatter plots side by side, `cols` to a row, each `panel` px square under the sheet's title,
/// all over the same `bounds` so that panels compare at a glance.
pub fn scatter_sheet(
    title: &str,
    panels: &[Panel],
    bounds: Bounds,
    panel: u32,
    cols: usize,
) -> Result<RgbImage, EvalError> {
    if panels.is_empty() || cols == 0 {
        return Err(EvalError::Invalid(format!("a sheet of {} panels in {cols} columns", panels.len())));
    }
    for p in panels {
        check_series(&p.series, bounds)?;
    }
    let cols = cols.min(panels.len());
    let rows = panels.len().div_ceil(cols);
    let side = |k: usize| u32::try_from(k).ok().and_then(|k| k.checked_mul(panel));
    let (Some(w), Some(h)) = (side(cols), side(rows).and_then(|h| h.checked_add(TITLE_BAND))) else {
        return Err(EvalError::Invalid(format!("sheet larger than {MAX_SIDE} px a side")));
    };
    canvas(w, h, |root| {
        let body = titled(root, title)?;
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(panels) {
            draw_scatter(area, &p.title, &p.series, bounds)?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Maps

/// Values on a grid of cells tiling `bounds`, and how to colour them.
#[derive(Clone, Copy, Debug)]
pub struct Map<'a> {
    /// (ny, nx), row-major, row 0 at the top: the order of `Bounds::grid_centers`.
    pub values: &'a [f64],
    pub nx: usize,
    pub ny: usize,
    pub bounds: Bounds,
    pub colormap: Colormap,
    /// Values at the colour bar's bottom and top; values beyond take the end colours.
    pub range: (f64, f64),
    /// What the values are, for the colour bar (e.g. "log p(x) (nats)").
    pub label: &'a str,
}

impl Map<'_> {
    /// The value at data point (x, y): bilinear between the four nearest cell centres (clamped at
    /// the edges); where one of them is not finite, the nearest cell's value.
    pub fn bilinear(&self, x: f64, y: f64) -> f64 {
        let b = self.bounds;
        let (dx, dy) = (f64::from(b.x1 - b.x0) / self.nx as f64, f64::from(b.y1 - b.y0) / self.ny as f64);
        let u = ((x - f64::from(b.x0)) / dx - 0.5).clamp(0.0, (self.nx - 1) as f64);
        let v = ((f64::from(b.y1) - y) / dy - 0.5).clamp(0.0, (self.ny - 1) as f64);
        let (c0, r0) = (u.floor() as usize, v.floor() as usize);
        let (c1, r1) = ((c0 + 1).min(self.nx - 1), (r0 + 1).min(self.ny - 1));
        let (fu, fv) = (u - c0 as f64, v - r0 as f64);
        let at = |r: usize, c: usize| self.values[r * self.nx + c];
        let corners = [at(r0, c0), at(r0, c1), at(r1, c0), at(r1, c1)];
        if corners.iter().all(|c| c.is_finite()) {
            let top = corners[0] * (1.0 - fu) + corners[1] * fu;
            let bottom = corners[2] * (1.0 - fu) + corners[3] * fu;
            top * (1.0 - fv) + bottom * fv
        } else {
            at(v.round() as usize, u.round() as usize)
        }
    }

    /// The colour of value `v`: colormap((v − lo)/(hi − lo)), clamped; NaN grey; lo = hi puts
    /// every finite value in the middle.
    pub fn rgb(&self, v: f64) -> Rgb<u8> {
        let (lo, hi) = self.range;
        let t = if hi > lo {
            (v - lo) / (hi - lo)
        } else if v.is_infinite() {
            v.signum().max(0.0)
        } else {
            0.5 + 0.0 * v // NaN stays NaN
        };
        self.colormap.rgb(t)
    }

    fn check(&self) -> Result<(), EvalError> {
        if self.nx == 0 || self.ny == 0 || self.nx.checked_mul(self.ny) != Some(self.values.len()) {
            let msg = format!("map of {} × {} cells given {} values", self.nx, self.ny, self.values.len());
            return Err(EvalError::Shape(msg));
        }
        let (lo, hi) = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(EvalError::Invalid(format!("map range ({lo}, {hi}): need finite lo <= hi")));
        }
        check_series(&[], self.bounds)
    }
}

/// A map figure `width` px wide: the title, the map (bilinear between cell centres, one colour per
/// pixel) on axes x and y with tick labels, `overlay` as white discs with a black rim and a legend
/// entry each, and right of it a colour bar from `range.0` (bottom) to `range.1` (top) with tick
/// labels and the map's label. The plotting area is square; outside the map's cells it is blank.
pub fn heatmap(title: &str, map: &Map, overlay: &[Series], width: u32) -> Result<RgbImage, EvalError> {
    map.check()?;
    check_series(overlay, map.bounds)?;
    if width < COLORBAR_WIDTH + Y_LABEL_AREA + 2 * MARGIN + 16 {
        return Err(EvalError::Invalid(format!("map figure {width} px wide is too narrow")));
    }
    let (pw, _) = plot_size(width - COLORBAR_WIDTH, 0, 0);
    let height = TITLE_BAND + pw + 2 * MARGIN + X_LABEL_AREA;
    canvas(width, height, |root| {
        let body = titled(root, title)?;
        let (left, right) = body.split_horizontally(width - COLORBAR_WIDTH);
        let b = fitted(map.bounds, pw, pw);
        let mut ch =
            chart(&left, (f64::from(b.x0), f64::from(b.x1)), (f64::from(b.y0), f64::from(b.y1)), ("x", "y"), false)?;
        let pixels = ch.plotting_area().strip_coord_spec();
        let (w, h) = pixels.dim_in_pixel();
        let m = map.bounds;
        for r in 0..h {
            let y = f64::from(b.y1) - (f64::from(r) + 0.5) / f64::from(h) * f64::from(b.y1 - b.y0);
            for c in 0..w {
                let x = f64::from(b.x0) + (f64::from(c) + 0.5) / f64::from(w) * f64::from(b.x1 - b.x0);
                let covered = (f64::from(m.x0)..=f64::from(m.x1)).contains(&x)
                    && (f64::from(m.y0)..=f64::from(m.y1)).contains(&y);
                if covered {
                    let px = map.rgb(map.bilinear(x, y));
                    pixels.draw_pixel((c as i32, r as i32), &color(px)).map_err(draw_err)?;
                }
            }
        }
        // The map covers the axis lines drawn with the mesh: draw the frame again on top.
        let frame = Rectangle::new([(b.x0.into(), b.y0.into()), (b.x1.into(), b.y1.into())], color(TEXT_COLOR));
        ch.draw_series(std::iter::once(frame)).map_err(draw_err)?;
        for s in overlay {
            let rim = color(OVERLAY_RIM);
            let fill = color(OVERLAY_FILL);
            let dot = move |p: (f64, f64)| {
                EmptyElement::at(p) + Circle::new((0, 0), 4, rim.filled()) + Circle::new((0, 0), 3, fill.filled())
            };
            let key = move |p: (i32, i32)| {
                EmptyElement::at(p) + Circle::new((0, 0), 4, rim.filled()) + Circle::new((0, 0), 3, fill.filled())
            };
            ch.draw_series(inside(s.points, b).map(dot)).map_err(draw_err)?.label(drawable(s.label)).legend(key);
        }
        if !overlay.is_empty() {
            legend(&mut ch, SeriesLabelPosition::UpperLeft)?;
        }
        colorbar(&right, map)
    })
}

/// The colour bar of `map` on `area`: aligned with the map's plotting area (same margins and
/// bottom label area), tick labels and the map's label on its right.
fn colorbar(area: &Area, map: &Map) -> Result<(), EvalError> {
    let (lo, hi) = if map.range.1 > map.range.0 { map.range } else { (map.range.0 - 0.5, map.range.1 + 0.5) };
    // The bar's name is drawn centred on the label area's outer edge: keep half a line inside.
    let labels = COLORBAR_WIDTH - BAR_WIDTH - 3 * MARGIN;
    let mut ch = ChartBuilder::on(area)
        .margin(MARGIN)
        .margin_right(2 * MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .right_y_label_area_size(labels)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(draw_err)?;
    let pixels = ch.plotting_area().strip_coord_spec();
    let (w, h) = pixels.dim_in_pixel();
    for r in 0..h {
        let t = 1.0 - (f64::from(r) + 0.5) / f64::from(h);
        let c = color(map.colormap.rgb(t));
        pixels.draw(&Rectangle::new([(0, r as i32), (w as i32, r as i32 + 1)], c.filled())).map_err(draw_err)?;
    }
    let fmt = |v: &f64| tick(*v);
    ch.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(&fmt)
        .label_style(text(LABEL_PX))
        .axis_desc_style(text(LABEL_PX))
        .axis_style(color(TEXT_COLOR))
        .y_desc(map.label)
        .draw()
        .map_err(draw_err)
}

// ---------------------------------------------------------------------------------------------
// Curves

/// One curve: (x, y) points in order, its legend label and colour.
#[derive(Clone, Copy, Debug)]
pub struct Curve<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
    pub color: Rgb<u8>,
}

/// A width × height line chart of `curves`: the title, axes named `names` with tick labels over
/// the finite points' extent (y padded by 5%), a legend entry per curve. Non-finite points are
/// left out; a curve of one point is a dot.
pub fn line_chart(
    title: &str,
    names: (&str, &str),
    curves: &[Curve],
    width: u32,
    height: u32,
) -> Result<RgbImage, EvalError> {
    let finite = || curves.iter().flat_map(|c| c.points).filter(|p| p.0.is_finite() && p.1.is_finite());
    if finite().next().is_none() {
        return Err(EvalError::TooFew { what: "line chart", n: 0, need: 1 });
    }
    let span = |lo: f64, hi: f64, pad: f64| {
        if hi > lo {
            (lo - pad * (hi - lo), hi + pad * (hi - lo))
        } else {
            (lo - 0.5, hi + 0.5)
        }
    };
    let fold = |f: fn(&(f64, f64)) -> f64| {
        finite().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |a, v| (a.0.min(v), a.1.max(v)))
    };
    let ((x0, x1), (y0, y1)) = (fold(|p| p.0), fold(|p| p.1));
    let (x, y) = (span(x0, x1, 0.0), span(y0, y1, 0.05));
    canvas(width, height, |root| {
        let body = titled(root, title)?;
        let mut ch = chart(&body, x, y, names, true)?;
        for c in curves {
            let (col, pts) = (color(c.color), c.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()));
            let pts: Vec<(f64, f64)> = pts.collect();
            let anno = if pts.len() == 1 {
                ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(draw_err)?
            } else {
                ch.draw_series(LineSeries::new(pts, col.stroke_width(2))).map_err(draw_err)?
            };
            anno.label(drawable(c.label))
                .legend(move |(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], col.stroke_width(2)));
        }
        legend(&mut ch, SeriesLabelPosition::UpperRight)
    })
}

// ---------------------------------------------------------------------------------------------
// Image grids

/// `grid` (e.g. `plot::image_grid`) scaled up by the smallest whole factor that makes it at least
/// `MIN_GRID_WIDTH` wide (nearest neighbour: pixels stay sharp), centred under `title` and above
/// one `caption` line.
pub fn image_figure(title: &str, caption: &str, grid: &RgbImage) -> Result<RgbImage, EvalError> {
    if grid.width() == 0 || grid.height() == 0 {
        return Err(EvalError::Invalid("an empty image grid".into()));
    }
    let k = MIN_GRID_WIDTH.div_ceil(grid.width()).max(1);
    let (gw, gh) = (grid.width().saturating_mul(k), grid.height().saturating_mul(k));
    let (w, h) = (gw.max(MIN_GRID_WIDTH) + 2 * MARGIN, TITLE_BAND.saturating_add(gh).saturating_add(CAPTION_BAND));
    let mut out = canvas(w, h, |root| {
        let body = titled(root, title)?;
        let style = text(LABEL_PX).pos(Pos::new(HPos::Center, VPos::Center));
        let at = (w as i32 / 2, (gh + CAPTION_BAND / 2) as i32);
        body.draw_text(&drawable(caption), &style, at).map_err(draw_err)?;
        Ok(())
    })?;
    let scaled = image::imageops::resize(grid, gw, gh, image::imageops::FilterType::Nearest);
    image::imageops::replace(&mut out, &scaled, i64::from((w - gw) / 2), i64::from(TITLE_BAND));
    Ok(out)
}
