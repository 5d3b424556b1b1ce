//! `eval::plot`: pixels land where the documented coordinate maps put them, with the documented
//! colours (all checks exact: the drawing is integer/nearest-neighbour, no blending), and PNGs
//! decode back to the same pixels.

use std::path::PathBuf;

use cdl::eval::plot::{
    auto_range, heatmap, heatmap_in_range, heatmap_with_points, image_grid, overlay_points, png_bytes, save_png,
    scatter, side_by_side, to_u8, Bounds, Colormap, BACKGROUND, DATA_COLOR, FRAME_COLOR, NAN_COLOR, OVERLAY_FILL,
    OVERLAY_RIM, SAMPLE_COLOR,
};
use cdl::eval::EvalError;
use image::{Rgb, RgbImage};

const UNIT: Bounds = Bounds { x0: 0.0, x1: 1.0, y0: 0.0, y1: 1.0 };

fn rgb(c: [u8; 3]) -> Rgb<u8> {
    Rgb(c)
}

/// A temporary file path unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cdl_eval_plot_{}_{name}", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// Scatter and bounds

#[test]
fn scatter_puts_samples_and_data_where_they_lie() {
    // Unit bounds on 200 px: column = ⌊200·x⌋, row = ⌊200·(1 − y)⌋ (y up, row 0 at the top). The
    // points sit at pixel centres (x = (c + ½)/200), away from the f32 rounding at pixel edges.
    let data = [0.2525f32, 0.7475, 0.8025, 0.7975];
    let samples = [0.6025f32, 0.2975, 0.8025, 0.7975];
    let img = scatter(&data, &samples, UNIT, 200).unwrap();
    assert_eq!((img.width(), img.height()), (200, 200));
    assert_eq!(UNIT.pixel(0.2525, 0.7475, 200, 200), Some((50, 50)));
    assert_eq!(UNIT.pixel(0.6025, 0.2975, 200, 200), Some((120, 140)));
    assert_eq!(UNIT.pixel(1.5, 0.3, 200, 200), None);
    assert_eq!(*img.get_pixel(50, 50), DATA_COLOR, "data point");
    assert_eq!(*img.get_pixel(120, 140), SAMPLE_COLOR, "sample");
    assert_eq!(*img.get_pixel(160, 40), SAMPLE_COLOR, "a sample is drawn over data at the same place");
    assert_eq!(*img.get_pixel(100, 100), BACKGROUND);
    assert_eq!(*img.get_pixel(50, 150), BACKGROUND, "y is up: nothing at the mirrored row");
    assert_eq!(*img.get_pixel(0, 0), FRAME_COLOR);
    assert_eq!(*img.get_pixel(199, 123), FRAME_COLOR);
    // Discs are small: 4 px away from a lone point is background.
    assert_eq!(*img.get_pixel(54, 50), BACKGROUND);
    // Non-finite points are skipped, not errors.
    assert!(scatter(&[f32::NAN, 0.5], &[0.5, f32::INFINITY], UNIT, 32).is_ok());
    assert!(matches!(scatter(&[0.5], &[], UNIT, 32), Err(EvalError::Shape(_))));
    assert!(matches!(scatter(&[], &[], UNIT, 0), Err(EvalError::Invalid(_))));
    // Huge bounds: too many integers in view, ticks are left out (and nothing overflows).
    let huge = Bounds { x0: -1e30, x1: 1e30, y0: -1e38, y1: 3e38 };
    assert!(scatter(&[0.0, 0.0], &[], huge, 16).is_ok());
    let flat = Bounds { x0: 1.0, x1: 1.0, y0: 0.0, y1: 1.0 };
    assert!(matches!(scatter(&[], &[], flat, 32), Err(EvalError::Invalid(_))));
}

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

// ---------------------------------------------------------------------------------------------
// Heat maps

#[test]
fn heatmap_maps_range_ends_and_nan() {
    // values (ny = 2, nx = 3), row 0 at the top; 60 px: cells are 20 px wide, 30 px tall.
    let values = [0.0, 1.0, 2.5, 3.0, f64::NAN, 5.0];
    let img = heatmap(&values, 3, 2, 60, Colormap::Viridis).unwrap();
    let cell = |col: u32, row: u32| *img.get_pixel(20 * col + 10, 30 * row + 15);
    assert_eq!(cell(0, 0), rgb([0x44, 0x01, 0x54]), "min → first viridis stop");
    assert_eq!(cell(2, 1), rgb([0xfd, 0xe7, 0x25]), "max → last viridis stop");
    assert_eq!(cell(1, 1), NAN_COLOR, "NaN → grey");
    // 2.5 → t = 0.5 → halfway between stops 4 and 5, rounded half away from 0.
    assert_eq!(cell(2, 0), rgb([35, 144, 140]));
    assert_eq!(*img.get_pixel(0, 30), FRAME_COLOR);
    assert_eq!(Colormap::Viridis.rgb(0.0), rgb(Colormap::Viridis.stops()[0]));
    assert_eq!(Colormap::Diverging.rgb(1.0), rgb([180, 4, 38]));
    assert_eq!(Colormap::Diverging.rgb(f64::NAN), NAN_COLOR);

    // Diverging ranges are symmetric about 0: −1 → first stop, 0.5 → t = 0.75 → stop 3 of 5.
    let img = heatmap(&[-1.0, 0.5], 2, 1, 40, Colormap::Diverging).unwrap();
    assert_eq!(auto_range(&[-1.0, 0.5], Colormap::Diverging), Some((-1.0, 1.0)));
    assert_eq!(*img.get_pixel(10, 20), rgb([59, 76, 192]));
    assert_eq!(*img.get_pixel(30, 20), rgb([244, 154, 123]));

    // A fixed range clamps, ±∞ take the ends; a constant grid is the middle colour.
    let img = heatmap_in_range(&[-9.0, f64::INFINITY], 2, 1, 40, Colormap::Viridis, (0.0, 1.0)).unwrap();
    assert_eq!(*img.get_pixel(10, 20), rgb([0x44, 0x01, 0x54]));
    assert_eq!(*img.get_pixel(30, 20), rgb([0xfd, 0xe7, 0x25]));
    let img = heatmap(&[7.0; 4], 2, 2, 40, Colormap::Viridis).unwrap();
    assert_eq!(*img.get_pixel(10, 10), Colormap::Viridis.rgb(0.5));
    assert!(heatmap(&[f64::NAN; 4], 2, 2, 8, Colormap::Viridis).is_ok());

    assert!(matches!(heatmap(&values, 2, 2, 60, Colormap::Viridis), Err(EvalError::Shape(_))));
    assert!(matches!(heatmap(&[], 0, 0, 60, Colormap::Viridis), Err(EvalError::Shape(_))));
    let bad_range = heatmap_in_range(&values, 3, 2, 60, Colormap::Viridis, (1.0, 0.0));
    assert!(matches!(bad_range, Err(EvalError::Invalid(_))));
}

#[test]
fn heatmap_with_points_overlays_rimmed_discs() {
    // 4 × 4 cells over [−2, 2]², 200 px: x = −2 + 4·(c + 0.5)/200 puts a point at the centre of
    // pixel column c (and likewise y, from the top).
    let b = Bounds { x0: -2.0, x1: 2.0, y0: -2.0, y1: 2.0 };
    let (c, r) = (120u32, 70u32);
    let (x, y) = (-2.0 + 4.0 * (c as f32 + 0.5) / 200.0, 2.0 - 4.0 * (r as f32 + 0.5) / 200.0);
    assert_eq!(b.pixel(x, y, 200, 200), Some((c, r)));
    let values: Vec<f64> = (0..16).map(f64::from).collect();
    let img = heatmap_with_points(&values, 4, 4, 200, Colormap::Viridis, b, &[x, y]).unwrap();
    // Disc radius at 200 px is 1 (the minimum), rim radius 2.
    assert_eq!(*img.get_pixel(c, r), OVERLAY_FILL);
    assert_eq!(*img.get_pixel(c + 1, r), OVERLAY_FILL);
    assert_eq!(*img.get_pixel(c + 2, r), OVERLAY_RIM);
    assert_eq!(*img.get_pixel(c, r - 2), OVERLAY_RIM);
    // Three pixels away: the heat map (cell col 2, row 1 = value 6 of 0..15).
    assert_eq!(*img.get_pixel(c + 3, r), Colormap::Viridis.rgb(6.0 / 15.0));
    // overlay_points on its own, and its shape guard.
    let mut plain = heatmap(&values, 4, 4, 200, Colormap::Viridis).unwrap();
    overlay_points(&mut plain, b, &[x, y]).unwrap();
    assert_eq!(*plain.get_pixel(c, r), OVERLAY_FILL);
    assert_eq!(*plain.get_pixel(c + 2, r), OVERLAY_RIM);
    // heatmap_with_points adds tick marks at integer coordinates (x = 0 → column 100, 2 px long).
    assert_eq!(*img.get_pixel(100, 1), FRAME_COLOR);
    assert_eq!(*plain.get_pixel(100, 1), Colormap::Viridis.rgb(2.0 / 15.0));
    assert!(matches!(overlay_points(&mut plain, b, &[x]), Err(EvalError::Shape(_))));
}

// ---------------------------------------------------------------------------------------------
// Image grids and panels

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

#[test]
fn side_by_side_composes_panels() {
    let a = RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]));
    let b = RgbImage::from_pixel(2, 4, Rgb([9, 8, 7]));
    let out = side_by_side(&[&a, &b], 1);
    // (3 + 2 + 3·1) × (4 + 2·1), top-aligned.
    assert_eq!((out.width(), out.height()), (8, 6));
    assert_eq!(*out.get_pixel(1, 1), Rgb([1, 2, 3]));
    assert_eq!(*out.get_pixel(3, 2), Rgb([1, 2, 3]));
    assert_eq!(*out.get_pixel(3, 3), BACKGROUND, "below the shorter panel");
    assert_eq!(*out.get_pixel(4, 1), BACKGROUND, "gap");
    assert_eq!(*out.get_pixel(5, 1), Rgb([9, 8, 7]));
    assert_eq!(*out.get_pixel(6, 4), Rgb([9, 8, 7]));
    assert_eq!(*out.get_pixel(7, 4), BACKGROUND);
    assert_eq!(side_by_side(&[], 3).dimensions(), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// PNG

fn sample_picture() -> RgbImage {
    let data = [0.1f32, 0.2, -0.5, 0.3, 1.0, -1.0];
    let samples = [0.0f32, 0.0, 0.7, 0.7];
    scatter(&data, &samples, Bounds::covering(&[&data, &samples], 0.1), 64).unwrap()
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
