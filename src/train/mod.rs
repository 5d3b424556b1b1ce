//! Training: everything between the model and a run (ARCHITECTURE.md layer `train/`).
//!
//! What it is: `checkpoint` (named f32 tensors plus run metadata in safetensors, with a pure
//! encode/decode core and native atomic file I/O). This layer will also hold the training step,
//! the optimizer state (Adam/AdamW + EMA), the data sources (toy 2-D sets, CSV points, CIFAR-10,
//! image folders) and the run configs.
//!
//! What it is not: nothing here names a WGSL entry point (STYLE.md practice 1); the trainer drives
//! models and ops through their Rust APIs only.

pub mod checkpoint;
pub mod cifar;
pub mod data;
pub mod images;
pub mod recipe;
pub mod trainer;
pub mod weights;
