//! Matrix multiply with optional transposes and bias: out = op(a) · op(b) + bias.
//!
//! `op(a)` is (M, K): `a` is stored (M, K), or (K, M) when `trans_a`. `op(b)` is (K, N): `b` is
//! stored (K, N), or (N, K) when `trans_b`. The bias (N,) is broadcast over rows. Backward:
//! da and db are overwritten (they are activation gradients or are summed by the caller);
//! dbias is accumulated (a parameter gradient).

use super::Float;
/// The oracle takes the op's own shape type.
pub use crate::ops::matmul::MatmulShape;

/// out = op(a) · op(b) (+ bias). out: (M, N), a: (M, K) or (K, M), b: (K, N) or (N, K), bias: (N,)
pub fn matmul<T: Float>(out: &mut [T], a: &[T], b: &[T], bias: Option<&[T]>, s: MatmulShape) {
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = bias.map_or(T::zero(), |bias| bias[j]);
            for p in 0..s.k {
                acc = acc + a[s.ia(i, p)] * b[s.ib(p, j)];
            }
            out[i * s.n + j] = acc;
        }
    }
}

/// da = dout · op(b)^T, stored like `a`. da: like a, dout: (M, N), b: like b
pub fn matmul_bwd_a<T: Float>(da: &mut [T], dout: &[T], b: &[T], s: MatmulShape) {
    for i in 0..s.m {
        for p in 0..s.k {
            let mut acc = T::zero();
            for j in 0..s.n {
                acc = acc + dout[i * s.n + j] * b[s.ib(p, j)];
            }
            da[s.ia(i, p)] = acc;
        }
    }
}

/// db = op(a)^T · dout, stored like `b`. db: like b, dout: (M, N), a: like a
pub fn matmul_bwd_b<T: Float>(db: &mut [T], dout: &[T], a: &[T], s: MatmulShape) {
    for p in 0..s.k {
        for j in 0..s.n {
            let mut acc = T::zero();
            for i in 0..s.m {
                acc = acc + a[s.ia(i, p)] * dout[i * s.n + j];
            }
            db[s.ib(p, j)] = acc;
        }
    }
}

/// dbias += column sums of dout. dbias: (N,), dout: (M, N)
pub fn matmul_bwd_bias<T: Float>(dbias: &mut [T], dout: &[T], m: usize, n: usize) {
    for (j, d) in dbias.iter_mut().enumerate().take(n) {
        let mut acc = T::zero();
        for i in 0..m {
            acc = acc + dout[i * n + j];
        }
        *d = *d + acc;
    }
}
