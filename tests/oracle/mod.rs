//! The f64 oracles of the model tests, shared by the native tests (tests/native/main.rs) and the
//! browser test (tests/web.rs): the MLP, the ResBlock, and the UNet composed from ResBlocks.

pub mod mlp;
pub mod resblock;
pub mod unet;
