//! Plain-Rust CPU oracles for every op: loop-based, obviously correct, never fast; what GPU
//! kernels are checked against and what CPU-only CI exercises. Each function mirrors a shader
//! entry point (outputs, inputs, dimensions; a shape comment on every slice), generic over `Float`
//! (f32 oracle, f64 gradient checks). Activation gradients (`dx`) are overwritten, parameter
//! gradients (`dweight`, `dbias`) accumulated (`+=`). Dimension letters: B batch (rows), M/N/K
//! matmul rows/cols/inner, C channels, H/W height/width, G groups, T tokens, E embedding width.

// Only the op checks and the tests import this module. It takes the contract types from where they
// live (the shapes from `ops`, the row table and loss-head sizes from `diffusion::rows`, the
// generator from `philox`) and re-exports them, so a test can name an oracle and its shape from
// one place.
pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod gradcheck;
pub mod groupnorm;
pub mod inception;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod resample;
pub mod rows;
pub mod sampler;
pub mod tol;

pub use num_traits::Float;

/// Converts a slice to f64 (for gradient checks driven from f32 data).
pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}
