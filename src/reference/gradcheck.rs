//! Central-difference gradient check in f64: the analytic gradient of a scalar `L(x)` against
//! `(L(x + h e_i) - L(x - h e_i)) / 2h` at a set of coordinates. f64 is required: in f32 the
//! truncation and rounding errors of a central difference are both around 1e-3 and no step size
//! separates them.

/// Step used for central differences. With f64 and O(1) inputs the truncation error h^2 ~ 1e-10
/// and the rounding error eps/h ~ 1e-11 are both far below the check tolerance.
pub const STEP: f64 = 1e-5;
/// Relative agreement required between analytic and numeric derivatives (STYLE practice 8a).
pub const RTOL: f64 = 1e-6;
/// Absolute floor for derivatives that are (nearly) zero.
pub const ATOL: f64 = 1e-8;

/// Checks `analytic[i]` against the central difference of `loss` at every index in `coords`.
/// Returns the first disagreement as a one-line message.
pub fn check(
    what: &str,
    loss: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    coords: impl IntoIterator<Item = usize>,
) -> Result<(), String> {
    let mut xp = x.to_vec();
    for i in coords {
        let orig = xp[i];
        xp[i] = orig + STEP;
        let up = loss(&xp);
        xp[i] = orig - STEP;
        let down = loss(&xp);
        xp[i] = orig;
        let numeric = (up - down) / (2.0 * STEP);
        let err = (numeric - analytic[i]).abs();
        if err > ATOL + RTOL * numeric.abs().max(analytic[i].abs()) {
            return Err(format!(
                "{what}: d/dx[{i}] analytic {:.12e} vs numeric {numeric:.12e} (abs err {err:.3e})",
                analytic[i]
            ));
        }
    }
    Ok(())
}

/// `sum(a * b)` in f64: the fake loss that turns a backward pass into a scalar gradient.
/// Backward references are checked through `L(x) = sum(forward(x) * dout)` with a random `dout`,
/// never `ones_like`, so that every output element carries a distinct weight.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A spread of coordinates: all of them when `n <= max`, otherwise `max` evenly strided ones
/// (first and last included) so edge elements are always checked.
pub fn coords(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut v: Vec<usize> = (0..max).map(|k| k * (n - 1) / (max - 1)).collect();
    v.dedup();
    v
}
