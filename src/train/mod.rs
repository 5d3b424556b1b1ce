//! Training: everything between the model and a run (ARCHITECTURE.md layer `train/`): the step
//! and its optimizer state (`trainer`), losses by name (`recipe`), a run from one config (`run`),
//! checkpoints (`checkpoint`, `weights`), data-parallel training (`dist`), and the data (`data`, `cifar`, `images`, `shapes`).
//! Nothing here names a WGSL entry point (STYLE.md practice 1): models and ops via Rust APIs only.

pub mod checkpoint;
pub mod cifar;
pub mod data;
pub mod dist;
pub mod images;
pub mod recipe;
pub mod run;
pub mod shapes;
pub mod trainer;
pub mod weights;
