//! `eval::plot` and `eval::figure`: bounds, colormaps, image grids and PNG bytes exactly; figures by
//! what a reader needs from them: title text in the title band, tick labels beside the axes, a
//! legend entry per series, a colour bar that follows the colour map from low to high, smooth maps.
//! Text is anti-aliased DejaVu Sans, so text checks count dark pixels in regions where nothing else
//! is dark, and compare against the same figure drawn without the text.

use std::collections::HashMap;
use std::path::PathBuf;

use cdl::eval::figure::{
    heatmap, image_figure, line_chart, scatter, scatter_sheet, Curve, Map, Panel, Series, CAPTION_BAND,
    COLORBAR_WIDTH, DATA_COLOR, MIN_GRID_WIDTH, SAMPLE_COLOR, TITLE_BAND,
};
use cdl::eval::plot::{image_grid, png_bytes, save_png, to_u8, Bounds, Colormap, BACKGROUND, NAN_COLOR};
use cdl::eval::EvalError;
use image::{Rgb, RgbImage};

const UNIT: Bounds = Bounds { x0: 0.0, x1: 1.0, y0: 0.0, y1: 1.0 };
const RED: Rgb<u8> = Rgb([214, 39, 40]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);

/// A temporary file path unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cdl_eval_plot_{}_{name}", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// Pixel readers (also used by the CLI tests on the pictures the commands write)

/// Text pixels: the glyphs' cores are black, their anti-aliased edges grey.
fn dark(p: &Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c < 100)
}

/// Dark pixels in columns c0..c1, rows r0..r1 (clipped to the picture).
pub fn dark_in(img: &RgbImage, (c0, c1): (u32, u32), (r0, r1): (u32, u32)) -> usize {
    let (c1, r1) = (c1.min(img.width()), r1.min(img.height()));
    (r0..r1).flat_map(|r| (c0..c1).map(move |c| (c, r))).filter(|&(c, r)| dark(img.get_pixel(c, r))).count()
}

/// Runs of consecutive rows (or, `by_column`, columns) of the region holding a dark pixel: one per
/// line of text stacked vertically (tick labels of a y axis) or per word side by side.
fn dark_runs(img: &RgbImage, (c0, c1): (u32, u32), (r0, r1): (u32, u32), by_column: bool) -> usize {
    let (c1, r1) = (c1.min(img.width()), r1.min(img.height()));
    let lines: Vec<bool> = if by_column {
        (c0..c1).map(|c| (r0..r1).any(|r| dark(img.get_pixel(c, r)))).collect()
    } else {
        (r0..r1).map(|r| (c0..c1).any(|c| dark(img.get_pixel(c, r)))).collect()
    };
    lines.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(lines.first() == Some(&true))
}

/// Title text in the title band, inside its edges (where a frame or tick marks would be).
pub fn title_pixels(img: &RgbImage) -> usize {
    dark_in(img, (8, img.width() - 8), (6, TITLE_BAND - 2))
}

/// Reads colours back: the mean t of colormap.rgb(t) over t = k/10⁵ giving exactly that colour.
fn colormap_t(cm: Colormap) -> impl Fn(&Rgb<u8>) -> Option<f64> {
    let mut table: HashMap<[u8; 3], (f64, f64)> = HashMap::new();
    for k in 0..=100_000 {
        let t = f64::from(k) / 1e5;
        let e = table.entry(cm.rgb(t).0).or_default();
        *e = (e.0 + t, e.1 + 1.0);
    }
    move |p| table.get(&p.0).map(|(sum, n)| sum / n)
}

/// The colour bar: the column in the right `COLORBAR_WIDTH` px with the longest vertical run of
/// colour-map colours; returns (column, first row, t of each row of the run, top to bottom).
pub fn colorbar(img: &RgbImage, cm: Colormap) -> (u32, u32, Vec<f64>) {
    let t_of = colormap_t(cm);
    let mut best = (0, 0, Vec::new());
    for c in img.width() - COLORBAR_WIDTH..img.width() {
        let mut run: (u32, Vec<f64>) = (0, Vec::new());
        for r in 0..img.height() {
            match t_of(img.get_pixel(c, r)) {
                Some(t) => run.1.push(t),
                None => {
                    if run.1.len() > best.2.len() {
                        best = (c, run.0, std::mem::take(&mut run.1));
                    }
                    run = (r + 1, Vec::new());
                }
            }
        }
        if run.1.len() > best.2.len() {
            best = (c, run.0, run.1);
        }
    }
    best
}

/// Checks the colour bar of a map figure: at least half the picture tall, t falling from ≈1 at
/// the top to ≈0 at the bottom without rising, and tick labels (several lines of text) right of it.
pub fn check_colorbar(img: &RgbImage, cm: Colormap) {
    let (col, top, ts) = colorbar(img, cm);
    assert!(ts.len() as u32 >= img.height() / 2, "colour bar of {} px in a picture {} tall", ts.len(), img.height());
    assert!(ts[0] > 0.98 && ts[ts.len() - 1] < 0.02, "colour bar from t = {} to {}", ts[0], ts[ts.len() - 1]);
    assert!(ts.windows(2).all(|w| w[1] <= w[0]), "colour bar t rises somewhere: {ts:?}");
    // Tick labels right of the bar's right edge (and its axis line), left of the bar's name.
    let t_of = colormap_t(cm);
    let right = (col..img.width()).find(|&c| t_of(img.get_pixel(c, top + 1)).is_none()).unwrap_or(img.width());
    let labels = (right + 4, right + 30);
    let rows = (top, top + ts.len() as u32);
    assert!(dark_runs(img, labels, rows, false) >= 3, "colour bar tick labels: too few lines of text");
}

// ---------------------------------------------------------------------------------------------
// Bounds and colormaps

#[test]
fn bounds_cover_points_and_order_grid_centers() {
    let a = [0.0f32, 1.0, 2.0, -1.0];
    let b = [1.0f32, 3.0, f32::NAN, 100.0, 7.0];
    let bd = Bounds::covering(&[&a, &b], 0.5);
    // x in [0, 2] (span 2), y in [−1, 3] (span 4); NaN pairs and the trailing odd value ignored.
    assert_eq!(bd, Bounds { x0: -1.0, x1: 3.0, y0: -3.0, y1: 5.0 });
    assert_eq!(bd.squared(), Bounds { x0: -3.0, x1: 5.0, y0: -3.0, y1: 5.0 });
    assert_eq!(Bounds::covering(&[], 0.1), Bounds { x0: -1.0, x1: 1.0, y0: -1.0, y1: 1.0 });
    assert_eq!(Bounds::covering(&[&[2.0, 3.0]], 0.0), Bounds { x0: 1.5, x1: 2.5, y0: 2.5, y1: 3.5 });
    // Row 0 is the top (largest y), columns left to right.
    let g = Bounds { x0: 0.0, x1: 4.0, y0: 0.0, y1: 2.0 }.grid_centers(2, 2);
    assert_eq!(g, vec![1.0, 1.5, 3.0, 1.5, 1.0, 0.5, 3.0, 0.5]);
}

#[test]
fn colormaps_hit_their_stops_and_grey_out_nan() {
    assert_eq!(Colormap::Viridis.rgb(0.0), Rgb([0x44, 0x01, 0x54]));
    assert_eq!(Colormap::Viridis.rgb(1.0), Rgb([0xfd, 0xe7, 0x25]));
    // t = 0.5: halfway between stops 4 and 5 of 10, rounded half away from 0.
    assert_eq!(Colormap::Viridis.rgb(0.5), Rgb([35, 144, 140]));
    assert_eq!(Colormap::Viridis.rgb(-3.0), Colormap::Viridis.rgb(0.0), "clamped");
    assert_eq!(Colormap::Diverging.rgb(0.75), Rgb([244, 154, 123]));
    assert_eq!(Colormap::Diverging.rgb(1.0), Rgb([180, 4, 38]));
    assert_eq!(Colormap::Diverging.rgb(f64::NAN), NAN_COLOR);
}

// ---------------------------------------------------------------------------------------------
// Scatter plots and sheets

#[test]
fn scatter_has_a_title_tick_labels_and_a_legend_entry_per_series() {
    // Two labelled series without points: any pixel of their colours is their legend entry.
    let series =
        [Series { label: "first", points: &[], color: RED }, Series { label: "second", points: &[], color: GREEN }];
    let bounds = Bounds { x0: -2.0, x1: 2.0, y0: -2.0, y1: 2.0 };
    let img = scatter("A scatter plot", &series, bounds, 400).unwrap();
    assert_eq!(img.dimensions(), (400, 400));
    let bare = scatter("", &series, bounds, 400).unwrap();
    assert_eq!(title_pixels(&bare), 0, "nothing dark in the band without a title");
    assert!(title_pixels(&img) > 100, "title: {} dark pixels", title_pixels(&img));
    // Tick labels: several lines of text left of the plot (y) and words under it (x).
    let (w, h) = img.dimensions();
    assert!(dark_runs(&img, (30, 66), (TITLE_BAND + 20, h - 60), false) >= 4, "y tick labels");
    assert!(dark_runs(&img, (80, w - 20), (h - 50, h - 30), true) >= 4, "x tick labels");
    // The axis name under the x tick labels.
    assert!(dark_in(&img, (0, w), (h - 28, h)) > 10, "x axis name");
    for c in [RED, GREEN] {
        let n = img.pixels().filter(|p| **p == c).count();
        assert!(n >= 20, "legend entry of {c:?}: {n} px");
    }
    // The legend's text: two lines between the top and bottom of the legend box, upper left.
    assert!(dark_runs(&img, (112, 160), (TITLE_BAND + 10, TITLE_BAND + 70), false) >= 4, "legend labels");
}

/// The columns of the title band holding ink: the drawn title's extent.
fn title_columns(img: &RgbImage) -> usize {
    (8..img.width() - 8).filter(|&c| dark_in(img, (c, c + 1), (6, TITLE_BAND - 2)) > 0).count()
}

#[test]
fn a_combining_tilde_keeps_the_characters_after_it() {
    // "β̃" is β and U+0303; drawn as is, the layout dropped the character after the mark, so
    // "(β̃ τ = 0.1" came out as "(β̃τ = 0.1". It is drawn as β and a spacing tilde (U+02DC): the
    // same ink as that text, every character after it included.
    let bounds = Bounds { x0: -1.0, x1: 1.0, y0: -1.0, y1: 1.0 };
    let cols = |t: &str| title_columns(&scatter(t, &[], bounds, 400).unwrap());
    let (combining, spacing, cut) = (cols("(β\u{303}.....)"), cols("(β\u{2dc}.....)"), cols("(β\u{2dc}....)"));
    assert!(combining == spacing && cut < spacing, "ink columns: combining {combining}, spacing {spacing}, one dot fewer {cut}");
}

#[test]
fn scatter_puts_points_where_they_lie_with_y_up() {
    // One sample at the upper right of the data: its colour in the upper-right quarter of the
    // plot only. The data series is drawn first, samples on top.
    let samples = [0.8f32, 0.8];
    let data = [0.8f32, 0.8, f32::NAN, 0.5, 5.0, 5.0];
    let series = [
        Series { label: "data", points: &data, color: DATA_COLOR },
        Series { label: "samples", points: &samples, color: SAMPLE_COLOR },
    ];
    let img = scatter("points", &series, UNIT, 400).unwrap();
    let (w, h) = img.dimensions();
    let at = |c0: u32, c1: u32, r0: u32, r1: u32| {
        (r0..r1).flat_map(|r| (c0..c1).map(move |c| (c, r))).filter(|&(c, r)| *img.get_pixel(c, r) == SAMPLE_COLOR).count()
    };
    // The plot spans roughly columns 74..390 and rows 46..346; the legend sits upper left.
    let upper_right = at(w / 2 + 40, w, TITLE_BAND, h / 2);
    assert!(upper_right >= 9, "sample disc: {upper_right} px");
    assert_eq!(at(0, w / 2, h / 2, h), 0, "nothing in the lower left");
    assert_eq!(at(w / 2 + 40, w, h / 2, h), 0, "y is up: nothing in the lower right");
    assert!(img.pixels().any(|p| *p == BACKGROUND));
    // Bad input is an error, not a panic.
    let odd = [Series { label: "odd", points: &[0.5], color: RED }];
    assert!(matches!(scatter("t", &odd, UNIT, 100), Err(EvalError::Shape(_))));
    assert!(matches!(scatter("t", &[], UNIT, 0), Err(EvalError::Invalid(_))));
    let flat = Bounds { x0: 1.0, x1: 1.0, y0: 0.0, y1: 1.0 };
    assert!(matches!(scatter("t", &[], flat, 100), Err(EvalError::Invalid(_))));
    // Far-out bounds (diverged samples) are refused, not drawn forever; large and narrow ones draw.
    let huge = Bounds { x0: -1e30, x1: 1e30, y0: -1e38, y1: 3e38 };
    assert!(matches!(scatter("huge", &series, huge, 200), Err(EvalError::Invalid(_))));
    let large = Bounds { x0: -1e12, x1: 1e12, y0: -1e11, y1: 1e12 };
    assert!(scatter("large", &series, large, 200).is_ok());
    let narrow = Bounds { x0: 1e6, x1: 1e6 + 0.5, y0: -1e-6, y1: 1e-6 };
    assert!(scatter("narrow", &series, narrow, 200).is_ok());
}

#[test]
fn scatter_sheet_titles_the_sheet_and_every_panel() {
    let panels: Vec<Panel> = ["left", "right", "below"]
        .iter()
        .map(|t| Panel { title: (*t).into(), series: vec![Series { label: "s", points: &[], color: RED }] })
        .collect();
    let img = scatter_sheet("The sheet", &panels, UNIT, 300, 2).unwrap();
    assert_eq!(img.dimensions(), (600, TITLE_BAND + 600));
    assert!(title_pixels(&img) > 50, "sheet title");
    for (c0, r0) in [(0, TITLE_BAND), (300, TITLE_BAND), (0, TITLE_BAND + 300)] {
        let band = dark_in(&img, (c0 + 8, c0 + 292), (r0 + 6, r0 + TITLE_BAND - 2));
        assert!(band > 30, "panel title at ({c0}, {r0}): {band} dark px");
        let legend = (r0..r0 + 300).flat_map(|r| (c0..c0 + 300).map(move |c| (c, r)));
        assert!(legend.filter(|&(c, r)| *img.get_pixel(c, r) == RED).count() >= 20, "panel legend");
    }
    assert_eq!(dark_in(&img, (308, 592), (TITLE_BAND + 306, TITLE_BAND + 334)), 0, "no fourth panel");
    assert!(matches!(scatter_sheet("t", &[], UNIT, 300, 2), Err(EvalError::Invalid(_))));
}

// ---------------------------------------------------------------------------------------------
// Maps

fn ramp_map(values: &[f64]) -> Map<'_> {
    Map {
        values,
        nx: 2,
        ny: 2,
        bounds: UNIT,
        colormap: Colormap::Viridis,
        range: (0.0, 3.0),
        label: "value (units)",
    }
}

#[test]
fn map_values_are_bilinear_between_cell_centres() {
    // Cells (ny = 2, nx = 2) over the unit square, row 0 at the top: centres x, y ∈ {0.25, 0.75}.
    let values = [0.0, 1.0, 2.0, 3.0];
    let m = ramp_map(&values);
    assert_eq!(m.bilinear(0.25, 0.75), 0.0, "top-left centre");
    assert_eq!(m.bilinear(0.75, 0.25), 3.0, "bottom-right centre");
    assert_eq!(m.bilinear(0.5, 0.5), 1.5, "middle: mean of four");
    assert_eq!(m.bilinear(0.5, 0.75), 0.5, "between the top two");
    assert_eq!(m.bilinear(0.0, 1.0), 0.0, "clamped beyond the outer centres");
    // A non-finite neighbour: the nearest cell's value.
    let holes = [0.0, f64::NAN, 2.0, f64::INFINITY];
    let m = ramp_map(&holes);
    assert_eq!(m.bilinear(0.3, 0.3), 2.0);
    assert!(m.bilinear(0.7, 0.7).is_nan());
    assert_eq!(m.rgb(f64::NAN), NAN_COLOR);
    assert_eq!(m.rgb(f64::INFINITY), Colormap::Viridis.rgb(1.0));
    assert_eq!(m.rgb(-9.0), Colormap::Viridis.rgb(0.0));
    assert_eq!(Map { range: (7.0, 7.0), ..m }.rgb(7.0), Colormap::Viridis.rgb(0.5), "lo = hi: the middle");
}

#[test]
fn heatmap_has_a_title_a_colour_bar_that_follows_the_map_and_a_smooth_map() {
    let values = [0.0, 1.0, 2.0, 3.0];
    let map = ramp_map(&values);
    let overlay = [Series { label: "points", points: &[0.5, 0.5], color: RED }];
    let img = heatmap("A map", &map, &overlay, 500).unwrap();
    assert!(title_pixels(&img) > 50, "title");
    check_colorbar(&img, Colormap::Viridis);
    // The map is drawn per pixel, bilinearly: a row through it holds many colours, rising to the
    // right (values grow with x), not the two cells of a nearest-neighbour drawing.
    let t_of = colormap_t(Colormap::Viridis);
    let (w, h) = img.dimensions();
    let row = TITLE_BAND + (h - TITLE_BAND) / 4;
    let ts: Vec<f64> = (0..w - COLORBAR_WIDTH).filter_map(|c| t_of(img.get_pixel(c, row))).collect();
    let mut distinct = ts.clone();
    distinct.dedup();
    assert!(distinct.len() >= 40, "{} colours along a row of the map", distinct.len());
    assert!(ts.windows(2).all(|w| w[1] >= w[0]), "the map does not rise left to right: {ts:?}");
    // Tick labels of the map's axes.
    assert!(dark_runs(&img, (30, 66), (TITLE_BAND + 20, h - 60), false) >= 4, "y tick labels");
    // The overlaid point's legend entry, upper left: its key's white fill (the map is never pure
    // white) and its label's black text (nor pure black).
    let key = |img: &RgbImage, c: Rgb<u8>| {
        (TITLE_BAND + 12..TITLE_BAND + 60).flat_map(|r| (78..240).map(move |x| (x, r))).filter(|&(x, r)| *img.get_pixel(x, r) == c).count()
    };
    assert!(key(&img, Rgb([255, 255, 255])) >= 10 && key(&img, Rgb([0, 0, 0])) >= 10, "legend entry");
    let plain = heatmap("A map", &map, &[], 500).unwrap();
    assert_eq!(key(&plain, Rgb([255, 255, 255])), 0, "no legend without points");

    assert!(matches!(heatmap("t", &Map { nx: 3, ..map }, &[], 500), Err(EvalError::Shape(_))));
    assert!(matches!(heatmap("t", &Map { range: (1.0, 0.0), ..map }, &[], 500), Err(EvalError::Invalid(_))));
    assert!(matches!(heatmap("t", &map, &[], 100), Err(EvalError::Invalid(_))));
    // A constant map and a NaN map still draw (with a bar).
    assert!(heatmap("flat", &Map { range: (2.0, 2.0), ..map }, &[], 500).is_ok());
    assert!(heatmap("nan", &Map { values: &[f64::NAN; 4], ..map }, &[], 500).is_ok());
}

#[test]
fn diverging_colour_bar_runs_from_blue_to_red() {
    let values = [-1.0, 0.0, 0.5, 1.0];
    let map = Map { colormap: Colormap::Diverging, range: (-1.0, 1.0), ..ramp_map(&values) };
    let img = heatmap("logits", &map, &[], 500).unwrap();
    check_colorbar(&img, Colormap::Diverging);
}

// ---------------------------------------------------------------------------------------------
// Curves

#[test]
fn line_chart_has_a_title_tick_labels_and_a_legend_entry_per_curve() {
    // Two curves low in the chart, a third that sets the top: the upper right (the legend) holds
    // the two low curves' colours only through their legend entries.
    let low_a = [(0.0, 0.0), (100.0, 0.1)];
    let low_b = [(0.0, 0.05), (100.0, f64::NAN), (50.0, 0.0)];
    let top = [(0.0, 1.0), (10.0, 1.0)];
    let curves = [
        Curve { label: "loss", points: &low_a, color: RED },
        Curve { label: "CDL term", points: &low_b, color: GREEN },
        Curve { label: "top", points: &top, color: SAMPLE_COLOR },
    ];
    let img = line_chart("Loss", ("step", "loss"), &curves, 640, 400).unwrap();
    assert_eq!(img.dimensions(), (640, 400));
    assert!(title_pixels(&img) > 50, "title");
    let (w, h) = img.dimensions();
    assert!(dark_runs(&img, (30, 66), (TITLE_BAND + 20, h - 60), false) >= 4, "y tick labels");
    assert!(dark_runs(&img, (80, w - 20), (h - 50, h - 30), true) >= 4, "x tick labels");
    let upper_right = |c: Rgb<u8>| {
        (TITLE_BAND + 20..h / 2).flat_map(|r| (w / 2..w).map(move |x| (x, r))).filter(|&(x, r)| *img.get_pixel(x, r) == c).count()
    };
    assert!(upper_right(RED) >= 8 && upper_right(GREEN) >= 8, "legend entries {} {}", upper_right(RED), upper_right(GREEN));
    // Inside the legend box (right of its keys): its top edge, three labels, its bottom edge.
    assert!(dark_runs(&img, (550, 620), (TITLE_BAND + 5, h / 2), false) >= 5, "three legend labels");
    let none: [Curve; 0] = [];
    assert!(matches!(line_chart("t", ("x", "y"), &none, 640, 400), Err(EvalError::TooFew { .. })));
    let one = [Curve { label: "one", points: &[(3.0, 2.0)], color: RED }];
    assert!(line_chart("t", ("x", "y"), &one, 640, 400).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Image grids

#[test]
fn to_u8_follows_the_edm_export() {
    // clip(x·127.5 + 128, 0, 255), truncated: −1 → 0.5 → 0, 0 → 128, 1 → 255.5 → 255.
    assert_eq!(to_u8(-1.0), 0);
    assert_eq!(to_u8(0.0), 128);
    assert_eq!(to_u8(1.0), 255);
    assert_eq!(to_u8(0.5), 191); // 191.75
    assert_eq!(to_u8(-0.5), 64); // 64.25
    assert_eq!(to_u8(-3.0), 0);
    assert_eq!(to_u8(3.0), 255);
    assert_eq!(to_u8(f32::NAN), 0);
}

#[test]
fn image_grid_places_each_image_on_its_tile() {
    // 5 RGB images of 4 × 4, 3 columns, pad 2: 20 × 14 px; image k's top-left at
    // (2 + 6·(k % 3), 2 + 6·(k / 3)). Value of image k, channel ch, pixel (r, c): a distinct
    // level in [−1, 1].
    let (n, ch, s, cols, pad) = (5usize, 3usize, 4usize, 3usize, 2usize);
    let val = |k: usize, c: usize, r: usize, x: usize| -1.0 + 2.0 * ((k * 48 + c * 16 + r * 4 + x) % 97) as f32 / 96.0;
    let mut images = Vec::new();
    for k in 0..n {
        for c in 0..ch {
            for r in 0..s {
                for x in 0..s {
                    images.push(val(k, c, r, x));
                }
            }
        }
    }
    let img = image_grid(&images, n, ch, s, cols, pad).unwrap();
    assert_eq!((img.width(), img.height()), (20, 14));
    for k in 0..n {
        let (x0, y0) = ((2 + 6 * (k % 3)) as u32, (2 + 6 * (k / 3)) as u32);
        for r in 0..s {
            for x in 0..s {
                let want = [to_u8(val(k, 0, r, x)), to_u8(val(k, 1, r, x)), to_u8(val(k, 2, r, x))];
                assert_eq!(*img.get_pixel(x0 + x as u32, y0 + r as u32), Rgb(want), "image {k} pixel ({r}, {x})");
            }
        }
    }
    assert_eq!(*img.get_pixel(0, 0), BACKGROUND);
    assert_eq!(*img.get_pixel(6, 3), BACKGROUND, "gap between tiles");
    assert_eq!(*img.get_pixel(17, 10), BACKGROUND, "the empty sixth tile");

    // Grayscale is replicated; more columns than images shrink to n; no padding.
    let gray = [-1.0f32, 0.0, 1.0, 0.5, 0.25, -0.25, -0.5, 0.75];
    let img = image_grid(&gray, 2, 1, 2, 8, 0).unwrap();
    assert_eq!((img.width(), img.height()), (4, 2));
    for (i, &v) in gray.iter().enumerate() {
        let (k, r, c) = (i / 4, (i % 4) / 2, i % 2);
        let g = to_u8(v);
        assert_eq!(*img.get_pixel((2 * k + c) as u32, r as u32), Rgb([g, g, g]));
    }

    assert!(matches!(image_grid(&gray, 2, 2, 2, 1, 0), Err(EvalError::Shape(_))));
    assert!(matches!(image_grid(&gray, 3, 1, 2, 1, 0), Err(EvalError::Shape(_))));
    assert!(matches!(image_grid(&[], 0, 1, 2, 1, 0), Err(EvalError::TooFew { .. })));
    assert!(matches!(image_grid(&gray, 2, 1, 2, 0, 0), Err(EvalError::Invalid(_))));
}

/// The scale factor and left edge of the grid inside an `image_figure` of it.
pub fn grid_placement(grid_width: u32, figure_width: u32) -> (u32, u32) {
    let k = MIN_GRID_WIDTH.div_ceil(grid_width);
    (k, (figure_width - k * grid_width) / 2)
}

#[test]
fn image_figure_scales_the_grid_under_a_title_and_above_a_caption() {
    // A 30 × 20 grid of distinct colours: scaled by ⌈400/30⌉ = 14, every pixel a 14 × 14 block.
    let grid = RgbImage::from_fn(30, 20, |c, r| Rgb([(8 * c) as u8, (12 * r) as u8, 200]));
    let img = image_figure("Samples", "64 samples, ddim-50", &grid).unwrap();
    let (k, x0) = grid_placement(30, img.width());
    assert_eq!(k, 14);
    assert_eq!(img.dimensions(), (30 * 14 + 20, TITLE_BAND + 20 * 14 + CAPTION_BAND));
    for (c, r) in [(0, 0), (29, 19), (7, 11)] {
        for (dc, dr) in [(0, 0), (k - 1, k - 1)] {
            let at = img.get_pixel(x0 + c * k + dc, TITLE_BAND + r * k + dr);
            assert_eq!(at, grid.get_pixel(c, r), "grid pixel ({c}, {r})");
        }
    }
    assert!(title_pixels(&img) > 50, "title");
    let caption = dark_in(&img, (0, img.width()), (TITLE_BAND + 20 * 14, img.height()));
    assert!(caption > 50, "caption: {caption} dark px");
    let bare = image_figure("", "", &grid).unwrap();
    assert_eq!(title_pixels(&bare) + dark_in(&bare, (0, bare.width()), (TITLE_BAND + 280, bare.height())), 0);
    assert!(matches!(image_figure("t", "c", &RgbImage::new(0, 0)), Err(EvalError::Invalid(_))));
}

// ---------------------------------------------------------------------------------------------
// PNG

fn sample_picture() -> RgbImage {
    let data = [0.1f32, 0.2, -0.5, 0.3, 1.0, -1.0];
    let samples = [0.0f32, 0.0, 0.7, 0.7];
    let series = [
        Series { label: "data", points: &data, color: DATA_COLOR },
        Series { label: "samples", points: &samples, color: SAMPLE_COLOR },
    ];
    scatter("png", &series, Bounds::covering(&[&data, &samples], 0.1), 200).unwrap()
}

#[test]
fn png_bytes_decode_to_the_same_pixels() {
    let img = sample_picture();
    let bytes = png_bytes(&img).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let back = image::load_from_memory(&bytes).unwrap();
    assert_eq!(back.color(), image::ColorType::Rgb8);
    assert_eq!(back.to_rgb8(), img);
}

#[test]
fn save_png_writes_a_file_and_names_the_path_on_error() {
    let img = sample_picture();
    let path = temp_path("scatter.png");
    save_png(&path, &img).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, img);

    let bad = std::env::temp_dir().join(format!("cdl_eval_plot_missing_dir_{}", std::process::id())).join("x.png");
    let err = save_png(&bad, &img).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, EvalError::Io { .. }), "{err:?}");
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}
