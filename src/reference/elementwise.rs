//! Elementwise ops: add, mul, scale, axpy, SiLU. Forward and backward of each.
//!
//! Backward of the linear ops is the op itself with other operands (the GPU reuses the forward
//! kernels for it); the functions are spelled out here so every gradient is checked by finite
//! differences. All outputs are overwritten.

use super::Float;

/// out = a + b. out, a, b: (N,)
pub fn add<T: Float>(out: &mut [T], a: &[T], b: &[T]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// da = dout, db = dout. da, db, dout: (N,)
pub fn add_bwd<T: Float>(da: &mut [T], db: &mut [T], dout: &[T]) {
    da.copy_from_slice(dout);
    db.copy_from_slice(dout);
}

/// out = a * b. out, a, b: (N,)
pub fn mul<T: Float>(out: &mut [T], a: &[T], b: &[T]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// da = dout * b, db = dout * a. da, db, dout, a, b: (N,)
pub fn mul_bwd<T: Float>(da: &mut [T], db: &mut [T], dout: &[T], a: &[T], b: &[T]) {
    mul(da, dout, b);
    mul(db, dout, a);
}

/// out = alpha * x. out, x: (N,)
pub fn scale<T: Float>(out: &mut [T], x: &[T], alpha: T) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = alpha * v;
    }
}

/// y = alpha * x + y, in place. y, x: (N,)
pub fn axpy<T: Float>(y: &mut [T], x: &[T], alpha: T) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = alpha * v + *o;
    }
}

/// Gradients of `y_out = alpha * x + y_in`: dx = alpha * dout, dy_in = dout. dx, dout: (N,)
pub fn axpy_bwd_x<T: Float>(dx: &mut [T], dout: &[T], alpha: T) {
    scale(dx, dout, alpha);
}

/// Logistic sigmoid, written so neither branch overflows: for x < 0 use e^x / (1 + e^x).
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// out = x * sigmoid(x). out, x: (N,)
pub fn silu_fwd<T: Float>(out: &mut [T], x: &[T]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * sigmoid(v);
    }
}

/// dx = dout * s * (1 + x * (1 - s)), s = sigmoid(x). Recomputes s from x rather than saving it.
/// dx, dout, x: (N,)
pub fn silu_bwd<T: Float>(dx: &mut [T], dout: &[T], x: &[T]) {
    for ((d, &g), &v) in dx.iter_mut().zip(dout).zip(x) {
        let s = sigmoid(v);
        *d = g * s * (T::one() + v * (T::one() - s));
    }
}
