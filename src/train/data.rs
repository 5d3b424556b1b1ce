//! Training data for the 2-D experiments: the built-in toy sets of math.md §5.1 (`Toy`, pure
//! functions of a seed), user CSV points, and mini-batch order (`Batcher`, a pure function of
//! (seed, step, N, B), so a resumed run draws exactly the batches of an uninterrupted one). Not
//! here: image data, GPU upload, the flow-synthetic variants, the Datasaurus "real_dino"
//! (`Toy::Dino` is an original polygon, `DINO_POLYGON`).

use std::fmt;
use std::path::PathBuf;

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use crate::diffusion::rng::HostRng;
use crate::text::OneLine;

// ---------------------------------------------------------------------------------------------
// Constants

/// Stream tag (words[1]) of toy generation; words[0] is the toy's index in `Toy::ALL`.
///
/// Every draw of this module comes from `diffusion::rng::HostRng` on stream words
/// `[id, TAG_*, 0]`, with tags distinct from the loss's stream tags (`diffusion::loss::TAG_*`,
/// 0..=3), so sharing one run seed between the loss and the data never reuses a stream.
pub const TAG_TOY: u32 = 0x10;
/// Stream tag (words[1]) of the epoch permutations; words = [epoch lo, TAG_BATCH, epoch hi].
pub const TAG_BATCH: u32 = 0x11;

/// Most data rows `parse_csv` accepts (80 MB of f32 points).
pub const MAX_CSV_POINTS: usize = 10_000_000;
/// Largest CSV file `read_csv` reads, in bytes (1 GiB), checked before reading.
pub const MAX_CSV_BYTES: u64 = 1 << 30;
/// Longest line `parse_csv` accepts, in bytes (64 KiB; a row of points is a few dozen). The csv
/// reader keeps a table of 8+ bytes per field of a row, so a line of commas would otherwise cost
/// tens of times its size.
pub const MAX_CSV_LINE_BYTES: usize = 1 << 16;

/// Points the toy page generates for a built-in set (`Toy::generate(PAGE_TOY_POINTS, seed)`):
/// what it trains on and draws, and the variances of its density map, which `cdl export`
/// reproduces for a shipped file's preview.
pub const PAGE_TOY_POINTS: usize = 10_000;
/// Moons: std of the Gaussian noise added to each coordinate (sklearn `make_moons(noise=0.03)`).
pub const MOONS_NOISE: f64 = 0.03;
/// Eight Gaussians: radius of the ring of centres, before the final division.
pub const EIGHT_GAUSSIANS_RADIUS: f64 = 4.0;
/// Eight Gaussians: std of each component, before the final division.
pub const EIGHT_GAUSSIANS_STD: f64 = 0.25;
/// Eight Gaussians: the final division (≈ √2), as in the CDL / FFJORD generators.
pub const EIGHT_GAUSSIANS_DIV: f64 = 1.414;
/// Two spirals: std of the Gaussian noise added to each coordinate (FFJORD `2spirals`).
pub const SPIRALS_NOISE: f64 = 0.1;
/// Circles: radii of the outer and inner ring (sklearn `make_circles(factor=0.5)`).
pub const CIRCLES_RADII: [f64; 2] = [1.0, 0.5];
/// Circles: std of the Gaussian noise added to each coordinate.
pub const CIRCLES_NOISE: f64 = 0.03;
/// Dino: std of the Gaussian jitter added to each coordinate, in polygon units (body ≈ 96 wide).
pub const DINO_JITTER: f64 = 0.4;

/// The dinosaur: a sauropod facing right (tail tip at the left, long neck rising to a small head at
/// the upper right, four column legs with feet on y = 4), as one simple polygon, counter-clockwise,
/// in units where the animal is 96 wide and 59 tall (area 1663.5, 29 % of its bounding box).
///
/// This shape is original, authored for this crate vertex by vertex; it is not derived from the
/// Datasaurus "dino" points or any other published data set.
pub const DINO_POLYGON: [[f64; 2]; 45] = [
    // tail tip, tail underside, hind thigh
    [0.0, 27.0],
    [11.0, 26.0],
    [21.0, 24.0],
    [28.0, 21.0],
    // hind legs (far, near) with the gap between them
    [30.0, 14.0],
    [31.0, 4.0],
    [37.0, 4.0],
    [37.0, 12.0],
    [40.0, 12.0],
    [40.0, 4.0],
    [46.0, 4.0],
    [46.0, 16.0],
    // belly
    [50.0, 19.0],
    [55.0, 19.0],
    // front legs
    [56.0, 14.0],
    [56.0, 4.0],
    [62.0, 4.0],
    [62.0, 12.0],
    [65.0, 12.0],
    [65.0, 4.0],
    [71.0, 4.0],
    [71.0, 17.0],
    // chest, front of the neck
    [73.0, 24.0],
    [76.0, 32.0],
    [79.0, 41.0],
    [82.0, 49.0],
    [84.0, 54.0],
    // head: jaw, snout, forehead, back of the skull
    [88.0, 55.0],
    [94.0, 56.0],
    [96.0, 58.0],
    [95.0, 60.0],
    [91.0, 62.0],
    [87.0, 63.0],
    [83.0, 61.0],
    // back of the neck
    [80.0, 56.0],
    [77.0, 48.0],
    [73.0, 40.0],
    [69.0, 36.0],
    // back (hump over the shoulders), hips, top of the tail
    [64.0, 39.0],
    [56.0, 41.0],
    [48.0, 41.0],
    [40.0, 38.0],
    [32.0, 35.0],
    [22.0, 32.0],
    [11.0, 30.0],
];

// ---------------------------------------------------------------------------------------------
// Errors

/// Everything that can go wrong reading or preparing data; `Display` is one line.
#[derive(Debug)]
pub enum DataError {
    /// The contents of CSV text named `source`, at 1-based `line`.
    Csv { source: String, line: u64, msg: String },
    /// A file-system operation failed; `action` reads like "cannot open".
    Io { action: &'static str, path: PathBuf, err: std::io::Error },
    /// A file above `MAX_CSV_BYTES`.
    TooLarge { path: PathBuf, bytes: u64, limit: u64 },
    /// A `--data` value that is neither a built-in name nor a CSV path.
    UnknownSource { spec: String },
    /// A coordinate whose standard deviation is zero or not finite.
    Degenerate { coord: usize, std: f64 },
    /// An error about the data from `source` (a path or a toy name).
    InSource { source: String, inner: Box<DataError> },
    /// A caller argument out of range (batch size, set size).
    Invalid(String),
    /// Not available on this target (reading files in the browser).
    Unsupported(String),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Csv { source, line, msg } => write!(f, "{}: line {line}: {}", OneLine(source), OneLine(msg)),
            Self::Io { action, path, err } => {
                write!(f, "{action} {}: {}", OneLine(&path.display().to_string()), OneLine(&err.to_string()))
            }
            Self::TooLarge { path, bytes, limit } => write!(
                f,
                "{}: file is {bytes} bytes, more than the {limit}-byte limit for CSV input",
                OneLine(&path.display().to_string())
            ),
            Self::UnknownSource { spec } => write!(
                f,
                "unknown data source \"{}\": not a built-in data set ({}) and not a .csv file or an existing path",
                OneLine(spec),
                Toy::ALL.map(|t| t.name()).join(", ")
            ),
            Self::Degenerate { coord, std } => {
                write!(f, "cannot standardize: coordinate {coord} has standard deviation {std} (need finite > 0)")
            }
            Self::InSource { source, inner } => write!(f, "{}: {inner}", OneLine(source)),
            Self::Invalid(m) => write!(f, "invalid data argument: {}", OneLine(m)),
            Self::Unsupported(m) => write!(f, "unsupported: {}", OneLine(m)),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { err, .. } => Some(err),
            Self::InSource { inner, .. } => Some(inner.as_ref()),
            _ => None,
        }
    }
}

/// A field value for an error message: quoted, at most 32 characters, control characters escaped.
fn quote(s: &str) -> String {
    const MAX: usize = 32;
    let mut q: String = s.chars().take(MAX).flat_map(|c| c.escape_debug()).collect();
    if s.chars().nth(MAX).is_some() {
        q.push_str("...");
    }
    format!("\"{q}\"")
}

// ---------------------------------------------------------------------------------------------
// Points

/// n points of `dim` coordinates. data: (n, dim) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Points {
    pub dim: usize,
    pub data: Vec<f32>,
}

/// The per-coordinate affine map `standardize` applied: standardized = (x − mean) / std.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    /// (dim,)
    pub mean: Vec<f64>,
    /// (dim,), every entry finite and > 0.
    pub std: Vec<f64>,
}

impl Standardization {
    /// mean 0, std 1: the map of data that is already in model units (the toys).
    pub fn identity(dim: usize) -> Self {
        Self { mean: vec![0.0; dim], std: vec![1.0; dim] }
    }

    /// x ← (x − mean) / std, row by row. data: (n, dim)
    pub fn apply(&self, data: &mut [f32]) {
        let dim = self.mean.len();
        for row in data.chunks_exact_mut(dim.max(1)) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = ((f64::from(*v) - self.mean[c]) / self.std[c]) as f32;
            }
        }
    }

    /// x ← x · std + mean: model samples back to the units of the original data. data: (n, dim)
    pub fn invert(&self, data: &mut [f32]) {
        let dim = self.mean.len();
        for row in data.chunks_exact_mut(dim.max(1)) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (f64::from(*v) * self.std[c] + self.mean[c]) as f32;
            }
        }
    }
}

impl Points {
    /// An empty set of `dim`-dimensional points.
    pub fn empty(dim: usize) -> Self {
        Self { dim, data: Vec::new() }
    }

    /// Number of points (0 when dim is 0).
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Point `i`. (dim,)
    pub fn point(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Per-coordinate mean, accumulated in f64; NaN for an empty set. (dim,)
    pub fn mean(&self) -> Vec<f64> {
        let mut sum = vec![0.0f64; self.dim];
        for row in self.data.chunks_exact(self.dim.max(1)) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
        let n = self.len() as f64;
        sum.into_iter().map(|s| s / n).collect()
    }

    /// Per-coordinate population variance (divide by n), two-pass in f64; NaN for an empty set.
    /// (dim,)
    pub fn variances(&self) -> Vec<f64> {
        let mean = self.mean();
        let mut sum = vec![0.0f64; self.dim];
        for row in self.data.chunks_exact(self.dim.max(1)) {
            for ((s, v), m) in sum.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(*v) - m;
                *s += d * d;
            }
        }
        let n = self.len() as f64;
        sum.into_iter().map(|s| s / n).collect()
    }

    /// Shifts and scales every coordinate to mean 0 and population variance 1, and returns the
    /// map used. Fails, leaving the points unchanged, when a coordinate's std is 0 or not finite
    /// (an empty set, a constant column, or non-finite values).
    pub fn standardize(&mut self) -> Result<Standardization, DataError> {
        let mean = self.mean();
        let std: Vec<f64> = self.variances().into_iter().map(f64::sqrt).collect();
        for (coord, (&s, &m)) in std.iter().zip(&mean).enumerate() {
            if !(s.is_finite() && s > 0.0 && m.is_finite()) {
                return Err(DataError::Degenerate { coord, std: s });
            }
        }
        let st = Standardization { mean, std };
        st.apply(&mut self.data);
        Ok(st)
    }
}

/// out ← the points at `idx`, concatenated. out: (idx.len(), dim). Panics on an index ≥ n.
pub fn gather(points: &Points, idx: &[u32], out: &mut Vec<f32>) {
    out.clear();
    out.reserve(idx.len() * points.dim);
    for &i in idx {
        out.extend_from_slice(points.point(i as usize));
    }
}

// ---------------------------------------------------------------------------------------------
// Toy sets

/// The built-in 2-D data sets (math.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Toy {
    Moons,
    Spirals,
    Checkerboard,
    EightGaussians,
    Circles,
    Dino,
}

impl Toy {
    /// Every toy, in the order of their stream ids (words[0] = index here).
    pub const ALL: [Toy; 6] =
        [Toy::Moons, Toy::Spirals, Toy::Checkerboard, Toy::EightGaussians, Toy::Circles, Toy::Dino];

    /// The canonical name (what `--data` takes and run names use).
    pub fn name(&self) -> &'static str {
        match self {
            Toy::Moons => "moons",
            Toy::Spirals => "spirals",
            Toy::Checkerboard => "checkerboard",
            Toy::EightGaussians => "8gaussians",
            Toy::Circles => "circles",
            Toy::Dino => "dino",
        }
    }

    /// The toy called `name` (case-insensitive; also "two_moons", "eight_gaussians", "2spirals",
    /// "circle", "dinosaur", with '-' for '_').
    pub fn from_name(name: &str) -> Option<Toy> {
        let n = name.trim().to_ascii_lowercase().replace('-', "_");
        Some(match n.as_str() {
            "moons" | "two_moons" => Toy::Moons,
            "spirals" | "2spirals" | "two_spirals" => Toy::Spirals,
            "checkerboard" => Toy::Checkerboard,
            "8gaussians" | "eight_gaussians" => Toy::EightGaussians,
            "circles" | "circle" => Toy::Circles,
            "dino" | "dinosaur" => Toy::Dino,
            _ => return None,
        })
    }

    /// One line for `--help` and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Toy::Moons => "two interleaved half circles (sklearn make_moons, noise 0.03)",
            Toy::Spirals => "two interleaved spiral arms, 1.5 turns each (FFJORD 2spirals)",
            Toy::Checkerboard => "uniform on the alternate squares of a 4x4 board",
            Toy::EightGaussians => "eight Gaussians on a circle, one every 45 degrees (radius 4, std 0.25)",
            Toy::Circles => "two concentric rings, radii 1 and 0.5 (noise 0.03)",
            Toy::Dino => "uniform inside an original sauropod silhouette (not the Datasaurus points)",
        }
    }

    fn index(&self) -> u32 {
        match self {
            Toy::Moons => 0,
            Toy::Spirals => 1,
            Toy::Checkerboard => 2,
            Toy::EightGaussians => 3,
            Toy::Circles => 4,
            Toy::Dino => 5,
        }
    }

    /// n points, standardized (each coordinate mean 0, population variance 1 over these n), as a
    /// pure function of (toy, n, seed): `generate_raw` followed by `Points::standardize`. With
    /// n < 2 there is no spread to scale and the points are all 0. data: (n, 2)
    pub fn generate(&self, n: usize, seed: u64) -> Points {
        let mut p = self.generate_raw(n, seed);
        if p.standardize().is_err() {
            p.data.iter_mut().for_each(|v| *v = 0.0);
        }
        p
    }

    /// n i.i.d. points in the toy's own units (before standardizing), from the stream
    /// `HostRng::new(seed, [index, TAG_TOY, 0])`. data: (n, 2)
    pub fn generate_raw(&self, n: usize, seed: u64) -> Points {
        let mut rng = HostRng::new(seed, [self.index(), TAG_TOY, 0]);
        let mut data = Vec::with_capacity(2 * n);
        let pi = std::f64::consts::PI;
        for _ in 0..n {
            let [x, y] = match self {
                // sklearn make_moons: outer (cos t, sin t), inner (1 − cos t, 0.5 − sin t), t in [0, π];
                // t is drawn uniformly (sklearn uses a linspace) so the points are i.i.d.
                Toy::Moons => {
                    let inner = rng.next_uniform() < 0.5;
                    let (s, c) = (pi * rng.next_uniform()).sin_cos();
                    let (x, y) = if inner { (1.0 - c, 0.5 - s) } else { (c, s) };
                    [x + MOONS_NOISE * rng.next_normal(), y + MOONS_NOISE * rng.next_normal()]
                }
                // FFJORD 2spirals: t = √u · 3π, arm (−t cos t + U(0, ½), t sin t + U(0, ½)), the
                // second arm is its negation, all / 3, plus N(0, 0.1²).
                Toy::Spirals => {
                    let t = rng.next_uniform().sqrt() * 3.0 * pi;
                    let sign = if rng.next_uniform() < 0.5 { 1.0 } else { -1.0 };
                    let x = -t * t.cos() + 0.5 * rng.next_uniform();
                    let y = t * t.sin() + 0.5 * rng.next_uniform();
                    [
                        sign * x / 3.0 + SPIRALS_NOISE * rng.next_normal(),
                        sign * y / 3.0 + SPIRALS_NOISE * rng.next_normal(),
                    ]
                }
                // FFJORD checkerboard: squares of side 2 on [−4, 4)², occupied iff ⌊x/2⌋ + ⌊y/2⌋ is even.
                Toy::Checkerboard => {
                    let x1 = 4.0 * rng.next_uniform() - 2.0;
                    let lower = if rng.next_uniform() < 0.5 { 2.0 } else { 0.0 };
                    let x2 = rng.next_uniform() - lower + x1.floor().rem_euclid(2.0);
                    [2.0 * x1, 2.0 * x2]
                }
                // FFJORD / CDL 8gaussians: centre at angle k·45°, radius 4, N(0, 0.25²), all / 1.414.
                Toy::EightGaussians => {
                    let k = ((8.0 * rng.next_uniform()) as u32).min(7);
                    let (s, c) = (f64::from(k) * pi / 4.0).sin_cos();
                    let x = EIGHT_GAUSSIANS_RADIUS * c + EIGHT_GAUSSIANS_STD * rng.next_normal();
                    let y = EIGHT_GAUSSIANS_RADIUS * s + EIGHT_GAUSSIANS_STD * rng.next_normal();
                    [x / EIGHT_GAUSSIANS_DIV, y / EIGHT_GAUSSIANS_DIV]
                }
                Toy::Circles => {
                    let r = CIRCLES_RADII[usize::from(rng.next_uniform() < 0.5)];
                    let (s, c) = (2.0 * pi * rng.next_uniform()).sin_cos();
                    [r * c + CIRCLES_NOISE * rng.next_normal(), r * s + CIRCLES_NOISE * rng.next_normal()]
                }
                Toy::Dino => {
                    let p = sample_in_polygon(&DINO_POLYGON, &mut rng);
                    [p[0] + DINO_JITTER * rng.next_normal(), p[1] + DINO_JITTER * rng.next_normal()]
                }
            };
            data.push(x as f32);
            data.push(y as f32);
        }
        Points { dim: 2, data }
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True when `p` lies inside the simple polygon `poly` (even-odd rule; boundary points may fall
/// either way).
pub fn point_in_polygon(p: [f64; 2], poly: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let mut prev = match poly.last() {
        Some(&v) => v,
        None => return false,
    };
    for &cur in poly {
        if (cur[1] > p[1]) != (prev[1] > p[1]) {
            let x = cur[0] + (p[1] - cur[1]) * (prev[0] - cur[0]) / (prev[1] - cur[1]);
            if p[0] < x {
                inside = !inside;
            }
        }
        prev = cur;
    }
    inside
}

/// A uniform point inside `poly`: rejection sampling from its bounding box (two uniforms a try;
/// about 3.4 tries for the dino).
fn sample_in_polygon(poly: &[[f64; 2]], rng: &mut HostRng) -> [f64; 2] {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for v in poly {
        for c in 0..2 {
            lo[c] = lo[c].min(v[c]);
            hi[c] = hi[c].max(v[c]);
        }
    }
    loop {
        let p = [lo[0] + (hi[0] - lo[0]) * rng.next_uniform(), lo[1] + (hi[1] - lo[1]) * rng.next_uniform()];
        if point_in_polygon(p, poly) {
            return p;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// 2-D points from CSV text; `source` names the text in errors (a path, "upload", ...).
///
/// Format: two numeric columns x, y; fields trimmed; blank lines ignored; LF or CRLF; a UTF-8 BOM
/// is skipped. Header rule: the first non-blank row is a header when none of its fields parses as
/// a number. A header with columns named `x` and `y` (case-insensitive, once each) selects those
/// columns and every data row must have the header's width; any other header must have exactly 2
/// columns. Without a header every row must have exactly 2 fields. Values parse as f64 (Rust
/// syntax: `1`, `-2.5e3`, `.5`) and must be finite in f32. At most `MAX_CSV_POINTS` rows and
/// `MAX_CSV_LINE_BYTES` per line. Every error is one line: `<source>: line <n>: <what>`.
pub fn parse_csv(text: &str, source: &str) -> Result<Points, DataError> {
    parse_csv_limited(text, source, MAX_CSV_POINTS)
}

/// `parse_csv` with a caller-chosen row limit instead of `MAX_CSV_POINTS`.
pub fn parse_csv_limited(text: &str, source: &str, max_points: usize) -> Result<Points, DataError> {
    let err = |line: u64, msg: String| DataError::Csv { source: source.to_string(), line, msg };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some((i, long)) = text.split('\n').enumerate().find(|(_, l)| l.len() > MAX_CSV_LINE_BYTES) {
        let msg = format!("line of {} bytes, more than the {MAX_CSV_LINE_BYTES}-byte limit", long.len());
        return Err(err(i as u64 + 1, msg));
    }
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let mut rec = csv::StringRecord::new();
    // (x column, y column, row width, from a header)
    let mut layout: Option<(usize, usize, usize, bool)> = None;
    let mut header_line = None;
    let mut data = Vec::new();
    let mut lines = LineCounter::new(text);
    loop {
        match reader.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e.position().map_or(lines.line, |p| lines.at(p.byte()));
                return Err(err(at, format!("malformed CSV: {e}")));
            }
        }
        let line = rec.position().map_or(lines.line, |p| lines.at(p.byte()));
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let (cx, cy, width, has_header) = match layout {
            Some(l) => l,
            None if rec.iter().all(|f| f.parse::<f64>().is_err()) => {
                layout = Some(header_layout(&rec).map_err(|m| err(line, m))?);
                header_line = Some(line);
                continue;
            }
            None => *layout.insert((0, 1, 2, false)),
        };
        if rec.len() != width {
            let why = if has_header { " as in the header" } else { "" };
            return Err(err(line, format!("expected {width} columns{why}, found {}", rec.len())));
        }
        if data.len() / 2 >= max_points {
            return Err(err(line, format!("more than {max_points} data rows (the limit)")));
        }
        for (c, name) in [(cx, "x"), (cy, "y")] {
            data.push(parse_value(&rec[c], name).map_err(|m| err(line, m))?);
        }
    }
    if data.is_empty() {
        return Err(match header_line {
            Some(h) => err(h + 1, "no data rows after the header".into()),
            None => err(1, "no data rows (empty file)".into()),
        });
    }
    Ok(Points { dim: 2, data })
}

/// 1-based line numbers from byte offsets. The csv crate's own `Position::line` does not count
/// skipped blank lines, and its `byte` is where the reader resumed (possibly inside the previous
/// terminator or before blank lines), so a record starts at the first byte from there that is not
/// '\r' or '\n'. Offsets only grow, so counting is linear in the text.
struct LineCounter<'a> {
    text: &'a [u8],
    counted_to: usize,
    /// Line of byte `counted_to`.
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self { text: text.as_bytes(), counted_to: 0, line: 1 }
    }

    /// The line on which the record the reader resumed at `byte` starts.
    fn at(&mut self, byte: u64) -> u64 {
        let mut start = (byte as usize).clamp(self.counted_to, self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        self.line += self.text[self.counted_to..start].iter().filter(|&&b| b == b'\n').count() as u64;
        self.counted_to = start;
        self.line
    }
}

/// The layout a header row selects, or why it is refused.
fn header_layout(rec: &csv::StringRecord) -> Result<(usize, usize, usize, bool), String> {
    let find = |name: &str| -> Result<Option<usize>, String> {
        let mut hits = rec.iter().enumerate().filter(|(_, f)| f.eq_ignore_ascii_case(name)).map(|(i, _)| i);
        let first = hits.next();
        match hits.next() {
            Some(_) => Err(format!("header names column {name} more than once")),
            None => Ok(first),
        }
    };
    match (find("x")?, find("y")?) {
        (Some(x), Some(y)) => Ok((x, y, rec.len(), true)),
        _ if rec.len() == 2 => Ok((0, 1, 2, true)),
        _ => Err(format!(
            "header has {} column(s) and no columns named x and y; expected 2 columns or columns named x and y",
            rec.len()
        )),
    }
}

/// One field as a finite f32, or the message saying why not.
fn parse_value(field: &str, column: &str) -> Result<f32, String> {
    let v: f64 = field.parse().map_err(|_| format!("column {column}: {} is not a number", quote(field)))?;
    if !v.is_finite() {
        return Err(format!("column {column}: {} is not finite", quote(field)));
    }
    let f = v as f32;
    if !f.is_finite() {
        return Err(format!("column {column}: {} is out of the f32 range", quote(field)));
    }
    Ok(f)
}

/// Reads and parses a CSV file (see `parse_csv`); the file must be a regular file of at most
/// `MAX_CSV_BYTES`, checked before reading, and UTF-8. Errors name the path.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_csv(path: &Path) -> Result<Points, DataError> {
    use std::io::Read;
    let io = |action, err| DataError::Io { action, path: path.to_path_buf(), err };
    let file = std::fs::File::open(path).map_err(|e| io("cannot open", e))?;
    let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
    if !meta.is_file() {
        return Err(io("cannot read", std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let too_large = |bytes| DataError::TooLarge { path: path.to_path_buf(), bytes, limit: MAX_CSV_BYTES };
    if meta.len() > MAX_CSV_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // take(): the file may grow between stat and read.
    file.take(MAX_CSV_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io("cannot read", e))?;
    if bytes.len() as u64 > MAX_CSV_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    let name = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + ok.iter().filter(|&&b| b == b'\n').count() as u64;
        DataError::Csv { source: name.clone(), line, msg: "not valid UTF-8 text".into() }
    })?;
    parse_csv(&text, &name)
}

// ---------------------------------------------------------------------------------------------
// Data source (--data)

/// Where training points come from: a built-in toy or a CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Toy(Toy),
    Csv(PathBuf),
}

impl DataSource {
    /// The `--data` rule: a built-in name (`Toy::from_name`) is that toy; otherwise the string is a
    /// CSV path when it ends in ".csv" (any case) or names an existing path; otherwise an error
    /// that lists the built-in names.
    pub fn parse(spec: &str) -> Result<DataSource, DataError> {
        if let Some(t) = Toy::from_name(spec) {
            return Ok(DataSource::Toy(t));
        }
        let unknown = || DataError::UnknownSource { spec: spec.to_string() };
        if spec.trim().is_empty() {
            return Err(unknown());
        }
        if spec.to_ascii_lowercase().ends_with(".csv") || path_exists(spec) {
            return Ok(DataSource::Csv(PathBuf::from(spec)));
        }
        Err(unknown())
    }

    /// The points, standardized, and the map that standardized them. A toy gives
    /// `generate(n_toy, seed)` (already standardized: the map is `Standardization::identity`); a
    /// CSV file is read natively (`n_toy` and `seed` unused) and standardized with its own mean and
    /// std, errors prefixed with the path. In the browser a CSV path is `Unsupported`: parse the
    /// uploaded text with `parse_csv` instead.
    pub fn load(&self, n_toy: usize, seed: u64) -> Result<(Points, Standardization), DataError> {
        match self {
            DataSource::Toy(t) => Ok((t.generate(n_toy, seed), Standardization::identity(2))),
            DataSource::Csv(path) => load_csv(path),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Toy(t) => f.write_str(t.name()),
            DataSource::Csv(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn path_exists(spec: &str) -> bool {
    Path::new(spec).exists()
}

#[cfg(target_arch = "wasm32")]
fn path_exists(_spec: &str) -> bool {
    false
}

#[cfg(not(target_arch = "wasm32"))]
fn load_csv(path: &Path) -> Result<(Points, Standardization), DataError> {
    let mut p = read_csv(path)?;
    let st =
        p.standardize().map_err(|e| DataError::InSource { source: path.display().to_string(), inner: Box::new(e) })?;
    Ok((p, st))
}

#[cfg(target_arch = "wasm32")]
fn load_csv(path: &std::path::Path) -> Result<(Points, Standardization), DataError> {
    Err(DataError::Unsupported(format!(
        "reading {} needs the native build; in the browser pass the file's text to parse_csv",
        path.display()
    )))
}

// ---------------------------------------------------------------------------------------------
// Mini-batches

/// The seed of a run's batch order and built-in data from its `seed`: independent of the model
/// init and the noise, which use the seed through other streams. The CLI and the page agree on
/// it, so a checkpoint continues with the batches it would have seen.
pub fn data_seed(seed: u64) -> u64 {
    seed ^ 0xDA7A_0000_0000_0000
}

/// Example indices per training step, as a pure function of (seed, step, N, B).
///
/// Positions s·B .. s·B + B of the endless sequence perm₀ ‖ perm₁ ‖ ... where permₑ is epoch e's
/// permutation of 0..N (`epoch_permutation`). Every epoch sees each example exactly once; a batch
/// may straddle two epochs (or several when B > N). The two most recent permutations are cached,
/// so walking the steps costs O(B) per step plus O(N) per epoch, but the result never depends on
/// the order of calls: a fresh `Batcher` asked for step k equals one that walked 0..k.
#[derive(Clone, Debug)]
pub struct Batcher {
    seed: u64,
    n: usize,
    batch: usize,
    /// (epoch, permutation (N,)), two slots.
    cache: [Option<(u64, Vec<u32>)>; 2],
}

impl Batcher {
    /// Batches of `batch` examples out of `n`; needs 1 ≤ n ≤ u32::MAX and batch ≥ 1.
    pub fn new(seed: u64, n: usize, batch: usize) -> Result<Self, DataError> {
        if n == 0 || n as u64 > u64::from(u32::MAX) {
            return Err(DataError::Invalid(format!("data set size N = {n} must be in 1..=2^32-1")));
        }
        if batch == 0 {
            return Err(DataError::Invalid("batch size B must be >= 1".into()));
        }
        Ok(Self { seed, n, batch, cache: [None, None] })
    }

    /// N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// B.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The epoch that position s·B (the first example of step s) falls in.
    pub fn epoch_of(&self, step: u64) -> u64 {
        (u128::from(step) * self.batch as u128 / self.n as u128) as u64
    }

    /// out ← the B example indices of `step`. out: (B,)
    pub fn indices(&mut self, step: u64, out: &mut Vec<u32>) {
        out.clear();
        let n = self.n as u128;
        let mut pos = u128::from(step) * self.batch as u128;
        let mut left = self.batch;
        while left > 0 {
            // Epochs past 2^64 wrap (unreachable: 2^64 epochs of one example each).
            let epoch = (pos / n) as u64;
            let k = (pos % n) as usize;
            let take = left.min(self.n - k);
            let slot = self.slot(epoch);
            if let Some((_, perm)) = &self.cache[slot] {
                out.extend_from_slice(&perm[k..k + take]);
            }
            pos += take as u128;
            left -= take;
        }
    }

    /// The cache slot holding epoch `e`'s permutation, computing it if needed (replaces the slot
    /// with the older epoch, so a forward walk keeps the current and the next epoch).
    fn slot(&mut self, e: u64) -> usize {
        if let Some(i) = self.cache.iter().position(|c| matches!(c, Some((ce, _)) if *ce == e)) {
            return i;
        }
        let i = match (&self.cache[0], &self.cache[1]) {
            (None, _) => 0,
            (_, None) => 1,
            (Some((e0, _)), Some((e1, _))) => usize::from(e1 < e0),
        };
        let mut perm = self.cache[i].take().map(|(_, p)| p).unwrap_or_default();
        epoch_permutation(self.seed, e, self.n, &mut perm);
        self.cache[i] = Some((e, perm));
        i
    }
}

/// out ← epoch `epoch`'s permutation of 0..n: Fisher–Yates from the identity, i = n−1 down to 1
/// swapping i with ⌊u·(i+1)⌋, u from `HostRng::new(seed, [epoch lo, TAG_BATCH, epoch hi])`.
/// out: (n,)
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize, out: &mut Vec<u32>) {
    out.clear();
    out.extend((0..n).map(|i| i as u32));
    let mut rng = HostRng::new(seed, [epoch as u32, TAG_BATCH, (epoch >> 32) as u32]);
    for i in (1..n).rev() {
        // u < 1, but u·(i+1) may round up to i+1 for large i.
        let j = ((rng.next_uniform() * (i + 1) as f64) as usize).min(i);
        out.swap(i, j);
    }
}
