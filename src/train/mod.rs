//! Training: everything between the model and a run (ARCHITECTURE.md layer `train/`).
//!
//! What it is: the training step and its optimizer state (`trainer`: Adam/AdamW, EMA, NaN
//! rollback), the losses by name (`recipe`), a run assembled from one config with its typed
//! checkpoint metadata (`run`), checkpoints in safetensors (`checkpoint`, `weights`), and the data: toy 2-D sets and CSV points (`data`), CIFAR-10 (`cifar`), image
//! folders (`images`) and the procedural image set (`shapes`).
//!
//! What it is not: nothing here names a WGSL entry point (STYLE.md practice 1); the trainer drives
//! models and ops through their Rust APIs only.

pub mod checkpoint;
pub mod cifar;
pub mod data;
pub mod images;
pub mod recipe;
pub mod run;
pub mod shapes;
pub mod trainer;
pub mod weights;
