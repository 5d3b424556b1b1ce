//! The feature statistics of `eval`: the Fréchet distance against closed forms (commuting
//! covariances, where tr (Σ₁Σ₂)^{1/2} = Σ sqrt(a_i b_i) in their common eigenbasis; a
//! non-commuting 2×2 pair, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); a set against itself and
//! against a shift), the eigen-solver against Jacobi and A·V = V·Λ, the streamed moments against
//! two-pass sums, KID, the `.npz` of (mu, sigma) both ways and corrupt ones refused, and (with
//! CDL_PYTHON) all of it against pytorch-fid / torch-fidelity's formulas in numpy and scipy
//! (tools/fid_reference.py). The d = 2048 timing is the ignored `fid_dimension_timing` (run it
//! with `cargo test --release --test native eval_fd:: -- --ignored --nocapture`).

use cdl::diffusion::rng::HostRng;
use cdl::eval::fd::{
    frechet, frechet_distance, frechet_moments, frechet_offset, moments, pool_features, symmetric_eigen,
    PYTORCH_FID_EPS,
};
use cdl::eval::feature_stats::{FeatureStats, Moments};
use cdl::eval::kid::{kid, mmd2_polynomial, subset_indices, KidConfig};
use cdl::eval::linalg::{eigh, eigvalsh, jacobi_eigen};
use cdl::eval::npz::{npz_bytes, read_npz, read_stats, stats_npz_bytes};
use cdl::eval::EvalError;

/// f64 round-off over a few hundred accumulations of O(1) values.
const TOL: f64 = 1e-9;
/// Eigen-decompositions: a backward-stable solver leaves residuals ‖AV − VΛ‖ and ‖VVᵀ − I‖ of a
/// small multiple of d·ε·‖A‖ (d = 300: 7e-14·‖A‖); 1e-11 leaves two orders of margin and still
/// catches a wrong rotation (errors of O(1)).
const EIGEN_TOL: f64 = 1e-11;

// ---------------------------------------------------------------------------------------------
// Helpers

fn normals(n: usize, seed: u64) -> Vec<f64> {
    let r = HostRng::new(seed, [7, 0x77, 0]);
    (0..n as u64).map(|i| r.normal_at(i)).collect()
}

/// A random orthogonal d×d matrix: Gram-Schmidt on normal columns.
fn orthogonal(d: usize, seed: u64) -> Vec<f64> {
    let g = normals(d * d, seed);
    let mut q = vec![0.0; d * d];
    for k in 0..d {
        let mut v: Vec<f64> = (0..d).map(|i| g[i * d + k]).collect();
        for j in 0..k {
            let dot: f64 = (0..d).map(|i| v[i] * q[i * d + j]).sum();
            (0..d).for_each(|i| v[i] -= dot * q[i * d + j]);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        (0..d).for_each(|i| q[i * d + k] = v[i] / norm);
    }
    q
}

/// Q diag(l) Qᵀ.
fn with_eigen(q: &[f64], l: &[f64]) -> Vec<f64> {
    let d = l.len();
    let mut s = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            s[i * d + j] = (0..d).map(|k| q[i * d + k] * l[k] * q[j * d + k]).sum();
        }
    }
    s
}

/// A random SPD matrix: GᵀG/n + 0.1·I from n normal rows.
fn random_spd(d: usize, n: usize, seed: u64) -> Vec<f64> {
    let g = normals(n * d, seed);
    let mut s = vec![0.0; d * d];
    for row in g.chunks_exact(d) {
        for i in 0..d {
            for j in 0..d {
                s[i * d + j] += row[i] * row[j];
            }
        }
    }
    s.iter_mut().for_each(|v| *v /= n as f64);
    (0..d).for_each(|i| s[i * d + i] += 0.1);
    s
}

/// max |A v_k − λ_k v_k| and max |V Vᵀ − I| over all entries, for eigenvectors as rows.
fn residuals(a: &[f64], d: usize, values: &[f64], rows: &[f64]) -> (f64, f64) {
    let (mut res, mut orth) = (0.0f64, 0.0f64);
    for k in 0..d {
        let v = &rows[k * d..(k + 1) * d];
        for i in 0..d {
            let av: f64 = (0..d).map(|j| a[i * d + j] * v[j]).sum();
            res = res.max((av - values[k] * v[i]).abs());
        }
        for l in 0..d {
            let dot: f64 = (0..d).map(|j| v[j] * rows[l * d + j]).sum();
            orth = orth.max((dot - if k == l { 1.0 } else { 0.0 }).abs());
        }
    }
    (res, orth)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

// ---------------------------------------------------------------------------------------------
// Fréchet distance: closed forms

#[test]
fn commuting_covariances_give_the_closed_form() {
    let d = 24;
    let q = orthogonal(d, 1);
    let a: Vec<f64> = (0..d).map(|i| 0.1 + i as f64 * 0.3).collect();
    let b: Vec<f64> = (0..d).map(|i| 2.0 + (i as f64 * 0.7).sin()).collect();
    let (mu1, mu2) = (normals(d, 2), normals(d, 3));
    let dist: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y).powi(2)).sum();
    let want = dist + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let (s1, s2) = (with_eigen(&q, &a), with_eigen(&q, &b));
    let got = frechet(&mu1, &s1, &mu2, &s2).unwrap();
    assert!((got - want).abs() < TOL * want.max(1.0), "FD {got}, closed form {want}");
    // pytorch-fid's eps branch: ε·I inside the root only, the traces as given.
    let eps = 1e-3;
    let want_offset = dist + a.iter().sum::<f64>() + b.iter().sum::<f64>()
        - 2.0 * a.iter().zip(&b).map(|(x, y)| ((x + eps) * (y + eps)).sqrt()).sum::<f64>();
    let got_offset = frechet_offset(&mu1, &s1, &mu2, &s2, eps).unwrap();
    assert!((got_offset - want_offset).abs() < TOL * want.max(1.0), "offset FD {got_offset}, {want_offset}");
}

#[test]
fn a_non_commuting_pair_gives_the_two_by_two_closed_form() {
    let s1 = [2.0, 0.6, 0.6, 0.5];
    let s2 = [1.0, -0.3, -0.3, 3.0];
    // tr (Σ₁Σ₂)^{1/2} = sqrt(tr(Σ₁Σ₂) + 2 sqrt(det Σ₁ det Σ₂)).
    let tr12 = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
    let det = |s: &[f64; 4]| s[0] * s[3] - s[1] * s[2];
    let want = (s1[0] + s1[3]) + (s2[0] + s2[3]) - 2.0 * (tr12 + 2.0 * (det(&s1) * det(&s2)).sqrt()).sqrt();
    let got = frechet(&[0.0, 0.0], &s1, &[0.0, 0.0], &s2).unwrap();
    assert!((got - want).abs() < TOL, "FD {got}, closed form {want}");
    // A mean shift adds its squared length.
    let shifted = frechet(&[1.0, -2.0], &s1, &[0.0, 0.0], &s2).unwrap();
    assert!((shifted - want - 5.0).abs() < TOL, "{shifted}");
}

#[test]
fn a_set_against_itself_is_zero_and_against_a_shift_is_the_squared_shift() {
    let (n, d) = (300, 12);
    let x = normals(n * d, 4);
    let same = frechet_distance(&x, &x, d).unwrap();
    assert!(same.abs() < 1e-8, "FD(x, x) = {same}");
    let y: Vec<f64> = x.iter().enumerate().map(|(i, v)| v + if i % d == 0 { 0.5 } else { 0.0 }).collect();
    let shift = frechet_distance(&x, &y, d).unwrap();
    assert!((shift - 0.25).abs() < 1e-8, "FD(x, x + 0.5 e₁) = {shift}");
    // Rank-deficient covariances (n < d) still give a finite, non-negative distance, and the same
    // set against itself still gives 0: the rounding below 0 is clamped, not rooted.
    let few = frechet_distance(&x[..5 * d], &x[5 * d..10 * d], d).unwrap();
    assert!(few.is_finite() && few > -1e-9, "{few}");
    let self_few = frechet_distance(&x[..5 * d], &x[..5 * d], d).unwrap();
    assert!(self_few.abs() < 1e-6, "FD(x, x) with n < d = {self_few}");
}

#[test]
fn covariances_that_are_not_positive_semi_definite_are_refused() {
    let s_bad = [1.0, 0.0, 0.0, -0.5];
    let s_ok = [1.0, 0.0, 0.0, 1.0];
    let e = frechet(&[0.0, 0.0], &s_bad, &[0.0, 0.0], &s_ok).unwrap_err();
    assert!(matches!(e, EvalError::Invalid(_)) && e.to_string().contains("not positive semi-definite"), "{e}");
    let e = frechet(&[0.0, 0.0], &s_ok, &[0.0, 0.0], &s_bad).unwrap_err();
    assert!(e.to_string().contains("not positive semi-definite"), "{e}");
    // Rounding-sized negatives are clamped: −1e-9 is within pytorch-fid's 1e-3 on the root.
    let s_round = [1.0, 0.0, 0.0, -1e-9];
    assert!(frechet(&[0.0, 0.0], &s_round, &[0.0, 0.0], &s_ok).unwrap().is_finite());
    assert!(matches!(frechet(&[0.0], &[1.0], &[0.0, 1.0], &s_ok), Err(EvalError::Shape(_))));
    assert!(matches!(frechet(&[f64::NAN], &[1.0], &[0.0], &[1.0]), Err(EvalError::NonFinite { .. })));
    const { assert!(PYTORCH_FID_EPS == 1e-6) };
}

#[test]
fn pooling_averages_each_channel_over_blocks() {
    // One 2-channel 4×4 image: channel 0 holds its pixel index, channel 1 its negative.
    let img: Vec<f64> = (0..32).map(|i| if i < 16 { i as f64 } else { -((i - 16) as f64) }).collect();
    let f = pool_features(&img, 2, 4, 2).unwrap();
    assert_eq!(f, vec![2.5, 4.5, 10.5, 12.5, -2.5, -4.5, -10.5, -12.5]);
    assert!(pool_features(&img, 2, 4, 3).is_err());
}

// ---------------------------------------------------------------------------------------------
// Moments, streamed

#[test]
fn moments_are_the_unbiased_mean_and_covariance() {
    let x = [1.0, 2.0, 3.0, 6.0, 5.0, 10.0];
    let (m, s) = moments(&x, 2).unwrap();
    assert_eq!(m, vec![3.0, 6.0]);
    // Deviations (−2, −4), (0, 0), (2, 4): Σ = [[8, 16], [16, 32]] / 2.
    assert_eq!(s, vec![4.0, 8.0, 8.0, 16.0]);
}

/// Two-pass mean and covariance in f64, the plain way. x: (n, d)
fn two_pass(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let mut mu = vec![0.0; d];
    x.chunks_exact(d).for_each(|r| mu.iter_mut().zip(r).for_each(|(m, v)| *m += v / n as f64));
    let mut s = vec![0.0; d * d];
    for r in x.chunks_exact(d) {
        for i in 0..d {
            for j in 0..d {
                s[i * d + j] += (r[i] - mu[i]) * (r[j] - mu[j]) / (n - 1) as f64;
            }
        }
    }
    (mu, s)
}

#[test]
fn streamed_moments_match_two_pass_sums_whatever_the_batches() {
    let (n, d) = (700, 9);
    // f32 features with a large common offset: raw sums of squares would lose the covariance.
    let x32: Vec<f32> = normals(n * d, 8).iter().enumerate().map(|(i, v)| (1e4 + (i % d) as f64 + v) as f32).collect();
    let x: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
    let (mu, sigma) = two_pass(&x, d);
    // Batches of 1, 7, 300 (across the internal 256-row flush) and the rest.
    let mut stats = FeatureStats::new(d).unwrap();
    let mut at = 0;
    for rows in [1, 7, 300, n - 308] {
        stats.push(&x32[at * d..(at + rows) * d]).unwrap();
        at += rows;
    }
    assert_eq!(stats.count(), n as u64);
    let m = stats.moments().unwrap();
    // Deviations are O(1) after centring; the mean carries O(1e4) values, so its error is
    // relative to 1e4.
    assert!(max_abs(&m.mu.iter().zip(&mu).map(|(a, b)| a - b).collect::<Vec<_>>()) < 1e4 * 1e-13);
    let err = max_abs(&m.sigma.iter().zip(&sigma).map(|(a, b)| a - b).collect::<Vec<_>>());
    assert!(err < 1e-11, "covariance off by {err}");
    // Two accumulators merged = one over both halves.
    let (mut a, mut b) = (FeatureStats::new(d).unwrap(), FeatureStats::new(d).unwrap());
    a.push_f64(&x[..250 * d]).unwrap();
    b.push_f64(&x[250 * d..]).unwrap();
    a.merge(b).unwrap();
    let merged = a.moments().unwrap();
    let err = max_abs(&merged.sigma.iter().zip(&sigma).map(|(a, b)| a - b).collect::<Vec<_>>());
    assert!(err < 1e-11, "merged covariance off by {err}");
    // Guards.
    assert!(matches!(FeatureStats::new(0), Err(EvalError::Shape(_))));
    let mut s = FeatureStats::new(3).unwrap();
    assert!(matches!(s.push(&[1.0, 2.0]), Err(EvalError::Shape(_))));
    assert!(matches!(s.push(&[1.0, f32::NAN, 2.0]), Err(EvalError::NonFinite { index: 1, .. })));
    s.push(&[1.0, 2.0, 3.0]).unwrap();
    assert!(matches!(s.moments(), Err(EvalError::TooFew { n: 1, need: 2, .. })));
}

// ---------------------------------------------------------------------------------------------
// The eigen-solver

#[test]
fn the_eigen_solver_matches_jacobi_and_reconstructs_random_spd_matrices() {
    // d = 64 (two column tiles) against Jacobi; d = 300 (not a multiple of the tile) on its own.
    for (d, seed, against_jacobi) in [(64, 5, true), (300, 6, false)] {
        let a = random_spd(d, d + 10, seed);
        let e = eigh(&a, d).unwrap();
        let scale = max_abs(&e.values);
        let (res, orth) = residuals(&a, d, &e.values, &e.vectors);
        assert!(res < EIGEN_TOL * scale && orth < EIGEN_TOL, "d = {d}: ‖AV − VΛ‖ {res}, ‖VVᵀ − I‖ {orth}");
        assert!(e.values.windows(2).all(|w| w[0] <= w[1]), "values not ascending");
        let only = eigvalsh(&a, d).unwrap();
        let err = only.iter().zip(&e.values).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(err < EIGEN_TOL * scale, "eigvalsh differs by {err}");
        if against_jacobi {
            let (mut jv, _) = jacobi_eigen(&a, d).unwrap();
            jv.sort_by(f64::total_cmp);
            let err = jv.iter().zip(&e.values).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(err < EIGEN_TOL * scale, "d = {d}: eigenvalues differ from Jacobi by {err}");
        }
    }
}

#[test]
fn the_eigen_solver_handles_repeated_zero_and_tiny_cases() {
    // A rank-3 projector-like matrix in d = 40: eigenvalue 0 repeated 37 times.
    let d = 40;
    let q = orthogonal(d, 9);
    let l: Vec<f64> = (0..d).map(|i| if i < 3 { 2.0 } else { 0.0 }).collect();
    let a = with_eigen(&q, &l);
    let e = eigh(&a, d).unwrap();
    let (res, orth) = residuals(&a, d, &e.values, &e.vectors);
    assert!(res < EIGEN_TOL * 2.0 && orth < EIGEN_TOL, "‖AV − VΛ‖ {res}, ‖VVᵀ − I‖ {orth}");
    assert!(e.values[..37].iter().all(|v| v.abs() < 1e-13) && e.values[37..].iter().all(|v| (v - 2.0).abs() < 1e-13));
    // Already diagonal (every reflector is the identity), and the sizes without reflectors.
    let diag: Vec<f64> = (0..d * d).map(|k| if k % (d + 1) == 0 { (k / (d + 1)) as f64 - 5.0 } else { 0.0 }).collect();
    let e = eigh(&diag, d).unwrap();
    assert_eq!(e.values, (0..d).map(|i| i as f64 - 5.0).collect::<Vec<_>>());
    assert_eq!(eigh(&[3.0], 1).unwrap().values, vec![3.0]);
    let two = eigh(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
    assert!((two.values[0] - 1.0).abs() < 1e-15 && (two.values[1] - 3.0).abs() < 1e-15, "{:?}", two.values);
    assert!(eigh(&[], 0).unwrap().values.is_empty());
    assert!(matches!(eigh(&[1.0, 2.0], 2), Err(EvalError::Shape(_))));
    assert!(matches!(eigh(&[1.0, f64::INFINITY, 0.0, 1.0], 2), Err(EvalError::NonFinite { index: 1, .. })));
    // The column form of fd::symmetric_eigen reconstructs too.
    let (vals, v) = symmetric_eigen(&a, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let r: f64 = (0..d).map(|k| v[i * d + k] * vals[k] * v[j * d + k]).sum();
            assert!((r - a[i * d + j]).abs() < 1e-12, "({i}, {j}): {r} vs {}", a[i * d + j]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KID

/// The unbiased MMD² with k(x, y) = (x·y/d + 1)³, literally.
fn mmd2_brute(x: &[f64], y: &[f64], d: usize) -> f64 {
    let k = |a: &[f64], b: &[f64]| (a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / d as f64 + 1.0).powi(3);
    let (xs, ys): (Vec<&[f64]>, Vec<&[f64]>) = (x.chunks(d).collect(), y.chunks(d).collect());
    let (n, m) = (xs.len() as f64, ys.len() as f64);
    let within = |s: &[&[f64]]| {
        let mut t = 0.0;
        for (i, a) in s.iter().enumerate() {
            for (j, b) in s.iter().enumerate() {
                if i != j {
                    t += k(a, b);
                }
            }
        }
        t
    };
    let (kxx, kyy) = (within(&xs), within(&ys));
    let kxy: f64 = xs.iter().flat_map(|a| ys.iter().map(move |b| k(a, b))).sum();
    kxx / (n * (n - 1.0)) + kyy / (m * (m - 1.0)) - 2.0 * kxy / (n * m)
}

#[test]
fn kid_is_the_unbiased_polynomial_mmd_over_subsets() {
    let d = 8;
    let (x, y) = (normals(40 * d, 11), normals(30 * d, 12));
    let want = mmd2_brute(&x, &y, d);
    let got = mmd2_polynomial(&x, &y, d).unwrap();
    assert!((got - want).abs() < 1e-12, "MMD² {got}, brute force {want}");
    // Subsets of everything (size ≥ n = m): every subset is the whole set, the spread is 0.
    let k = kid(&x[..30 * d], &y, d, KidConfig { subsets: 5, subset_size: 1000, seed: 1 }).unwrap();
    let whole = mmd2_polynomial(&x[..30 * d], &y, d).unwrap();
    assert_eq!(k.subset_size, 30);
    assert!((k.mean - whole).abs() < 1e-12 && k.std < 1e-12, "{k:?} vs {whole}");
    // Subset draws: distinct, in range, reproducible, different per subset and per set.
    let a = subset_indices(100, 20, 7, 3, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert!(sorted.len() == 20 && sorted.iter().all(|&i| i < 100));
    assert_eq!(a, subset_indices(100, 20, 7, 3, 0));
    assert_ne!(a, subset_indices(100, 20, 7, 4, 0));
    assert_ne!(a, subset_indices(100, 20, 7, 3, 1));
    assert!(matches!(kid(&x, &y, d, KidConfig { subsets: 0, ..KidConfig::default() }), Err(EvalError::Invalid(_))));
    assert_eq!(KidConfig::default(), KidConfig { subsets: 100, subset_size: 1000, seed: 2020 });
}

#[test]
fn kid_is_near_zero_for_one_set_and_positive_for_a_shifted_one() {
    // n = 4000 rows: too many for the cached kernel matrices, so each subset computes its own.
    let (n, d) = (4000, 16);
    let x = normals(n * d, 13);
    let cfg = KidConfig { subsets: 40, subset_size: 100, seed: 3 };
    // x's and y's subsets are drawn independently and share ~s²/n = 2.5 points, each adding a
    // k(x, x) ≈ 10 where an independent pair has ≈ 1: a bias of about −2·2.5·9/s² = −0.0045, one
    // standard error here. 5 standard errors bound it with margin.
    let same = kid(&x, &x, d, cfg).unwrap();
    let se = same.std / (cfg.subsets as f64).sqrt();
    assert!(same.mean.abs() < 5.0 * se, "KID(x, x) = {} ± {se}", same.mean);
    // A shift of 0.5 in every coordinate: far above both spreads.
    let y: Vec<f64> = x.iter().map(|v| v + 0.5).collect();
    let shifted = kid(&x, &y, d, cfg).unwrap();
    let se_shifted = shifted.std / (cfg.subsets as f64).sqrt();
    assert!(
        shifted.mean > 10.0 * (se + se_shifted) && shifted.mean > 20.0 * same.mean.abs(),
        "{shifted:?} vs {same:?}"
    );
    // Subset by subset, the uncached path is the plain estimator on the gathered rows.
    let small = KidConfig { subsets: 3, subset_size: 30, seed: 4 };
    let k = kid(&x, &y, d, small).unwrap();
    let per: Vec<f64> = (0..small.subsets)
        .map(|j| {
            let gather = |z: &[f64], which| {
                subset_indices(n, 30, small.seed, j, which)
                    .iter()
                    .flat_map(|&i| z[i * d..(i + 1) * d].to_vec())
                    .collect::<Vec<_>>()
            };
            mmd2_brute(&gather(&x, 0), &gather(&y, 1), d)
        })
        .collect();
    let mean = per.iter().sum::<f64>() / 3.0;
    assert!((k.mean - mean).abs() < 1e-12 * mean.abs().max(1.0), "KID {} vs per-subset brute force {mean}", k.mean);
}

// ---------------------------------------------------------------------------------------------
// .npz

fn small_moments() -> Moments {
    let d = 5;
    let x = normals(20 * d, 14);
    let mut s = FeatureStats::new(d).unwrap();
    s.push_f64(&x).unwrap();
    s.moments().unwrap()
}

#[test]
fn stats_survive_an_npz_round_trip_bit_for_bit() {
    let m = small_moments();
    let bytes = stats_npz_bytes(&m).unwrap();
    let back = read_stats(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(back, m);
    assert!(frechet_moments(&back, &m).unwrap().abs() < 1e-12);
    // Arbitrary arrays, in the order asked for.
    let bytes = npz_bytes(&[("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), ("b", &[0], &[])]).unwrap();
    let got = read_npz(std::io::Cursor::new(&bytes), &["b", "a"]).unwrap();
    assert_eq!((got[0].shape.clone(), got[1].shape.clone()), (vec![0], vec![2, 3]));
    assert_eq!(got[1].data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn stats_survive_a_file_round_trip_and_a_missing_file_is_named() {
    let m = small_moments();
    let path = std::env::temp_dir().join(format!("cdl-eval-fd-{}.npz", std::process::id()));
    cdl::eval::npz::save_stats(&path, &m).unwrap();
    let loaded = cdl::eval::npz::load_stats(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded, m);
    let e = cdl::eval::npz::load_stats(&path).unwrap_err();
    assert!(matches!(e, EvalError::Io { .. }) && e.to_string().contains("cdl-eval-fd-"), "{e}");
}

/// A zip holding the given raw entries, stored.
fn raw_zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        z.start_file(*name, opt).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// An .npy with the given header dict and data bytes (version 1.0).
fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn read_err(bytes: &[u8]) -> String {
    let e = read_stats(std::io::Cursor::new(bytes)).unwrap_err();
    assert!(matches!(e, EvalError::Format(_)), "{e:?}");
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    s
}

#[test]
fn corrupt_npz_files_are_refused_with_one_line_errors() {
    let good = stats_npz_bytes(&small_moments()).unwrap();
    let mu =
        |d: usize| raw_npy(&format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({d},), }}"), &vec![0; 8 * d]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a zip", b"hello, not an archive".to_vec(), "not a .npz"),
        ("truncated", good[..good.len() / 2].to_vec(), "not a .npz"),
        ("no sigma", raw_zip(&[("mu.npy", mu(3))]), "no array 'sigma'"),
        ("bad magic", raw_zip(&[("mu.npy", b"NUMPY?".repeat(8))]), "magic"),
        (
            "absurd shape",
            raw_zip(&[(
                "mu.npy",
                raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", &[]),
            )]),
            "exceeds",
        ),
        (
            "shape larger than the data",
            raw_zip(&[("mu.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", &[0; 16]))]),
            "needs 32 data bytes, the entry holds 16",
        ),
        (
            "integer dtype",
            raw_zip(&[("mu.npy", raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", &[0; 16]))]),
            "dtype '<i8'",
        ),
        (
            "garbled header",
            raw_zip(&[("mu.npy", raw_npy("{'descr': '<f8' 'shape': (2,)}", &[0; 16]))]),
            "malformed .npy header",
        ),
        (
            "sigma of the wrong shape",
            raw_zip(&[
                ("mu.npy", mu(3)),
                ("sigma.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", &[0; 48])),
            ]),
            "expected (3, 3)",
        ),
    ];
    for (what, bytes, needle) in cases {
        let e = read_err(&bytes);
        assert!(e.contains(needle), "{what}: {e}");
    }
    // A flipped data byte in a stored entry: the zip's CRC catches it.
    let mut flipped = good.clone();
    // sigma.npy's data: its magic, 128 header bytes, then 8-byte values.
    let at = good.windows(6).rposition(|w| w == b"\x93NUMPY").unwrap() + 128 + 20;
    flipped[at] ^= 0x40;
    let e = read_err(&flipped);
    assert!(e.contains("mu.npy") || e.contains("sigma.npy"), "{e}");
}

#[test]
fn float32_and_fortran_order_arrays_are_read_as_numpy_means_them() {
    let f32s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    // sigma = [[1, 2], [3, 4]] stored column-major: 1, 3, 2, 4.
    let fortran: Vec<u8> = [1.0f64, 3.0, 2.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = raw_zip(&[
        ("mu.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &f32s)),
        ("sigma.npy", raw_npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", &fortran)),
    ]);
    let m = read_stats(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(m.mu, vec![1.5, -2.0]);
    assert_eq!(m.sigma, vec![1.0, 2.0, 3.0, 4.0]);
}

// ---------------------------------------------------------------------------------------------
// Against pytorch-fid and torch-fidelity (numpy/scipy), through tools/fid_reference.py

#[cfg(not(target_arch = "wasm32"))]
use crate::common::mirror;

/// FD against pytorch-fid with full-rank covariances (n > d): both sides compute in f64 from the
/// same features, scipy's sqrtm through a Schur form of the non-symmetric Σ₁Σ₂, we through two
/// symmetric eigenproblems; both are accurate to ~d·ε·‖Σ‖ relative (measured: 6.5e-13). A wrong
/// term (a trace, the factor 2, a biased covariance) moves FD by 1e-2 or more.
#[cfg(not(target_arch = "wasm32"))]
const FD_RTOL: f64 = 1e-10;
/// With n ≤ d the product is singular: its k exact zero eigenvalues come back from sqrtm as
/// ±c·ε·‖Σ₁‖‖Σ₂‖ and add roots of up to sqrt(c·ε·‖Σ₁‖‖Σ₂‖) each to pytorch-fid's trace, which we
/// zero instead (40-digit evaluations at d = 48, n = 20 to 40: scipy 1-2e-6 off, ours 2-6e-8). The tolerance
/// is that bound for both traces' share of FD with c = 16: 2·k·sqrt(16·ε·‖Σ₁‖‖Σ₂‖).
#[cfg(not(target_arch = "wasm32"))]
fn singular_fd_atol(k: usize, s1: &[f64], s2: &[f64]) -> f64 {
    let norm = |s: &[f64]| s.iter().map(|v| v * v).sum::<f64>().sqrt();
    2.0 * k as f64 * (16.0 * f64::EPSILON * norm(s1) * norm(s2)).sqrt()
}
/// KID on the same subsets: sums of 10⁴ kernel values of O(1) in a different order, ~1e-15
/// relative; 1e-10 absolute on an MMD² of O(1e-2).
#[cfg(not(target_arch = "wasm32"))]
const KID_ATOL: f64 = 1e-10;

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn fd_and_kid_match_pytorch_fid_and_torch_fidelity() {
    let Some(python) = mirror::python_or_skip() else { return };
    let dir = mirror::TestDir::new("eval-fd");
    let d = 48;
    // Full rank (n > d) with correlated, shifted features; then rank-deficient (n < d).
    for (n, m) in [(400, 300), (30, 40)] {
        let mix = normals(d * d, 21);
        let correlate = |z: Vec<f64>, shift: f64| -> Vec<f64> {
            z.chunks(d)
                .flat_map(|r| {
                    (0..d).map(|j| shift + (0..d).map(|k| r[k] * mix[k * d + j]).sum::<f64>() / 4.0).collect::<Vec<_>>()
                })
                .collect()
        };
        let x = correlate(normals(n * d, 22), 0.0);
        let y = correlate(normals(m * d, 23), 0.3);
        let cfg = KidConfig { subsets: 10, subset_size: 25, seed: 5 };
        let k = kid(&x, &y, d, cfg).unwrap();
        let s = k.subset_size;
        let kx: Vec<f64> =
            (0..cfg.subsets).flat_map(|j| subset_indices(n, s, cfg.seed, j, 0)).map(|i| i as f64).collect();
        let ky: Vec<f64> =
            (0..cfg.subsets).flat_map(|j| subset_indices(m, s, cfg.seed, j, 1)).map(|i| i as f64).collect();
        let (input, output, stats) = (dir.path("in.npz"), dir.path("out.npz"), dir.path("stats.npz"));
        let shape_k = [cfg.subsets, s];
        let bytes =
            npz_bytes(&[("x", &[n, d], &x), ("y", &[m, d], &y), ("kid_x", &shape_k, &kx), ("kid_y", &shape_k, &ky)]);
        std::fs::write(&input, bytes.unwrap()).unwrap();
        let mut ours = FeatureStats::new(d).unwrap();
        ours.push_f64(&x).unwrap();
        let ours = ours.moments().unwrap();
        cdl::eval::npz::save_stats(&stats, &ours).unwrap();

        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fid_reference.py");
        let o = std::process::Command::new(&python).arg(&script).arg(&input).arg(&output).arg(&stats).output().unwrap();
        print!("{}", String::from_utf8_lossy(&o.stdout));
        assert!(o.status.success(), "tools/fid_reference.py failed: {}", String::from_utf8_lossy(&o.stderr));
        let names = ["mu1", "sigma1", "fd", "fd_offset", "kid_mean", "kid_std", "fd_stats"];
        let want = read_npz(std::io::BufReader::new(std::fs::File::open(&output).unwrap()), &names).unwrap();
        let scalar = |i: usize| want[i].data[0];

        let moment_err = max_abs(&ours.sigma.iter().zip(&want[1].data).map(|(a, b)| a - b).collect::<Vec<_>>())
            .max(max_abs(&ours.mu.iter().zip(&want[0].data).map(|(a, b)| a - b).collect::<Vec<_>>()));
        let fd = frechet_distance(&x, &y, d).unwrap();
        let fd_offset = {
            let mut yy = FeatureStats::new(d).unwrap();
            yy.push_f64(&y).unwrap();
            let yy = yy.moments().unwrap();
            frechet_offset(&ours.mu, &ours.sigma, &yy.mu, &yy.sigma, PYTORCH_FID_EPS).unwrap()
        };
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        println!(
            "n = {n}, m = {m}, d = {d}: moments max |Δ| {moment_err:.1e}; FD {fd:.12} vs {:.12} (rel {:.1e}); \
             offset FD rel {:.1e}; numpy-loaded stats FD rel {:.1e}; KID {:.6e} vs {:.6e} (|Δ| {:.1e}), std |Δ| {:.1e}",
            scalar(2),
            rel(fd, scalar(2)),
            rel(fd_offset, scalar(3)),
            rel(fd, scalar(6)),
            k.mean,
            scalar(4),
            (k.mean - scalar(4)).abs(),
            (k.std - scalar(5)).abs(),
        );
        assert!(moment_err < 1e-13, "moments differ from np.mean / np.cov by {moment_err}");
        let atol =
            if n > d && m > d { FD_RTOL * fd } else { singular_fd_atol(d + 1 - n.min(m), &ours.sigma, &want[1].data) };
        println!("FD tolerance {atol:.1e}, |Δ| {:.1e}", (fd - scalar(2)).abs());
        assert!((fd - scalar(2)).abs() < atol, "FD {fd} vs pytorch-fid {}", scalar(2));
        assert!((fd - scalar(6)).abs() < atol, "numpy read our stats.npz: FD {}", scalar(6));
        // With the offset both products are regular (eigenvalues ≥ ε² = 1e-12).
        assert!(rel(fd_offset, scalar(3)) < 1e3 * FD_RTOL, "offset FD {fd_offset} vs pytorch-fid {}", scalar(3));
        assert!((k.mean - scalar(4)).abs() < KID_ATOL && (k.std - scalar(5)).abs() < KID_ATOL, "KID {k:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// d = 2048, FID's dimension: a timing, not a test (seconds in release, minutes in debug)

#[test]
#[ignore = "timing at d = 2048; run in release with --ignored --nocapture"]
fn fid_dimension_timing() {
    let d = 2048;
    let n = 2 * d;
    let clock = std::time::Instant::now;
    let t = clock();
    let mut s1 = FeatureStats::new(d).unwrap();
    let mut s2 = FeatureStats::new(d).unwrap();
    let x: Vec<f32> =
        normals(n * d, 31).iter().enumerate().map(|(i, v)| (v * (1.0 + (i % d) as f64 / d as f64)) as f32).collect();
    s1.push(&x).unwrap();
    s2.push(&x.iter().map(|v| v * 1.1 + 0.01).collect::<Vec<f32>>()).unwrap();
    let (m1, m2) = (s1.moments().unwrap(), s2.moments().unwrap());
    println!("moments of 2 × {n} rows: {:.2} s", t.elapsed().as_secs_f64());
    let t = clock();
    let e = eigh(&m1.sigma, d).unwrap();
    println!("eigh (values and vectors), d = {d}: {:.2} s", t.elapsed().as_secs_f64());
    let t = clock();
    let _ = eigvalsh(&m1.sigma, d).unwrap();
    println!("eigvalsh, d = {d}: {:.2} s", t.elapsed().as_secs_f64());
    let t = clock();
    let fd = frechet_moments(&m1, &m2).unwrap();
    println!("frechet, d = {d}: {:.2} s (FD = {fd:.6})", t.elapsed().as_secs_f64());
    // Residual on 16 eigenpairs (the full check is O(d³) in plain loops).
    let scale = max_abs(&e.values);
    for k in (0..d).step_by(d / 16) {
        let v = &e.vectors[k * d..(k + 1) * d];
        for i in 0..d {
            let av: f64 = (0..d).map(|j| m1.sigma[i * d + j] * v[j]).sum();
            assert!((av - e.values[k] * v[i]).abs() < EIGEN_TOL * scale, "pair {k}, row {i}");
        }
    }
}
