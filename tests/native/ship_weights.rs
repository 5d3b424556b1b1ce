//! tools/ship_weights.py (how web/assets/ is made): the shrunken checkpoint keeps the metadata and
//! every model and EMA tensor bit for bit, drops the Adam moments, and still decodes.
//! Python's standard library only: `$CDL_PYTHON` (scripts/test's venv) or `python3`.

use cdl::train::checkpoint::{self, Checkpoint};

#[test]
fn ship_weights_keeps_model_and_ema_and_drops_the_optimizer() {
    let mut ck = Checkpoint::new("mlp", r#"{"dim":2}"#, 4000);
    ck.extra.insert("run.config".into(), r#"{"loss":"cdl"}"#.into());
    let values = |n: usize, k: f32| (0..n).map(|i| i as f32 * k - 1.5).collect::<Vec<f32>>();
    for (prefix, k) in [("model.", 0.25), ("ema.", 0.5), ("optim.m.", 1.0), ("optim.v.", 2.0)] {
        ck.insert(format!("{prefix}fc.weight"), vec![3, 5], values(15, k)).unwrap();
        // An odd length, so the tensors after it are not 8-byte aligned in the body.
        ck.insert(format!("{prefix}fc.bias"), vec![3], values(3, k)).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("cdl-ship-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, dst) = (dir.join("full.safetensors"), dir.join("ship.safetensors"));
    std::fs::write(&src, checkpoint::encode(&ck).unwrap()).unwrap();
    let python = std::env::var("CDL_PYTHON").unwrap_or_else(|_| "python3".into());
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/ship_weights.py");
    let o = std::process::Command::new(&python).arg(tool).arg(&src).arg(&dst).output().expect("run python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let shipped = checkpoint::decode(&std::fs::read(&dst).unwrap()).unwrap();
    assert_eq!((shipped.arch.as_str(), shipped.step), ("mlp", 4000));
    assert_eq!(shipped.model_config, ck.model_config);
    assert_eq!(shipped.extra, ck.extra);
    let names: Vec<&str> = shipped.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ema.fc.bias", "ema.fc.weight", "model.fc.bias", "model.fc.weight"]);
    for t in shipped.tensors() {
        assert_eq!(Some(t), ck.get(&t.name), "{} kept bit for bit", t.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
