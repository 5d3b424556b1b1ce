//! Statistics of repeated measurements: the mean and its standard error over training seeds, a
//! verdict on a paired difference, and the outlier fraction of a sample set. Pure host code.

/// A sample with any coordinate beyond this many data standard deviations is an outlier.
pub const OUTLIER_STDS: f64 = 4.0;
/// Two-sided 95 % quantiles of Student's t with 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// How many standard errors from 0 a mean of `n` paired differences must be to count: the
/// two-sided 95 % quantile of Student's t with n − 1 degrees of freedom (12.7 at n = 2, 2.78 at
/// n = 5, 2.04 at n = 31, 2 beyond): "2 SE" made honest for the few seeds an experiment has.
/// NaN for n < 2.
pub fn verdict_threshold(n: usize) -> f64 {
    match n {
        0 | 1 => f64::NAN,
        n if n - 1 <= T975.len() => T975[n - 2],
        _ => 2.0,
    }
}

/// Mean and standard error of the mean (sample standard deviation / sqrt(N)); the error is NaN
/// for fewer than two values, the mean NaN for none.
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The verdict on paired differences (new − base) of a lower-is-better figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The mean difference is below −`verdict_threshold` standard errors.
    Better,
    /// The mean difference is above +`verdict_threshold` standard errors.
    Worse,
    /// Within ±`verdict_threshold` standard errors of 0.
    NotDistinguishable,
    /// Fewer than two differences: no standard error.
    OneSeed,
}

impl Verdict {
    /// Judges `diffs`, paired differences (new − base) of a figure where lower is better.
    pub fn of(diffs: &[f64]) -> Self {
        let (m, se) = mean_se(diffs);
        let k = verdict_threshold(diffs.len());
        if !se.is_finite() {
            Self::OneSeed
        } else if m < -k * se {
            Self::Better
        } else if m > k * se {
            Self::Worse
        } else {
            Self::NotDistinguishable
        }
    }

    /// The words a report prints.
    pub fn text(self) -> &'static str {
        match self {
            Self::Better => "better",
            Self::Worse => "worse",
            Self::NotDistinguishable => "not distinguishable (95 %)",
            Self::OneSeed => "n/a (one seed)",
        }
    }
}

/// Fraction of the (n, dim) samples `x` with a coordinate beyond `OUTLIER_STDS`, or not finite,
/// for samples in standardised units (the data's standard deviation is 1 per coordinate).
pub fn outlier_fraction(x: &[f64], dim: usize) -> f64 {
    if dim == 0 || x.len() < dim {
        return 0.0;
    }
    let far = x.chunks_exact(dim).filter(|r| r.iter().any(|v| !v.is_finite() || v.abs() > OUTLIER_STDS)).count();
    far as f64 / (x.len() / dim) as f64
}

/// Fraction of the values of images in [−1, 1] that EDM's uint8 export (`plot::to_u8`) puts at
/// 0 or 255: saturated pixels, the symptom of an image model whose samples leave the data range.
pub fn saturated_fraction(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let sat = x.iter().filter(|&&v| matches!(crate::eval::plot::to_u8(v as f32), 0 | 255)).count();
    sat as f64 / x.len() as f64
}
