//! Row reductions over a (B, N) matrix, and a global sum of squares.
//!
//! Sums accumulate in the element type; the GPU sums in f32 with a tree, so GPU-vs-CPU checks
//! use the DEFAULT tolerance. All outputs are overwritten.

use super::Float;

/// out[b] = sum_i x[b, i]. out: (B,), x: (B, N)
pub fn row_sum<T: Float>(out: &mut [T], x: &[T], n: usize) {
    for (o, row) in out.iter_mut().zip(x.chunks(n)) {
        *o = row.iter().fold(T::zero(), |acc, &v| acc + v);
    }
}

/// dx[b, i] = dout[b]. dx: (B, N), dout: (B,)
pub fn row_sum_bwd<T: Float>(dx: &mut [T], dout: &[T], n: usize) {
    for (row, &g) in dx.chunks_mut(n).zip(dout) {
        row.fill(g);
    }
}

/// out[b] = mean_i x[b, i]. out: (B,), x: (B, N)
pub fn row_mean<T: Float>(out: &mut [T], x: &[T], n: usize) {
    row_sum(out, x, n);
    let inv = T::one() / T::from(n).unwrap_or_else(T::one);
    for o in out.iter_mut() {
        *o = *o * inv;
    }
}

/// dx[b, i] = dout[b] / N. dx: (B, N), dout: (B,)
pub fn row_mean_bwd<T: Float>(dx: &mut [T], dout: &[T], n: usize) {
    let inv = T::one() / T::from(n).unwrap_or_else(T::one);
    for (row, &g) in dx.chunks_mut(n).zip(dout) {
        row.fill(g * inv);
    }
}

/// out[b] = sum_i (x[b, i] - y[b, i])^2: the per-row squared error of the loss head.
/// out: (B,), x, y: (B, N)
pub fn row_sq_err<T: Float>(out: &mut [T], x: &[T], y: &[T], n: usize) {
    for ((o, xr), yr) in out.iter_mut().zip(x.chunks(n)).zip(y.chunks(n)) {
        *o = xr.iter().zip(yr).fold(T::zero(), |acc, (&a, &b)| acc + (a - b) * (a - b));
    }
}

/// dx[b, i] = 2 dout[b] (x - y), and dy = -dx (not materialised). dx, x, y: (B, N), dout: (B,)
pub fn row_sq_err_bwd<T: Float>(dx: &mut [T], dout: &[T], x: &[T], y: &[T], n: usize) {
    let two = T::one() + T::one();
    for (((d, xr), yr), &g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(y.chunks(n)).zip(dout) {
        for ((o, &a), &b) in d.iter_mut().zip(xr).zip(yr) {
            *o = two * g * (a - b);
        }
    }
}

/// sum_i x[i]^2 over a whole buffer (for global gradient-norm clipping). x: (N,)
pub fn sum_sq<T: Float>(x: &[T]) -> T {
    x.iter().fold(T::zero(), |acc, &v| acc + v * v)
}

/// dx = 2 x dout. dx, x: (N,)
pub fn sum_sq_bwd<T: Float>(dx: &mut [T], x: &[T], dout: T) {
    let two = T::one() + T::one();
    for (d, &v) in dx.iter_mut().zip(x) {
        *d = two * v * dout;
    }
}
