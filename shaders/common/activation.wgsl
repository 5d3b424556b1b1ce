// SiLU and its gradient, shared by the shaders that apply it (elementwise, embedding, matmul's
// epilogues, groupnorm's fused activation) and the logistic loss's sigmoid; checked through
// each including family's reference.

// Sigmoid without overflow: exp of a non-positive argument only.
fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

fn silu(v: f32) -> f32 {
    return v * sigmoid(v);
}

// The gradient g of silu(v) carried to v: g s (1 + v (1 - s)), s = sigmoid(v), recomputed from
// the saved input instead of saved.
fn silu_grad(g: f32, v: f32) -> f32 {
    let s = sigmoid(v);
    return g * s * (1.0 + v * (1.0 - s));
}
