//! The Fréchet distance of `eval::fd` against closed forms: commuting covariances (where
//! tr (Σ₁Σ₂)^{1/2} = Σ sqrt(a_i b_i) in their common eigenbasis), a non-commuting 2×2 pair
//! (tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for a 2×2 positive semi-definite M), a set against
//! itself, and the eigen-solver and the pooling on their own.

#![allow(clippy::unwrap_used)]

use cdl::diffusion::rng::HostRng;
use cdl::eval::fd::{frechet, frechet_distance, moments, pool_features, symmetric_eigen};

/// f64 round-off over a few hundred accumulations of O(1) values.
const TOL: f64 = 1e-9;

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

#[test]
fn commuting_covariances_give_the_closed_form() {
    let d = 24;
    let q = orthogonal(d, 1);
    let a: Vec<f64> = (0..d).map(|i| 0.1 + i as f64 * 0.3).collect();
    let b: Vec<f64> = (0..d).map(|i| 2.0 + (i as f64 * 0.7).sin()).collect();
    let (mu1, mu2) = (normals(d, 2), normals(d, 3));
    let want: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y).powi(2)).sum::<f64>()
        + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let got = frechet(&mu1, &with_eigen(&q, &a), &mu2, &with_eigen(&q, &b)).unwrap();
    assert!((got - want).abs() < TOL * want.max(1.0), "FD {got}, closed form {want}");
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
    // Rank-deficient covariances (n < d) still give a finite, non-negative distance.
    let few = frechet_distance(&x[..5 * d], &x[5 * d..10 * d], d).unwrap();
    assert!(few.is_finite() && few > -1e-9, "{few}");
}

#[test]
fn moments_are_the_unbiased_mean_and_covariance() {
    let x = [1.0, 2.0, 3.0, 6.0, 5.0, 10.0];
    let (m, s) = moments(&x, 2).unwrap();
    assert_eq!(m, vec![3.0, 6.0]);
    // Deviations (−2, −4), (0, 0), (2, 4): Σ = [[8, 16], [16, 32]] / 2.
    assert_eq!(s, vec![4.0, 8.0, 8.0, 16.0]);
}

#[test]
fn the_eigen_solver_reconstructs_its_matrix() {
    let d = 30;
    let g = normals(d * d, 5);
    let a: Vec<f64> = (0..d * d).map(|k| g[k] + g[(k % d) * d + k / d]).collect();
    let (vals, v) = symmetric_eigen(&a, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let r: f64 = (0..d).map(|k| v[i * d + k] * vals[k] * v[j * d + k]).sum();
            assert!((r - a[i * d + j]).abs() < 1e-10, "({i}, {j}): {r} vs {}", a[i * d + j]);
        }
    }
}

#[test]
fn pooling_averages_each_channel_over_blocks() {
    // One 2-channel 4×4 image: channel 0 holds its pixel index, channel 1 its negative.
    let img: Vec<f64> = (0..32).map(|i| if i < 16 { i as f64 } else { -((i - 16) as f64) }).collect();
    let f = pool_features(&img, 2, 4, 2).unwrap();
    assert_eq!(f, vec![2.5, 4.5, 10.5, 12.5, -2.5, -4.5, -10.5, -12.5]);
    assert!(pool_features(&img, 2, 4, 3).is_err());
}
