//! Models: the 2-D toy denoiser `Mlp` (the compact UNet follows). A model owns its parameters,
//! its activation buffers for one batch size and the prepared dispatches of its forward and
//! backward, all created once; a step only encodes them.

pub mod mlp;

pub use mlp::{Mlp, MlpConfig};
