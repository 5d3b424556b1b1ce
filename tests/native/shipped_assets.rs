//! The weights the page ships (web/assets/, made by scripts/ship-weights): one file per built-in
//! set and loss, each a loadable checkpoint of that set and loss with F16 weights, the preview the
//! page draws before any GPU work and the run's training curve. Host only (no GPU).

use std::collections::BTreeSet;
use std::path::Path;

use cdl::eval::density::{GRID, LOGP_RANGE};
use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::data::Toy;
use cdl::train::run::{NetConfig, Trained, KEY_CURVE, KEY_PREVIEW};
use serde_json::Value;

const LOSSES: [&str; 2] = ["ddpm", "cdl"];
/// Samples in the preview: the toy page's default count.
const PREVIEW_SAMPLES: usize = 1000;

fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web/assets")
}

/// The dtype of every tensor named in the safetensors header of `bytes`.
fn dtypes(bytes: &[u8]) -> Vec<(String, String)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let obj = header.as_object().unwrap();
    obj.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["dtype"].as_str().unwrap().to_string()))
        .collect()
}

fn values(ck: &Checkpoint, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = ck.get(name).unwrap_or_else(|| panic!("no tensor {name}"));
    (t.shape.clone(), t.data.clone())
}

#[test]
fn every_built_in_set_ships_both_losses_and_nothing_else() {
    let found: BTreeSet<String> = std::fs::read_dir(assets())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> =
        Toy::ALL.iter().flat_map(|t| LOSSES.map(|l| format!("{}-{l}.safetensors", t.name()))).collect();
    assert_eq!(found, expected);
}

#[test]
fn shipped_files_load_with_their_preview_and_curve() {
    for toy in Toy::ALL {
        for loss in LOSSES {
            let name = format!("{}-{loss}", toy.name());
            let bytes = std::fs::read(assets().join(format!("{name}.safetensors"))).unwrap();
            for (tensor, dtype) in dtypes(&bytes) {
                assert_eq!(dtype, "F16", "{name}: {tensor}");
                assert!(tensor.starts_with("model.") || tensor.starts_with("ema.") || tensor.starts_with("preview."));
            }
            let ck = checkpoint::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            ck.check_finite().unwrap();
            let step = ck.step;
            let extra = ck.extra.clone();
            let (samples_shape, samples) = values(&ck, "preview.samples");
            let (map_shape, map) = values(&ck, "preview.logp");
            let trained = Trained::new(ck).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(matches!(trained.net().unwrap(), NetConfig::Mlp(_)), "{name}");
            assert_eq!(trained.meta.data_source.as_deref(), Some(toy.name()), "{name}");
            assert_eq!(trained.meta.run.as_ref().unwrap().loss.name(), loss, "{name}");

            // The preview: the page's samples and its log p map, floored LOGP_RANGE below the top.
            assert_eq!(samples_shape, [PREVIEW_SAMPLES, 2], "{name}");
            assert_eq!(map_shape, [GRID, GRID], "{name}");
            let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            // F16 rounds values of a few nats to within 2^-8 of themselves.
            assert!(hi > lo && f64::from(hi - lo) <= LOGP_RANGE + 0.05, "{name}: map spans {lo}..{hi}");
            assert!(samples.iter().all(|v| v.abs() < 10.0), "{name}: a preview sample far off the view");
            let preview: Value = serde_json::from_str(&extra[KEY_PREVIEW]).unwrap();
            assert_eq!(preview["n"], PREVIEW_SAMPLES, "{name}");
            assert!(preview["mmd"].as_f64().is_some_and(|m| m.is_finite() && m < 0.1), "{name}: {preview}");

            // The curve: the run's logged rows up to the checkpoint's step, at most 200.
            let curve: Value = serde_json::from_str(&extra[KEY_CURVE]).unwrap();
            let steps = curve["step"].as_array().unwrap();
            assert!(!steps.is_empty() && steps.len() <= 200, "{name}");
            assert_eq!(steps.last().unwrap().as_u64(), Some(step), "{name}");
            for k in ["loss", "loss_std", "loss_cdl"] {
                assert_eq!(curve[k].as_array().unwrap().len(), steps.len(), "{name}: {k}");
            }
        }
    }
}
