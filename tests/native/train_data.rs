//! `train::data`: toy sets (standardized, deterministic, the right shapes), CSV parsing and its
//! one-line errors, `DataSource`, and the `Batcher`'s epoch permutations and exact resume.

use std::f64::consts::PI;
use std::path::PathBuf;

use cdl::train::data::{
    epoch_permutation, gather, parse_csv, parse_csv_limited, point_in_polygon, Batcher, DataError, DataSource, Points,
    Standardization, Toy, DINO_JITTER, DINO_POLYGON, EIGHT_GAUSSIANS_DIV, EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD,
    MAX_CSV_POINTS,
};

const N: usize = 20_000;

/// (x, y) pairs of a 2-D set, widened to f64.
fn xy(p: &Points) -> Vec<[f64; 2]> {
    assert_eq!(p.dim, 2);
    p.data.chunks_exact(2).map(|c| [f64::from(c[0]), f64::from(c[1])]).collect()
}

fn fraction(pts: &[[f64; 2]], f: impl Fn([f64; 2]) -> bool) -> f64 {
    pts.iter().filter(|&&p| f(p)).count() as f64 / pts.len() as f64
}

/// A temporary file path unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cdl_train_data_{}_{name}", std::process::id()))
}

/// `text` is refused with one error at line `line` of pts.csv that contains `want`.
fn assert_csv_err(text: &str, line: usize, want: &str) {
    let e = csv_err(text);
    assert!(e.starts_with(&format!("pts.csv: line {line}: ")) && e.contains(want), "{e}");
}

fn csv_err(text: &str) -> String {
    let e = parse_csv(text, "pts.csv").unwrap_err();
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(matches!(e, DataError::Csv { .. }), "{s}");
    s
}

// ---------------------------------------------------------------------------------------------
// Points

#[test]
fn points_moments_and_standardize() {
    let mut p = Points { dim: 2, data: vec![1.0, 10.0, 3.0, 10.0, 5.0, 40.0] };
    assert_eq!(p.len(), 3);
    assert!(!p.is_empty());
    assert_eq!(p.point(1), &[3.0, 10.0]);
    assert_eq!(p.mean(), vec![3.0, 20.0]);
    let v = p.variances();
    assert!((v[0] - 8.0 / 3.0).abs() < 1e-12 && (v[1] - 200.0).abs() < 1e-9, "{v:?}");
    let orig = p.clone();
    let st = p.standardize().unwrap();
    assert_eq!(st.mean, vec![3.0, 20.0]);
    assert!((st.std[1] - 200f64.sqrt()).abs() < 1e-9);
    let (m, v) = (p.mean(), p.variances());
    assert!(m.iter().all(|m| m.abs() < 1e-6) && v.iter().all(|v| (v - 1.0).abs() < 1e-6), "{m:?} {v:?}");
    let mut back = p.data.clone();
    st.invert(&mut back);
    for (a, b) in back.iter().zip(&orig.data) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn standardize_refuses_degenerate_columns() {
    let mut constant = Points { dim: 2, data: vec![1.0, 5.0, 2.0, 5.0] };
    let before = constant.clone();
    let e = constant.standardize().unwrap_err();
    assert!(matches!(e, DataError::Degenerate { coord: 1, .. }), "{e}");
    assert!(e.to_string().contains("coordinate 1"), "{e}");
    assert_eq!(constant, before, "a failed standardize must leave the points unchanged");
    assert!(Points::empty(2).standardize().is_err());
    let mut nan = Points { dim: 2, data: vec![1.0, f32::NAN, 2.0, 3.0] };
    assert!(nan.standardize().is_err());
}

#[test]
fn gather_concatenates_points() {
    let p = Points { dim: 2, data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0] };
    let mut out = vec![9.0];
    gather(&p, &[2, 0, 2], &mut out);
    assert_eq!(out, vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
}

// ---------------------------------------------------------------------------------------------
// Toys: common properties

#[test]
fn every_toy_is_standardized() {
    for t in Toy::ALL {
        let p = t.generate(N, 42);
        assert_eq!((p.dim, p.len()), (2, N), "{t}");
        assert!(p.data.iter().all(|v| v.is_finite()), "{t}");
        let (m, v) = (p.mean(), p.variances());
        for c in 0..2 {
            assert!(m[c].abs() < 1e-5, "{t}: mean[{c}] = {}", m[c]);
            assert!((v[c] - 1.0).abs() < 1e-4, "{t}: var[{c}] = {}", v[c]);
        }
    }
}

#[test]
fn toys_are_deterministic_per_seed_and_differ_across_seeds_and_toys() {
    for t in Toy::ALL {
        let a = t.generate(2_000, 7);
        assert_eq!(a, t.generate(2_000, 7), "{t}");
        let b = t.generate(2_000, 8);
        let same = a.data.iter().zip(&b.data).filter(|(x, y)| x == y).count();
        assert!(same < 20, "{t}: seeds 7 and 8 share {same} coordinates");
    }
    for (i, s) in Toy::ALL.iter().enumerate() {
        for t in &Toy::ALL[i + 1..] {
            assert_ne!(s.generate(100, 1), t.generate(100, 1), "{s} vs {t}");
        }
    }
}

#[test]
fn generate_is_standardized_generate_raw() {
    for t in Toy::ALL {
        let mut raw = t.generate_raw(500, 3);
        let st = raw.standardize().unwrap();
        assert_eq!(raw, t.generate(500, 3), "{t}");
        assert!(st.std.iter().all(|s| (s - 1.0).abs() > 1e-3), "{t}: raw set already has unit std? {st:?}");
    }
    assert!(Toy::Moons.generate(0, 1).is_empty());
    assert_eq!(Toy::Dino.generate(1, 1).data, vec![0.0, 0.0]);
}

#[test]
fn toy_names_round_trip() {
    for t in Toy::ALL {
        assert_eq!(Toy::from_name(t.name()), Some(t));
        assert_eq!(Toy::from_name(&t.name().to_uppercase()), Some(t));
        assert_eq!(t.to_string(), t.name());
        let d = t.describe();
        assert!(!d.is_empty() && !d.contains('\n'));
    }
    let names: Vec<_> = Toy::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["moons", "spirals", "checkerboard", "8gaussians", "circles", "dino"]);
    assert_eq!(Toy::from_name("eight_gaussians"), Some(Toy::EightGaussians));
    assert_eq!(Toy::from_name("Two_Moons"), Some(Toy::Moons));
    assert_eq!(Toy::from_name("mnist"), None);
    assert_eq!(Toy::from_name(""), None);
}

// ---------------------------------------------------------------------------------------------
// Toys: shapes (checked on generate_raw, in each set's own units)

#[test]
fn moons_lie_on_two_arcs() {
    let pts = xy(&Toy::Moons.generate_raw(N, 1));
    // Distance to the upper unit half circle at (0, 0) and to the lower one at (1, 0.5).
    let arc = |p: [f64; 2], c: [f64; 2], up: bool| {
        let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
        if (dy >= 0.0) == up {
            ((dx * dx + dy * dy).sqrt() - 1.0).abs()
        } else {
            ((dx.abs() - 1.0).powi(2) + dy * dy).sqrt()
        }
    };
    let outer = |p| arc(p, [0.0, 0.0], true);
    let inner = |p| arc(p, [1.0, 0.5], false);
    // noise 0.03 per coordinate: 0.15 is 5 sigma.
    let near = fraction(&pts, |p| outer(p).min(inner(p)) < 0.15);
    assert!(near > 0.999, "only {near} of the points lie near the arcs");
    let on_outer = fraction(&pts, |p| outer(p) < inner(p));
    assert!((on_outer - 0.5).abs() < 0.02, "outer arc holds {on_outer}");
    // The two moons interleave: each arc's middle is inside the other's span but far from it.
    assert!(fraction(&pts, |p| (p[0] - 0.0).abs() < 0.1 && (p[1] - 1.0).abs() < 0.15) > 0.005);
    assert!(fraction(&pts, |p| (p[0] - 1.0).abs() < 0.1 && (p[1] + 0.5).abs() < 0.15) > 0.005);
    assert!(fraction(&pts, |p| (p[0] - 0.5).abs() < 0.2 && (p[1] - 0.25).abs() < 0.2) < 0.001);
}

#[test]
fn spirals_follow_two_interleaved_arms() {
    let pts = xy(&Toy::Spirals.generate_raw(N, 2));
    // Arm one is (−t cos t, t sin t)/3: angle π − t at radius t/3, so angle + 3r ≡ π (mod 2π);
    // arm two is its negation (≡ 0). Both: angle + 3r ≡ 0 (mod π), away from the centre.
    let phase = |p: [f64; 2]| {
        let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
        let a = (p[1].atan2(p[0]) + 3.0 * r).rem_euclid(PI);
        a.min(PI - a)
    };
    let far: Vec<_> = pts.iter().copied().filter(|p| p[0].hypot(p[1]) > 1.0).collect();
    assert!(far.len() > N / 2);
    let on_arm = fraction(&far, |p| phase(p) < PI / 4.0);
    assert!(on_arm > 0.9, "only {on_arm} of the points follow the arms (isotropic data: 0.5)");
    // Point symmetry: the two arms are each other's negation.
    let right = fraction(&pts, |p| p[0] > 0.0);
    assert!((right - 0.5).abs() < 0.02, "{right}");
    let rmax = pts.iter().map(|p| p[0].hypot(p[1])).fold(0.0, f64::max);
    assert!((3.0..4.0).contains(&rmax), "max radius {rmax}");
}

#[test]
fn checkerboard_fills_alternate_cells() {
    let pts = xy(&Toy::Checkerboard.generate_raw(N, 3));
    let mut counts = [[0usize; 4]; 4];
    for p in &pts {
        assert!(p.iter().all(|v| (-4.0..4.0).contains(v)), "{p:?} outside the board");
        let (i, j) = ((p[0] / 2.0).floor() as i64, (p[1] / 2.0).floor() as i64);
        assert_eq!((i + j).rem_euclid(2), 0, "{p:?} in an empty cell");
        counts[(i + 2) as usize][(j + 2) as usize] += 1;
    }
    for (i, row) in counts.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if (i + j) % 2 == 0 {
                let f = c as f64 / N as f64;
                assert!((f - 0.125).abs() < 0.015, "cell ({i}, {j}) holds {f}");
            }
        }
    }
}

#[test]
fn eight_gaussians_sit_every_45_degrees() {
    let pts = xy(&Toy::EightGaussians.generate_raw(N, 4));
    let r = EIGHT_GAUSSIANS_RADIUS / EIGHT_GAUSSIANS_DIV;
    let sd = EIGHT_GAUSSIANS_STD / EIGHT_GAUSSIANS_DIV;
    let mut counts = [0usize; 8];
    for p in &pts {
        let k = (p[1].atan2(p[0]) / (PI / 4.0)).round().rem_euclid(8.0) as usize;
        let c = [r * (k as f64 * PI / 4.0).cos(), r * (k as f64 * PI / 4.0).sin()];
        let d = (p[0] - c[0]).hypot(p[1] - c[1]);
        assert!(d < 6.0 * sd, "{p:?} is {d} from centre {k}");
        counts[k] += 1;
    }
    for (k, &c) in counts.iter().enumerate() {
        let f = c as f64 / N as f64;
        assert!((f - 0.125).abs() < 0.015, "cluster {k} holds {f}");
    }
    let spread = fraction(&pts, |p| {
        let k = (p[1].atan2(p[0]) / (PI / 4.0)).round();
        (p[0] - r * (k * PI / 4.0).cos()).hypot(p[1] - r * (k * PI / 4.0).sin()) < sd
    });
    // |N(0, I)| < 1 in 2-D: 1 − e^(−½) ≈ 0.393.
    assert!((spread - 0.393).abs() < 0.02, "{spread}");
}

#[test]
fn circles_have_two_radii() {
    let pts = xy(&Toy::Circles.generate_raw(N, 5));
    let radius = |p: [f64; 2]| p[0].hypot(p[1]);
    let outer = fraction(&pts, |p| (radius(p) - 1.0).abs() < 0.15);
    let inner = fraction(&pts, |p| (radius(p) - 0.5).abs() < 0.15);
    assert!(outer + inner > 0.999, "outer {outer} + inner {inner}");
    assert!((outer - 0.5).abs() < 0.02 && (inner - 0.5).abs() < 0.02, "outer {outer}, inner {inner}");
    assert!(fraction(&pts, |p| radius(p) < 0.3) < 0.001);
    // Each ring is uniform in angle: every quadrant holds a quarter.
    let q = fraction(&pts, |p| p[0] > 0.0 && p[1] > 0.0);
    assert!((q - 0.25).abs() < 0.02, "{q}");
}

#[test]
fn dino_polygon_is_a_simple_counter_clockwise_polygon() {
    let p = &DINO_POLYGON;
    let n = p.len();
    let area: f64 = (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum::<f64>() / 2.0;
    assert_eq!(area, 1663.5);
    let orient = |a: [f64; 2], b: [f64; 2], c: [f64; 2]| (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
    for i in 0..n {
        for j in i + 2..n {
            if i == 0 && j == n - 1 {
                continue;
            }
            let (a, b, c, d) = (p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]);
            let crosses = orient(a, b, c) * orient(a, b, d) < 0.0 && orient(c, d, a) * orient(c, d, b) < 0.0;
            assert!(!crosses, "edges {i} and {j} cross");
        }
    }
    assert!(point_in_polygon([50.0, 30.0], p), "body");
    assert!(point_in_polygon([90.0, 59.0], p), "head");
    assert!(!point_in_polygon([50.0, 10.0], p), "under the belly");
    assert!(!point_in_polygon([60.0, 55.0], p), "between back and head");
}

#[test]
fn dino_points_fill_the_silhouette() {
    let pts = xy(&Toy::Dino.generate_raw(N, 6));
    let inside = fraction(&pts, |p| point_in_polygon(p, &DINO_POLYGON));
    assert!(inside > 0.95, "only {inside} inside the polygon");
    // Jitter is small: nothing far outside the bounding box.
    let m = 6.0 * DINO_JITTER;
    assert!(pts.iter().all(|p| (-m..96.0 + m).contains(&p[0]) && (4.0 - m..63.0 + m).contains(&p[1])));
    // Not convex: empty regions between the parts, points on both sides of them.
    let empty =
        |x0: f64, x1: f64, y0: f64, y1: f64| fraction(&pts, |p| p[0] > x0 && p[0] < x1 && p[1] > y0 && p[1] < y1);
    assert_eq!(empty(48.0, 54.0, 4.0, 14.0), 0.0, "under the belly");
    assert_eq!(empty(5.0, 60.0, 45.0, 64.0), 0.0, "above the back");
    assert_eq!(empty(78.0, 96.0, 4.0, 28.0), 0.0, "in front of the chest");
    assert!(empty(40.0, 46.0, 4.0, 10.0) > 0.01 && empty(56.0, 62.0, 4.0, 10.0) > 0.01, "legs");
    assert!(empty(85.0, 96.0, 55.0, 64.0) > 0.02, "head");
    assert!(empty(0.0, 12.0, 20.0, 35.0) > 0.005, "tail tip");
    // Occupied unit cells cover about the polygon's share of its 96 × 59 bounding box (29 %, plus
    // the cells the edges cut); its convex hull would cover 54 %.
    let mut cells = std::collections::HashSet::new();
    for p in &pts {
        cells.insert((p[0].floor() as i64, p[1].floor() as i64));
    }
    let share = cells.len() as f64 / (96.0 * 59.0);
    assert!((0.27..0.4).contains(&share), "covered share {share}");
}

// ---------------------------------------------------------------------------------------------
// CSV: accepted inputs

#[test]
fn csv_without_header() {
    let p = parse_csv("1,2\n3.5,-4e1\n", "a.csv").unwrap();
    assert_eq!(p, Points { dim: 2, data: vec![1.0, 2.0, 3.5, -40.0] });
}

#[test]
fn csv_with_header() {
    let p = parse_csv("x,y\n1,2\n3,4", "a.csv").unwrap();
    assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);
    let p = parse_csv("lon,lat\n1,2\n", "a.csv").unwrap();
    assert_eq!(p.data, vec![1.0, 2.0], "any 2-column header");
}

#[test]
fn csv_named_columns_in_another_order() {
    let p = parse_csv("id,Y,label,X\n0,2,a,1\n1,4,b,3\n", "a.csv").unwrap();
    assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);
    let p = parse_csv("y,x\n2,1\n", "a.csv").unwrap();
    assert_eq!(p.data, vec![1.0, 2.0]);
}

#[test]
fn csv_blank_lines_crlf_spaces_quotes_bom() {
    let text = "\u{feff}\r\n x , y \r\n\r\n 1 , 2 \r\n   \r\n\"3\",\"4\"\r\n\r\n";
    assert_eq!(parse_csv(text, "a.csv").unwrap().data, vec![1.0, 2.0, 3.0, 4.0]);
}

// ---------------------------------------------------------------------------------------------
// CSV: errors (one line, naming the source and the 1-based line)

#[test]
fn csv_empty_input() {
    for text in ["", "\n\n", "\r\n  \r\n"] {
        assert_csv_err(text, 1, "no data rows");
    }
    assert_csv_err("x,y\n\n", 2, "after the header");
}

#[test]
fn csv_wrong_column_count() {
    assert_csv_err("1,2\n3,4,5\n", 2, "expected 2 columns, found 3");
    let e = csv_err("1\n");
    assert!(e.contains("line 1") && e.contains("found 1"), "{e}");
    assert_csv_err("x,y,z\n1,2,3\n\n4,5\n", 4, "expected 3 columns as in the header, found 2");
    assert_csv_err("a,b,c\n1,2,3\n", 1, "named x and y");
    let e = csv_err("x,y,x\n1,2,3\n");
    assert!(e.contains("line 1") && e.contains("more than once"), "{e}");
}

#[test]
fn csv_non_numeric_value() {
    assert_csv_err("x,y\n1,2\n\n3,abc\n", 4, "column y: \"abc\" is not a number");
    let e = csv_err("x,y\n\"1\n\",2\n\n3,q\n");
    assert!(e.starts_with("pts.csv: line 5: "), "a quoted field spanning lines counts them: {e}");
    let e = csv_err("1.5,oops\n");
    assert!(e.starts_with("pts.csv: line 1: ") && e.contains("\"oops\""), "a half-numeric first row is data: {e}");
    let long = format!("1,{}\n", "z".repeat(5000));
    let e = csv_err(&long);
    assert!(e.len() < 200, "long values are truncated: {e}");
}

#[test]
fn csv_non_finite_value() {
    for (v, what) in [("nan", "not finite"), ("-inf", "not finite"), ("Infinity", "not finite"), ("1e39", "f32 range")]
    {
        let e = csv_err(&format!("0,0\n1,{v}\n"));
        assert!(e.starts_with("pts.csv: line 2: ") && e.contains(&format!("\"{v}\"")) && e.contains(what), "{e}");
    }
}

#[test]
fn csv_row_limit() {
    assert_eq!(MAX_CSV_POINTS, 10_000_000);
    assert_eq!(parse_csv_limited("1,2\n3,4\n", "s", 2).unwrap().len(), 2);
    let e = parse_csv_limited("1,2\n3,4\n\n5,6\n", "s", 2).unwrap_err().to_string();
    assert!(e.starts_with("s: line 4: ") && e.contains("more than 2"), "{e}");
}

#[test]
fn csv_error_source_stays_on_one_line() {
    let e = parse_csv("", "bad\nname").unwrap_err().to_string();
    assert!(!e.contains('\n') && e.contains("bad\\nname"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Files and DataSource

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn read_csv_file_and_errors() {
    let path = temp_path("read.csv");
    std::fs::write(&path, "x,y\n1,2\n3,4\n").unwrap();
    let p = cdl::train::data::read_csv(&path).unwrap();
    assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);

    std::fs::write(&path, b"x,y\n1,2\n3,\xff\n").unwrap();
    let e = cdl::train::data::read_csv(&path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("line 3") && e.contains("UTF-8"), "{e}");

    std::fs::write(&path, "1,2\n3,x\n").unwrap();
    let e = cdl::train::data::read_csv(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: line 2: ", path.display())), "{e}");
    std::fs::remove_file(&path).unwrap();

    let e = cdl::train::data::read_csv(&path).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    let s = e.to_string();
    assert!(s.starts_with("cannot open") && s.contains(&path.display().to_string()) && !s.contains('\n'), "{s}");

    let e = cdl::train::data::read_csv(&std::env::temp_dir()).unwrap_err().to_string();
    assert!(e.contains("not a regular file") || e.contains("cannot"), "{e}");
}

#[test]
fn data_source_parse_rule() {
    assert_eq!(DataSource::parse("moons").unwrap(), DataSource::Toy(Toy::Moons));
    assert_eq!(DataSource::parse("Eight_Gaussians").unwrap(), DataSource::Toy(Toy::EightGaussians));
    assert_eq!(DataSource::parse("dir/pts.CSV").unwrap(), DataSource::Csv(PathBuf::from("dir/pts.CSV")));
    let existing = temp_path("points.txt");
    std::fs::write(&existing, "1,2\n").unwrap();
    let spec = existing.display().to_string();
    assert_eq!(DataSource::parse(&spec).unwrap(), DataSource::Csv(existing.clone()));
    std::fs::remove_file(&existing).unwrap();
    for bad in ["mnist", "", "no/such/file.txt"] {
        let e = DataSource::parse(bad).unwrap_err();
        assert!(matches!(e, DataError::UnknownSource { .. }));
        let s = e.to_string();
        for t in Toy::ALL {
            assert!(s.contains(t.name()), "{s}");
        }
        assert!(s.contains(&format!("\"{bad}\"")) && !s.contains('\n'), "{s}");
    }
}

#[test]
fn data_source_load_standardizes() {
    let (p, st) = DataSource::Toy(Toy::Circles).load(1_000, 9).unwrap();
    assert_eq!(p, Toy::Circles.generate(1_000, 9));
    assert_eq!(st, Standardization::identity(2));

    let path = temp_path("load.csv");
    std::fs::write(&path, "x,y\n1,10\n3,10\n5,40\n").unwrap();
    let (p, st) = DataSource::Csv(path.clone()).load(1_000, 9).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(st.mean, vec![3.0, 20.0]);
    assert!(p.mean().iter().all(|m| m.abs() < 1e-6));
    assert!(p.variances().iter().all(|v| (v - 1.0).abs() < 1e-6));

    std::fs::write(&path, "x,y\n1,10\n3,10\n").unwrap();
    let e = DataSource::Csv(path.clone()).load(1, 0).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()) && e.contains("coordinate 1"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Batcher

/// The indices of steps 0..steps, walked in order by one batcher.
fn walk(seed: u64, n: usize, b: usize, steps: u64) -> Vec<Vec<u32>> {
    let mut bat = Batcher::new(seed, n, b).unwrap();
    let mut out = Vec::new();
    (0..steps)
        .map(|s| {
            bat.indices(s, &mut out);
            out.clone()
        })
        .collect()
}

#[test]
fn batcher_rejects_bad_sizes() {
    assert!(Batcher::new(0, 0, 4).is_err());
    assert!(Batcher::new(0, 4, 0).is_err());
    assert!(Batcher::new(0, 4, 4).is_ok());
}

#[test]
fn batcher_epochs_are_permutations_when_b_divides_n() {
    let (n, b) = (96, 32);
    let steps = walk(11, n, b, 12);
    let mut epochs = Vec::new();
    for e in steps.chunks(n / b) {
        let mut all: Vec<u32> = e.concat();
        assert!(all.iter().all(|&i| (i as usize) < n));
        epochs.push(all.clone());
        all.sort_unstable();
        assert_eq!(all, (0..n as u32).collect::<Vec<_>>(), "every index exactly once per epoch");
    }
    assert_ne!(epochs[0], epochs[1], "each epoch has its own order");
    assert_ne!(epochs[0], (0..n as u32).collect::<Vec<_>>(), "shuffled");
}

#[test]
fn batcher_covers_each_epoch_once_when_b_does_not_divide_n() {
    let (n, b) = (100, 32);
    let stream: Vec<u32> = walk(12, n, b, 50).concat();
    for (e, chunk) in stream.chunks_exact(n).enumerate() {
        let mut got = chunk.to_vec();
        let mut perm = Vec::new();
        epoch_permutation(12, e as u64, n, &mut perm);
        assert_eq!(got, perm, "epoch {e} is epoch_permutation");
        got.sort_unstable();
        assert_eq!(got, (0..n as u32).collect::<Vec<_>>());
    }
}

#[test]
fn batcher_resume_is_exact() {
    let (n, b) = (100, 32);
    let walked = walk(13, n, b, 60);
    // Step 3 covers positions 96..128: the end of epoch 0 and the start of epoch 1.
    for k in [0u64, 1, 3, 6, 9, 25, 59] {
        let mut fresh = Batcher::new(13, n, b).unwrap();
        let mut out = Vec::new();
        fresh.indices(k, &mut out);
        assert_eq!(out, walked[k as usize], "step {k}");
    }
    // Any call order gives the same answers.
    let mut bat = Batcher::new(13, n, b).unwrap();
    let mut out = Vec::new();
    for k in (0..60u64).rev().chain([3, 40, 3, 0, 59]) {
        bat.indices(k, &mut out);
        assert_eq!(out, walked[k as usize], "step {k} out of order");
    }
    assert_ne!(walk(14, n, b, 1)[0], walked[0], "seed dependence");
}

#[test]
fn batcher_batch_larger_than_n_spans_epochs() {
    let (n, b) = (5, 12);
    let walked = walk(15, n, b, 4);
    let mut stream = Vec::new();
    let mut perm = Vec::new();
    for e in 0..10 {
        epoch_permutation(15, e, n, &mut perm);
        stream.extend_from_slice(&perm);
    }
    for (s, got) in walked.iter().enumerate() {
        assert_eq!(got[..], stream[s * b..(s + 1) * b], "step {s}");
    }
    let mut fresh = Batcher::new(15, n, b).unwrap();
    let mut out = Vec::new();
    fresh.indices(3, &mut out);
    assert_eq!(out, walked[3]);
    assert_eq!(fresh.epoch_of(3), 7);
}
