//! Model weights through checkpoints: a saved MLP loads into a fresh model and reproduces its
//! output bit for bit; a checkpoint of another architecture or size is refused with one line
//! naming the mismatch; configs the adapter cannot hold are refused before allocation.

use crate::common;

use cdl::gpu::GpuError;
use cdl::model::mlp::{self, Mlp, MlpConfig};
use cdl::philox::normal_vec;
use cdl::train::checkpoint::{self, Checkpoint, MODEL_PREFIX};
use cdl::train::weights::{insert_params, read_params};

const CFG: MlpConfig = MlpConfig { dim: 2, width: 24, blocks: 2, emb_dim: 16, precond: cdl::model::Precond::Edm };

fn run(gpu: &cdl::gpu::Gpu, model: &Mlp) -> Vec<f32> {
    gpu.write(&model.x, &normal_vec(model.batch * model.cfg.dim, 5, 0));
    gpu.write(&model.t, &normal_vec(model.batch, 5, 1));
    model.submit(gpu, false);
    pollster::block_on(gpu.read(&model.out)).unwrap()
}

fn saved(gpu: &cdl::gpu::Gpu, model: &Mlp, step: u64) -> Checkpoint {
    let values = pollster::block_on(gpu.read(&model.params.value)).unwrap();
    let mut ckpt = Checkpoint::new(MlpConfig::ARCH, model.cfg.to_json(), step);
    insert_params(&mut ckpt, MODEL_PREFIX, &model.params.layout, &values).unwrap();
    ckpt
}

#[test]
fn saved_weights_reproduce_the_model_exactly() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let a = pollster::block_on(Mlp::new(gpu, CFG, 17, 1)).unwrap();
    let dir = std::env::temp_dir().join(format!("cdl-model-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    checkpoint::save(&path, &saved(gpu, &a, 42)).unwrap();

    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.step, 42);
    let cfg = MlpConfig::from_json(&loaded.model_config).unwrap();
    assert_eq!(cfg, CFG);
    let b = pollster::block_on(Mlp::new(gpu, cfg, 17, 2)).unwrap();
    assert_ne!(run(gpu, &a), run(gpu, &b), "different seeds must give different models");
    let flat = read_params(&loaded, MlpConfig::ARCH, MODEL_PREFIX, &b.params.layout).unwrap();
    gpu.write(&b.params.value, &flat);
    let (ya, yb) = (run(gpu, &a), run(gpu, &b));
    assert_eq!(ya.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), yb.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_architectures_are_refused_with_one_line() {
    let wide = MlpConfig { width: 32, ..CFG };
    let layout = mlp::layout(CFG);
    let other = mlp::layout(wide);
    let mut ckpt = Checkpoint::new(MlpConfig::ARCH, wide.to_json(), 0);
    insert_params(&mut ckpt, MODEL_PREFIX, &other, &other.init_values(0)).unwrap();
    let err = read_params(&ckpt, MlpConfig::ARCH, MODEL_PREFIX, &layout).unwrap_err().to_string();
    assert!(err.contains("\"model.emb.fc1.weight\" has shape [32, 16], expected [24, 16]"), "{err}");
    assert_eq!(err.lines().count(), 1);

    let err = read_params(&ckpt, "unet", MODEL_PREFIX, &other).unwrap_err().to_string();
    assert!(err.contains("architecture is \"mlp\", expected \"unet\""), "{err}");

    let deeper = mlp::layout(MlpConfig { blocks: 3, ..CFG });
    let mut ckpt = Checkpoint::new(MlpConfig::ARCH, CFG.to_json(), 0);
    insert_params(&mut ckpt, MODEL_PREFIX, &deeper, &deeper.init_values(0)).unwrap();
    let err = read_params(&ckpt, MlpConfig::ARCH, MODEL_PREFIX, &layout).unwrap_err().to_string();
    assert!(err.contains("unexpected tensor \"model.blocks.2."), "{err}");
    let err = read_params(&Checkpoint::new(MlpConfig::ARCH, "{}", 0), MlpConfig::ARCH, MODEL_PREFIX, &layout)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor \"model.emb.fc1.weight\""), "{err}");
}

#[test]
fn config_json_round_trips_and_names_bad_fields() {
    assert_eq!(MlpConfig::from_json(&CFG.to_json()).unwrap(), CFG);
    // An eps network's config is the text written before the option existed (shipped weights).
    let eps = MlpConfig { precond: cdl::model::Precond::Eps, ..CFG };
    assert_eq!(eps.to_json(), r#"{"blocks":2,"dim":2,"emb_dim":16,"width":24}"#);
    assert_eq!(MlpConfig::from_json(&eps.to_json()).unwrap(), eps);
    let err = MlpConfig::from_json(r#"{"dim":2,"width":-1,"blocks":2,"emb_dim":16}"#).unwrap_err();
    assert!(err.contains("\"width\""), "{err}");
    assert!(MlpConfig::from_json("not json").is_err());
}

#[test]
fn memory_is_reported_and_oversize_configs_are_refused_before_allocation() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let m = pollster::block_on(Mlp::new(gpu, CFG, 17, 1)).unwrap();
    let params = 8 * m.params.layout.flat_len() as u64;
    assert!(m.memory_bytes > params, "{} bytes", m.memory_bytes);
    // One activation row block larger than any binding the adapter allows.
    let limit = gpu.limits.max_storage_buffer_binding_size as usize / 4;
    let huge = MlpConfig { width: 64, ..CFG };
    let err = pollster::block_on(Mlp::new(gpu, huge, limit / 64 + 1, 1)).unwrap_err();
    assert!(matches!(err, GpuError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("MLP activations"), "{err}");
}
