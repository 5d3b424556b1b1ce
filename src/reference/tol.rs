//! Named tolerances and the one comparison used by every check: `|a - e| <= atol + rtol * |e|`.
//!
//! Non-finite elements must match exactly (NaN with NaN, +inf with +inf). On failure the
//! report names the worst absolute and relative errors, the first failing index and the first
//! five pairs, so a broken kernel is diagnosed from one line of test output.

/// An absolute and a relative tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

/// Bit-exact: integer-derived results (the counter-based generator) and copies.
pub const EXACT: Tol = Tol { atol: 0.0, rtol: 0.0 };
/// Elementwise f32 ops: one rounding per element, plus transcendental error in SiLU.
pub const STRICT: Tol = Tol { atol: 1e-6, rtol: 1e-5 };
/// Reductions and norms: summation order differs between GPU trees and CPU loops.
pub const DEFAULT: Tol = Tol { atol: 1e-5, rtol: 1e-3 };
/// Backward passes with long reductions (thousands of terms in f32).
pub const LOOSE: Tol = Tol { atol: 1e-4, rtol: 1e-2 };
/// The FID Inception network's 2,048 features against its f64 oracle: f32 through 17
/// convolutions deep (reductions of up to 2,016 terms) and 11 pools; ReLU and max pooling pass
/// the rounding on, so it grows with depth. Measured on lavapipe: max |device − oracle| 1.3e-6 on
/// features up to 2.1 (relative errors up to 4e-3 only on features near zero); 16× that absolute
/// error, or 1e-3 relative.
pub const INCEPTION: Tol = Tol { atol: 2e-5, rtol: 1e-3 };

/// Summary of a comparison: worst errors and, when it failed, where.
#[derive(Clone, Debug)]
pub struct Report {
    pub len: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    pub failures: usize,
    pub first_failure: Option<usize>,
    pub pairs: Vec<(f64, f64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} max_abs={:.3e} max_rel={:.3e} failures={}",
            self.len, self.max_abs, self.max_rel, self.failures
        )?;
        if let Some(i) = self.first_failure {
            write!(f, " first_failure=[{i}] first pairs (actual, expected):")?;
            for (a, e) in &self.pairs {
                write!(f, " ({a:.7e}, {e:.7e})")?;
            }
        }
        Ok(())
    }
}

/// Compares `actual` with `expected` elementwise. A length mismatch counts as one failure.
pub fn compare<A: Copy + Into<f64>, E: Copy + Into<f64>>(actual: &[A], expected: &[E], tol: Tol) -> Report {
    let mut r = Report {
        len: expected.len(),
        max_abs: 0.0,
        max_rel: 0.0,
        failures: usize::from(actual.len() != expected.len()),
        first_failure: None,
        pairs: Vec::new(),
    };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e): (f64, f64) = (a.into(), e.into());
        let ok = if a.is_finite() && e.is_finite() {
            let abs = (a - e).abs();
            r.max_abs = r.max_abs.max(abs);
            if e != 0.0 {
                r.max_rel = r.max_rel.max(abs / e.abs());
            }
            abs <= tol.atol + tol.rtol * e.abs()
        } else {
            (a.is_nan() && e.is_nan()) || a == e
        };
        if !ok {
            r.failures += 1;
            if r.first_failure.is_none() {
                r.first_failure = Some(i);
            }
        }
    }
    if r.failures > 0 {
        let start = r.first_failure.unwrap_or(0);
        r.pairs = actual.iter().zip(expected).skip(start).take(5).map(|(&a, &e)| (a.into(), e.into())).collect();
    }
    r
}

/// Panics with the report when the comparison fails; for tests.
#[track_caller]
pub fn assert_close<A: Copy + Into<f64>, E: Copy + Into<f64>>(what: &str, actual: &[A], expected: &[E], tol: Tol) {
    let r = compare(actual, expected, tol);
    assert!(r.ok(), "{what}: NOT OK {r}");
}
