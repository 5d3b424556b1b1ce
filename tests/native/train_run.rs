//! `train::run`: the run metadata has one writer and one reader (versioned, unknown keys refused
//! in one line), the shipped web weights and older `cdl train` and page checkpoints still read,
//! and a `Run` stopped at a checkpoint and resumed continues bit for bit.

use crate::common;

use std::collections::BTreeMap;
use std::rc::Rc;

use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::data::{Standardization, Toy};
use cdl::train::recipe::LossKind;
use cdl::train::run::{NetConfig, Run, RunConfig, RunMeta, Trained, TrainingData, META_VERSION};

fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn meta() -> RunMeta {
    RunMeta {
        run: Some(RunConfig { loss: LossKind::Ddpm, levels_mu: Some(-1.5), ..RunConfig::default() }),
        data_source: Some("points.csv".into()),
        standardization: Some(Standardization { mean: vec![0.5, -2.0], std: vec![3.0, 0.25] }),
        alpha_range: Some((-10.5, 12.25)),
    }
}

#[test]
fn run_meta_reads_back_what_it_writes() {
    let written = meta().to_extra().unwrap();
    assert!(written.contains(&("meta.version".to_string(), META_VERSION.to_string())));
    let read = RunMeta::from_extra(&written.into_iter().collect()).unwrap();
    assert_eq!(read, meta());
}

/// A shipped file's `preview` and `curve` (`cdl export`) are not run metadata: skipped unread,
/// whatever they hold.
#[test]
fn shipped_keys_are_skipped() {
    let mut shipped: BTreeMap<String, String> = meta().to_extra().unwrap().into_iter().collect();
    shipped.insert("preview".into(), r#"{"n":1000}"#.into());
    shipped.insert("curve".into(), "not even JSON".into());
    assert_eq!(RunMeta::from_extra(&shipped).unwrap(), meta());
}

#[test]
fn unknown_keys_and_newer_versions_are_refused_in_one_line() {
    let mut with_unknown: BTreeMap<String, String> = meta().to_extra().unwrap().into_iter().collect();
    with_unknown.insert("data.sauce\nx".into(), "moons".into());
    let e = RunMeta::from_extra(&with_unknown).unwrap_err().to_string();
    assert!(e.contains("unknown checkpoint metadata key") && e.contains("data.sauce"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let newer = extra(&[("meta.version", "3"), ("run.config", "{}")]);
    let e = RunMeta::from_extra(&newer).unwrap_err().to_string();
    assert!(e.contains("version 3 is newer"), "{e}");

    let unknown_setting = extra(&[("meta.version", "2"), ("run.config", r#"{"loss":"cdl","lr2":1}"#)]);
    let e = RunMeta::from_extra(&unknown_setting).unwrap_err().to_string();
    assert!(e.contains("run.config") && e.contains("lr2"), "{e}");

    for (key, value) in [("data.mean", "[0.0]"), ("train.alpha_range", "[1.0]"), ("meta.version", "two")] {
        let bad = extra(&[("meta.version", "2"), (key, value)]);
        let e = RunMeta::from_extra(&bad).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn version_one_metadata_of_older_writers_still_reads() {
    // `cdl train` before the metadata had a version: every value as text, options unset absent.
    let cli = extra(&[
        (
            "run.config",
            r#"{"data":"moons","loss":"itd","batch":64,"lr":0.002,"warmup":100,"ema":0.999,"clip":0.0,"seed":3,"anchors":2,"points":32,"lambda_cdl":1.0,"independent_draws":false,"cdl_norm":"batch","width":128,"blocks":2,"toy_points":100000,"log_every":100,"model":"mlp","classes":false,"flip":false,"precond":"edm"}"#,
        ),
        ("data.mean", "[0.0,0.0]"),
        ("data.std", "[1.0,1.0]"),
        ("data.source", "moons"),
        ("train.alpha_range", "[-10.5,12.4]"),
    ]);
    let m = RunMeta::from_extra(&cli).unwrap();
    let run = m.run.unwrap();
    assert_eq!((run.loss, run.batch, run.seed, run.precond.as_deref()), (LossKind::Itd, 64, 3, Some("edm")));
    assert_eq!(m.alpha_range, Some((-10.5, 12.4)));
    // The image page's: fewer keys (the rest take `cdl train`'s defaults), no standardisation.
    let page = extra(&[
        (
            "run.config",
            r#"{"data":"shapes","loss":"cdl","batch":16,"lr":0.0005,"warmup":100,"ema":0.999,"clip":1.0,"seed":0,"anchors":1,"points":8,"lambda_cdl":1.0,"independent_draws":false,"model":"unet-custom","classes":false}"#,
        ),
        ("data.source", "shapes"),
    ]);
    let m = RunMeta::from_extra(&page).unwrap();
    let run = m.run.unwrap();
    assert_eq!((run.model.as_str(), run.clip, run.cdl_norm.as_str()), ("unet-custom", 1.0, "batch"));
    assert_eq!(m.standardization, None);
    // Bare weights with notes of their own (tools/reference_train.py): no run metadata.
    let reference = extra(&[("reference", "tools/reference_train.py"), ("settings", "{}")]);
    assert_eq!(RunMeta::from_extra(&reference).unwrap(), RunMeta::default());
}

#[test]
fn the_shipped_web_weights_read_as_runs() {
    for loss in ["cdl", "ddpm"] {
        let path = format!("{}/web/assets/moons-{loss}.safetensors", env!("CARGO_MANIFEST_DIR"));
        let t = Trained::load(std::path::Path::new(&path)).unwrap();
        let run = t.meta.run.clone().unwrap();
        assert_eq!((run.loss.name(), run.width, run.data.as_str()), (loss, 64, "moons"));
        assert!(t.meta.alpha_range.is_some() && t.meta.standardization.is_some());
        assert!(matches!(t.net().unwrap(), NetConfig::Mlp(c) if c.width == 64 && c.dim == 2));
    }
}

/// The moons run of the tests: a small MLP, CDL, a metrics line every 5 steps.
fn small() -> RunConfig {
    RunConfig { width: 16, batch: 32, points: 4, log_every: 5, ..RunConfig::default() }
}

fn moons() -> Rc<TrainingData> {
    Rc::new(TrainingData::points("moons", Toy::Moons.generate(500, 0), Standardization::identity(2)))
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    pollster::block_on(async {
        let mut straight = Run::new(gpu, small(), moons()).await.unwrap();
        for _ in 0..4 {
            straight.train_chunk(gpu, 5).await.unwrap();
        }
        let mut first = Run::new(gpu, small(), moons()).await.unwrap();
        for _ in 0..2 {
            first.train_chunk(gpu, 5).await.unwrap();
        }
        let bytes = checkpoint::encode(&first.checkpoint(gpu).await.unwrap()).unwrap();
        let trained = Trained::new(checkpoint::decode(&bytes).unwrap()).unwrap();
        assert_eq!(trained.meta.run, first.meta().run);
        let config = trained.meta.run.clone().unwrap();
        let mut resumed = Run::resume(gpu, config, &trained, moons()).await.unwrap();
        assert_eq!(resumed.step(), 10);
        for _ in 0..2 {
            resumed.train_chunk(gpu, 5).await.unwrap();
        }
        let (a, b): (Checkpoint, Checkpoint) =
            (straight.checkpoint(gpu).await.unwrap(), resumed.checkpoint(gpu).await.unwrap());
        assert_eq!(a, b, "a resumed run differs from an uninterrupted one");
    });
}

#[test]
fn a_run_refuses_a_chunk_beyond_its_limit_and_data_the_net_cannot_read() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    pollster::block_on(async {
        let mut run = Run::new(gpu, small(), moons()).await.unwrap();
        assert_eq!(run.chunk_limit(), 64, "a page's chunk, whatever the run logs");
        assert!(run.train_chunk(gpu, 65).await.is_err());
        let images = RunConfig { model: "unet-tiny".into(), ..small() };
        let e = Run::new(gpu, images, moons()).await.unwrap_err().to_string();
        assert!(e.contains("examples have 2 values"), "{e}");
    });
}
