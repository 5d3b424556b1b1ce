//! Layers with parameters, each with an explicit forward and backward (llm.c style, no autograd
//! graph), returned as prepared dispatches that the model creates once and encodes every step.
//! Gradient contract (shared with the shaders): activation gradients (`dx`) are overwritten; the
//! model zeroes the flat gradient buffer once per step, then each weight gradient is written by
//! the product that computes it (every parameter is used once per forward) and bias and norm
//! gradients are accumulated onto it.

pub mod attention;
pub mod conv2d;
pub mod groupnorm;
pub mod linear;
pub mod params;
pub mod resblock;

pub use attention::Attention;
pub use conv2d::Conv2d;
pub use groupnorm::{GroupNorm, GroupNormStats};
pub use linear::Linear;
pub use params::{ParamId, ParamLayout, Params};
pub use resblock::{GradMode, ResBlock, ResBlockActs};
