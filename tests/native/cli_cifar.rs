//! The CIFAR-10 path end to end with one command: an archive in the official layout and sizes
//! (5 × 10,000 records, synthetic and highly compressible, written by the test) trains the
//! compact UNet with the cifar10-compact preset for one step, class-conditional, and writes a
//! run directory; a truncated archive is one line naming the file.

use crate::common;

use std::io::Write;
use std::process::Command;

use cdl::train::cifar::{ARCHIVE_DIR, BATCH_BYTES, RECORDS_PER_BATCH, RECORD_BYTES, TRAIN_FILES};

/// An official-size archive: record r has label r % 10 and a smooth gradient image.
fn archive() -> Vec<u8> {
    let mut batch = vec![0u8; BATCH_BYTES];
    for r in 0..RECORDS_PER_BATCH {
        let rec = &mut batch[r * RECORD_BYTES..(r + 1) * RECORD_BYTES];
        rec[0] = (r % 10) as u8;
        for (i, px) in rec[1..].iter_mut().enumerate() {
            *px = ((i % 32) * 8 + r % 7) as u8;
        }
    }
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for name in TRAIN_FILES {
        let mut h = tar::Header::new_gnu();
        h.set_size(BATCH_BYTES as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{ARCHIVE_DIR}/{name}"), &batch[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn cifar10_compact_trains_from_the_official_archive_with_one_command() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("cdl-cli-cifar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cifar-10-binary.tar.gz");
    let bytes = archive();
    std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
    let out = dir.join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/cifar10-compact.toml");
    // The preset with only what a CPU test needs changed: one step of B = 2, K = 1, M = 1.
    let o = Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args(["train", "--config", config, "--data", path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--batch", "2", "--anchors", "1", "--points", "1", "--steps", "1", "--log-every", "1"])
        .args(["--checkpoint-every", "1", "--sample-every", "0", "--classes", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = cdl::train::checkpoint::load(out.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.arch.as_str(), ck.step), ("unet", 1));
    assert!(ck.model_config.contains("\"num_classes\":10"), "{}", ck.model_config);
    let resolved: toml::Table = std::fs::read_to_string(out.join("config.toml")).unwrap().parse().unwrap();
    assert_eq!(resolved["model"].as_str(), Some("unet-compact"));
    assert_eq!(resolved["flip"].as_bool(), Some(true));
    // A truncated archive: one line naming it.
    let cut = dir.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cdl"))
        .args(["train", "--config", config, "--data", cut.to_str().unwrap(), "--out", dir.join("x").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.lines().count() == 1 && stderr.contains("cut.tar.gz"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
