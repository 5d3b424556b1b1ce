//! Every backward of the foundation references (elementwise, matmul, reductions) against f64
//! central differences, through the fake loss sum(forward(x) * dout) with a random dout.

use cdl::philox::normal_vec;
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::{elementwise as ew, matmul as mm, reduce as rd, to_f64};

/// A binary op `out = f(x, y)` as the references spell it.
type Binary<'a> = &'a dyn Fn(&mut [f64], &[f64], &[f64]);

fn randn(n: usize, tag: u32) -> Vec<f64> {
    to_f64(&normal_vec(n, 42, tag))
}

#[test]
fn elementwise_backward_matches_finite_differences() {
    let n = 37;
    let (a, b, dout) = (randn(n, 0), randn(n, 1), randn(n, 2));
    let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
    let fwd = |f: Binary, x: &[f64], y: &[f64]| {
        let mut out = vec![0.0; n];
        f(&mut out, x, y);
        dot(&out, &dout)
    };

    ew::add_bwd(&mut da, &mut db, &dout);
    check("add da", |x| fwd(&|o, x, y| ew::add(o, x, y), x, &b), &a, &da, 0..n).unwrap();
    check("add db", |y| fwd(&|o, x, y| ew::add(o, x, y), &a, y), &b, &db, 0..n).unwrap();

    ew::mul_bwd(&mut da, &mut db, &dout, &a, &b);
    check("mul da", |x| fwd(&|o, x, y| ew::mul(o, x, y), x, &b), &a, &da, 0..n).unwrap();
    check("mul db", |y| fwd(&|o, x, y| ew::mul(o, x, y), &a, y), &b, &db, 0..n).unwrap();

    let alpha = -0.73;
    ew::axpy_bwd_x(&mut da, &dout, alpha);
    let axpy = |x: &[f64]| {
        let mut y = b.clone();
        ew::axpy(&mut y, x, alpha);
        dot(&y, &dout)
    };
    check("axpy dx", axpy, &a, &da, 0..n).unwrap();
    ew::scale(&mut da, &dout, alpha);
    check("scale dx", |x| fwd(&|o, x, _| ew::scale(o, x, alpha), x, &b), &a, &da, 0..n).unwrap();

    // SiLU over a wide range, including the large-|x| tails where sigmoid saturates.
    let x: Vec<f64> = (0..n).map(|i| (i as f64 - 18.0) * 1.7).collect();
    ew::silu_bwd(&mut da, &dout, &x);
    check("silu dx", |x| fwd(&|o, x, _| ew::silu_fwd(o, x), x, &b), &x, &da, 0..n).unwrap();
}

#[test]
fn silu_is_finite_and_exact_at_extremes() {
    let x = [-1e4f32, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4];
    let mut y = [0f32; 7];
    ew::silu_fwd(&mut y, &x);
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_eq!(y[6], 1e4);
    assert_eq!(y[3], 0.0);
    assert!(y[0].abs() < 1e-30);
    let mut d = [0f32; 7];
    ew::silu_bwd(&mut d, &[1.0; 7], &x);
    assert!(d.iter().all(|v| v.is_finite()), "{d:?}");
    assert_eq!(d[6], 1.0);
    assert_eq!(d[3], 0.5);
}

#[test]
fn matmul_backward_matches_finite_differences() {
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
        let s = mm::MatmulShape { m: 5, n: 7, k: 6, trans_a, trans_b };
        let (a, b, bias, dout) = (randn(30, 3), randn(42, 4), randn(7, 5), randn(35, 6));
        let loss_a = |x: &[f64]| {
            let mut out = vec![0.0; 35];
            mm::matmul(&mut out, x, &b, Some(&bias), s);
            dot(&out, &dout)
        };
        let loss_b = |y: &[f64]| {
            let mut out = vec![0.0; 35];
            mm::matmul(&mut out, &a, y, Some(&bias), s);
            dot(&out, &dout)
        };
        let loss_bias = |c: &[f64]| {
            let mut out = vec![0.0; 35];
            mm::matmul(&mut out, &a, &b, Some(c), s);
            dot(&out, &dout)
        };
        let (mut da, mut db) = (vec![0.0; 30], vec![0.0; 42]);
        mm::matmul_bwd_a(&mut da, &dout, &b, s);
        mm::matmul_bwd_b(&mut db, &dout, &a, s);
        // dbias accumulates: start from a non-zero gradient and subtract it again.
        let start = randn(7, 7);
        let mut dbias = start.clone();
        mm::matmul_bwd_bias(&mut dbias, &dout, 5, 7);
        let dbias: Vec<f64> = dbias.iter().zip(&start).map(|(g, s)| g - s).collect();
        let what = format!("matmul trans_a={trans_a} trans_b={trans_b}");
        check(&format!("{what} da"), loss_a, &a, &da, coords(30, 30)).unwrap();
        check(&format!("{what} db"), loss_b, &b, &db, coords(42, 42)).unwrap();
        check(&format!("{what} dbias"), loss_bias, &bias, &dbias, 0..7).unwrap();
    }
}

#[test]
fn reduce_backward_matches_finite_differences() {
    let (rows, n) = (4, 9);
    let (x, y, dout) = (randn(rows * n, 8), randn(rows * n, 9), randn(rows, 10));
    let mut dx = vec![0.0; rows * n];
    let row_loss = |f: &dyn Fn(&mut [f64], &[f64]), x: &[f64]| {
        let mut out = vec![0.0; rows];
        f(&mut out, x);
        dot(&out, &dout)
    };
    rd::row_sum_bwd(&mut dx, &dout, n);
    check("row_sum", |x| row_loss(&|o, x| rd::row_sum(o, x, n), x), &x, &dx, 0..rows * n).unwrap();
    rd::row_mean_bwd(&mut dx, &dout, n);
    check("row_mean", |x| row_loss(&|o, x| rd::row_mean(o, x, n), x), &x, &dx, 0..rows * n).unwrap();
    rd::row_sq_err_bwd(&mut dx, &dout, &x, &y, n);
    check("row_sq_err", |x| row_loss(&|o, x| rd::row_sq_err(o, x, &y, n), x), &x, &dx, 0..rows * n).unwrap();
    let g = 0.61;
    rd::sum_sq_bwd(&mut dx, &x, g);
    check("sum_sq", |x| g * rd::sum_sq(x), &x, &dx, 0..rows * n).unwrap();
}

/// The check itself can fail: a wrong gradient is reported.
#[test]
fn gradcheck_rejects_a_wrong_gradient() {
    let x = randn(5, 11);
    let wrong: Vec<f64> = x.iter().map(|v| 2.0 * v + 1e-3).collect();
    let err = check("x^2", |x| x.iter().map(|v| v * v).sum(), &x, &wrong, 0..5).unwrap_err();
    assert!(err.contains("x^2"), "{err}");
}
