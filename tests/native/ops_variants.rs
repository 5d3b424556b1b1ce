//! Kernel variants: the registry checks every variant whatever is in use (ops_gpu_vs_cpu), and
//! here: a variant forced through `GpuOptions` / `CDL_VARIANT` is the one dispatched, training
//! gives the same losses in either matmul scheme and in either conv2d scheme, `cdl info` and
//! `cdl bench ops` name the variants in use, and a misspelt `CDL_VARIANT` is a one-line error.

use crate::common;
use crate::common::cli::{error_line, gpu_scratch, text};

use cdl::gpu::{parse_variants, Gpu, GpuOptions};
use cdl::ops::conv2d::{self, Conv2dShape, Pass};
use cdl::ops::matmul::{self, Dims, Layout, Scheme};

use std::process::Command;

#[test]
fn variants_parse_from_the_environment_text() {
    assert_eq!(
        parse_variants(" matmul:tiled , conv2d:rows,bare,"),
        [("matmul", "tiled"), ("conv2d", "rows"), ("bare", "")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(parse_variants("").is_empty());
}

#[test]
fn a_forced_variant_is_the_one_dispatched() {
    let Some(shared) = common::gpu_or_skip() else { return };
    let opts = GpuOptions { variants: parse_variants("matmul:tiled"), ..GpuOptions::from_env() };
    let gpu = pollster::block_on(Gpu::new(&opts)).unwrap();
    let d = Dims::new(33, 20, 12);
    let a = gpu.zeros("a", 33 * 12).unwrap();
    let b = gpu.zeros("b", 12 * 20).unwrap();
    let out = gpu.zeros("out", 33 * 20).unwrap();
    let key = |g: &Gpu| pollster::block_on(matmul::matmul(g, Layout::NN, &a, &b, None, &out, d)).map(|x| x.key);
    assert_eq!(Scheme::forced(&gpu, "matmul"), Ok(Some(Scheme::Tiled)));
    assert!(key(&gpu).unwrap().starts_with("matmul_nn_tiled["), "{:?}", key(&gpu));
    // Backward products follow the same scheme.
    let da = pollster::block_on(matmul::matmul_bwd_a(&gpu, Layout::NN, &out, &b, &a, d)).unwrap();
    assert!(da.key.starts_with("matmul_nt_tiled["), "{}", da.key);
    // Set back to the default, and a name the registry does not have is refused when used.
    gpu.set_variant("matmul", None);
    assert!(key(&gpu).unwrap().starts_with("matmul_nn4["), "{:?}", key(&gpu));
    gpu.set_variant("matmul", Some("nope"));
    let e = key(&gpu).unwrap_err().to_string();
    assert!(e.contains("matmul:rows, matmul:tiled"), "{e}");
    assert!(cdl::ops::check_variants(&gpu).is_err());
    // The shared device of the other tests runs the default, unless CDL_VARIANT says otherwise.
    if std::env::var_os("CDL_VARIANT").is_none() {
        assert_eq!(Scheme::forced(shared, "matmul"), Ok(None));
    }
}

/// conv2d: a forced scheme is the one dispatched for all three passes (matmul stays as it is);
/// unforced, a choice recorded for one pass and shape is used for that pass and shape only, and
/// with tuning on a new shape is measured among the schemes that pass here.
#[test]
fn a_forced_or_recorded_conv2d_scheme_is_the_one_dispatched() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let opts = GpuOptions { variants: parse_variants("conv2d:tiled"), ..GpuOptions::from_env() };
    let gpu = pollster::block_on(Gpu::new(&opts)).unwrap();
    // W a multiple of 4 at stride 1: the rows scheme takes its vec4 entries.
    let s = Conv2dShape::new(2, 5, 6, 7, 8, 3, 1);
    let x = gpu.zeros("x", s.x_len()).unwrap();
    let w = gpu.zeros("w", s.weight_len()).unwrap();
    let out = gpu.zeros("out", s.out_len()).unwrap();
    let keys = |g: &Gpu, s: Conv2dShape| {
        let f = pollster::block_on(conv2d::conv2d_fwd(g, &x, &w, None, None, &out, s)).unwrap();
        let i = pollster::block_on(conv2d::conv2d_bwd_input(g, &out, &w, None, &x, s)).unwrap();
        let dw = pollster::block_on(conv2d::conv2d_bwd_weight(g, &out, &x, &w, s)).unwrap();
        [f.key, i.key, dw.key].map(|k| k[..k.find('[').unwrap()].to_string())
    };
    assert_eq!(Scheme::forced(&gpu, "conv2d"), Ok(Some(Scheme::Tiled)));
    assert_eq!(Scheme::forced(&gpu, "matmul"), Ok(None));
    assert_eq!(keys(&gpu, s), ["conv2d_fwd_tiled", "conv2d_bwd_input_tiled", "conv2d_bwd_weight_tiled"]);
    gpu.set_variant("conv2d", None);
    assert_eq!(keys(&gpu, s), ["conv2d_fwd_v4", "conv2d_bwd_input_v4", "conv2d_bwd_weight_v4"]);

    gpu.set_choice(&conv2d::tune_key(Pass::BwdInput, s), "tiled", false);
    assert_eq!(keys(&gpu, s), ["conv2d_fwd_v4", "conv2d_bwd_input_tiled", "conv2d_bwd_weight_v4"]);
    let other = Conv2dShape::new(2, 5, 6, 7, 8, 3, 2);
    assert_eq!(keys(&gpu, other), ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"]);
    assert!(!gpu.take_new_choices(), "a recorded choice is not new");
    gpu.set_tuning(true);
    let third = Conv2dShape::new(1, 5, 6, 7, 8, 1, 1);
    keys(&gpu, third);
    for pass in Pass::ALL {
        let k = conv2d::tune_key(pass, third);
        assert!(matches!(gpu.choice(&k).as_deref(), Some("rows" | "tiled")), "{k}: {:?}", gpu.choices());
    }
    assert_eq!(gpu.choice("passed conv2d").as_deref(), Some("rows,tiled"));
    assert!(gpu.take_new_choices());
}

/// The loss curve (`common::cli::loss_curve`) of `cdl ARGS --out DIR/SCHEME` with
/// `CDL_VARIANT=variant(SCHEME)`, for each scheme, the default's first.
fn curves_per_scheme(dir: &std::path::Path, args: &[&str], variant: fn(&str) -> String) -> Vec<Vec<serde_json::Value>> {
    let mut curves = Vec::new();
    for scheme in Scheme::NAMES {
        let out = dir.join(scheme);
        let o = Command::new(env!("CARGO_BIN_EXE_cdl"))
            .args(args)
            .args(["--out", out.to_str().unwrap()])
            .env("CDL_VARIANT", variant(scheme))
            .env("CDL_CACHE_DIR", dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        curves.push(common::cli::loss_curve(&out));
    }
    curves
}

/// Every number of the rows curve within `rel` (relative, absolute below 1) of the tiled one's,
/// and every other entry (a field the run does not log) equal.
fn assert_curves_close(curves: &[Vec<serde_json::Value>], rel: f64) {
    for (r, t) in curves[0].iter().zip(&curves[1]) {
        for (x, y) in r.as_array().unwrap().iter().zip(t.as_array().unwrap()) {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= rel * x.abs().max(1.0), "rows {r} vs tiled {t}"),
                _ => assert_eq!(x, y, "rows {r} vs tiled {t}"),
            }
        }
    }
}

/// Relative tolerance between the two schemes' loss curves: six Adam steps from the same start,
/// each loss a mean over 32 + 16 rows of f32 products summed in another order, so 1e-4 is many
/// rounding units wide and far below a wrong kernel's effect (the loss moves by ~1e-2 a step).
const SCHEMES_REL: f64 = 1e-4;

/// The same short MLP run with each matmul scheme: the same loss curve within f32 summation
/// order (the two schemes add the K products in different orders).
#[test]
fn training_gives_the_same_losses_in_either_scheme() {
    let Some(dir) = gpu_scratch("variants-train") else { return };
    let args = [&["train"][..], &common::cli::SMALL_MLP, &["--steps", "6", "--log-every", "2"]].concat();
    let curves = curves_per_scheme(&dir, &args, |scheme| format!("matmul:{scheme}"));
    assert_eq!(curves[0].len(), 3);
    assert_curves_close(&curves, SCHEMES_REL);
}

/// Relative tolerance between unet-tiny's loss curves in the two conv2d schemes: four Adam steps
/// from the same start, every convolution of the forward and backward summed in another order
/// (over Cin K K, Cout K K or B H W terms); on lavapipe the curves agree to 2e-7 relative (the
/// gradient norms; the losses to the last bit), and a wrong kernel moves them by more than 1e-2.
const CONV_SCHEMES_REL: f64 = 1e-4;

/// The same short unet-tiny run with each conv2d scheme (matmul forced to rows in both, so only
/// the convolutions differ): the same losses and gradient norms within f32 summation order.
#[test]
fn unet_training_gives_the_same_losses_in_either_conv2d_scheme() {
    let Some(dir) = gpu_scratch("variants-conv-train") else { return };
    let args = "train --model unet-tiny --data shapes --loss ddpm --batch 4 --steps 4 --log-every 1 --quiet";
    let args: Vec<&str> = args.split(' ').collect();
    let curves = curves_per_scheme(&dir, &args, |scheme| format!("matmul:rows,conv2d:{scheme}"));
    assert_eq!(curves[0].len(), 4);
    assert_curves_close(&curves, CONV_SCHEMES_REL);
}

#[test]
fn info_and_bench_ops_name_the_variants_in_use() {
    let Some(dir) = gpu_scratch("variants-info") else { return };
    let run = |args: &[&str], variant: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cdl"));
        c.args(args).env_remove("CDL_VARIANT").env("CDL_CACHE_DIR", &dir);
        if let Some(v) = variant {
            c.env("CDL_VARIANT", v);
        }
        c.output().unwrap()
    };
    let o = run(&["info"], Some("matmul:tiled"));
    assert!(text(&o).contains("matmul           tiled (forced; of rows, tiled)"), "{}", text(&o));
    assert!(text(&o).contains("conv2d           rows (default; of rows, tiled)"), "{}", text(&o));
    for forced in [None, Some("matmul:tiled,conv2d:tiled")] {
        let o = run(&["bench", "ops", "--runs", "1", "--sizes", "8,20", "--conv-batch", "1"], forced);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        match forced {
            Some(_) => assert_eq!(v["variants"]["matmul"]["forced"], "tiled", "{v}"),
            None => assert_eq!(v["variants"]["matmul"]["default"], "rows", "{v}"),
        }
        let cases = v["cases"].as_array().unwrap();
        for op in ["matmul_fwd", "matmul_bwd_a", "matmul_bwd_b"] {
            for size in ["8x8x8", "20x20x20"] {
                // Every scheme at every size, exactly one of them in use (the forced one).
                let of: Vec<_> = cases.iter().filter(|c| c["op"] == op && c["shape"] == size).collect();
                assert_eq!(of.len(), 2, "{v}");
                assert_eq!(of.iter().filter(|c| c["in_use"] == true).count(), 1, "{v}");
                assert!(of.iter().all(|c| c["gflops"].as_f64().unwrap() > 0.0), "{v}");
                if forced.is_some() {
                    assert!(of.iter().all(|c| c["in_use"] == (c["scheme"] == "tiled")), "{v}");
                }
            }
        }
        assert!(cases.iter().any(|c| c["kernel"] == "matmul_nn_tiled"), "{v}");
        // The compact UNet's three largest convolutions, each pass in both schemes.
        for op in ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"] {
            let of: Vec<_> = cases.iter().filter(|c| c["op"] == op).collect();
            assert_eq!(of.len(), 6, "{v}");
            assert_eq!(of.iter().filter(|c| c["in_use"] == true).count(), 3, "{v}");
            assert!(of.iter().all(|c| c["gflops"].as_f64().unwrap() > 0.0), "{v}");
            if forced.is_some() {
                assert!(of.iter().all(|c| c["in_use"] == (c["scheme"] == "tiled")), "{v}");
                assert_eq!(v["variants"]["conv2d"]["forced"], "tiled", "{v}");
            }
        }
        assert!(cases.iter().any(|c| c["kernel"] == "conv2d_bwd_weight_tiled"), "{v}");
    }
    for bad in ["matmul:nope", "conv9:rows", "matmul"] {
        let line = error_line(&run(&["info"], Some(bad)));
        assert!(line.contains("CDL_VARIANT") && line.contains("matmul:tiled"), "{bad}: {line}");
    }
}

/// A choice recorded for a shape (from the cache, or measured) is the scheme dispatched for that
/// shape only; with tuning on, a new shape is measured among the schemes that pass the registry
/// check here, and recorded as new.
#[test]
fn a_recorded_choice_is_used_and_tuning_records_new_shapes() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let gpu = pollster::block_on(Gpu::new(&GpuOptions { variants: Vec::new(), ..GpuOptions::from_env() })).unwrap();
    let (d, other) = (Dims::new(24, 16, 8), Dims::new(24, 16, 12));
    let bufs = [gpu.zeros("a", 24 * 12).unwrap(), gpu.zeros("b", 12 * 16).unwrap(), gpu.zeros("out", 24 * 16).unwrap()];
    let key = |d: Dims| {
        let x = pollster::block_on(matmul::matmul(&gpu, Layout::NN, &bufs[0], &bufs[1], None, &bufs[2], d)).unwrap();
        x.key
    };
    gpu.set_choice(&matmul::tune_key(Layout::NN, d, matmul::Strides::contiguous(d)), "tiled", false);
    assert!(key(d).starts_with("matmul_nn_tiled["), "{}", key(d));
    assert!(key(other).starts_with("matmul_nn4["), "{}", key(other));
    assert!(!gpu.take_new_choices(), "a cached choice is not new");
    gpu.set_tuning(true);
    let third = Dims::new(24, 16, 4);
    key(third);
    let k = matmul::tune_key(Layout::NN, third, matmul::Strides::contiguous(third));
    assert!(matches!(gpu.choice(&k).as_deref(), Some("rows" | "tiled")), "{:?}", gpu.choices());
    assert_eq!(gpu.choice("passed matmul").as_deref(), Some("rows,tiled"));
    assert!(gpu.take_new_choices());
    // An empty dimension is the launcher's shape error, not a failure of the timing.
    let e = pollster::block_on(matmul::matmul(&gpu, Layout::NN, &bufs[0], &bufs[1], None, &bufs[2], Dims { batch: 0, ..d }));
    assert!(e.unwrap_err().to_string().contains("empty dimension"));
}

/// `cdl tune` measures and writes the cache; the next run starts from it (nothing measured);
/// a cached choice is what `cdl bench ops` reports in use; a corrupt cache file is ignored with
/// one warning line and rewritten.
#[test]
fn the_cache_file_keeps_choices_and_a_corrupt_one_is_ignored_with_one_warning() {
    let Some(dir) = gpu_scratch("variants-cache") else { return };
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_cdl"))
            .args(args)
            .env("CDL_CACHE_DIR", &dir)
            .env_remove("CDL_VARIANT")
            .env_remove("CDL_TUNE")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let tune = ["tune", "--model", "mlp", "--batches", "8"];
    let (v, err) = run(&tune);
    assert!(err.is_empty(), "{err}");
    assert!(v["measured"].as_u64().unwrap() > 3, "{v}");
    let path = std::path::PathBuf::from(v["cache"].as_str().unwrap());
    assert!(path.starts_with(&dir), "{v}");
    let mut cache: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cache["choices"]["passed matmul"], "rows,tiled", "{cache}");
    let (again, _) = run(&tune);
    assert_eq!(again["measured"], 0, "{again}");
    assert_eq!(again["choices"], v["choices"]);

    let d = Dims::new(8, 8, 8);
    cache["choices"][matmul::tune_key(Layout::NN, d, matmul::Strides::contiguous(d))] = "tiled".into();
    std::fs::write(&path, cache.to_string()).unwrap();
    let (ops, _) = run(&["bench", "ops", "--runs", "1", "--sizes", "8", "--conv-batch", "0"]);
    let in_use: Vec<_> =
        ops["cases"].as_array().unwrap().iter().filter(|c| c["op"] == "matmul_fwd" && c["in_use"] == true).collect();
    assert_eq!(in_use.len(), 1, "{ops}");
    assert_eq!(in_use[0]["scheme"], "tiled", "{ops}");

    std::fs::write(&path, "{\"schema\": 1, \"choi").unwrap();
    let (v, err) = run(&tune);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("warning: ignoring the kernel-variant cache"), "{err}");
    assert!(v["measured"].as_u64().unwrap() > 3, "{v}");
    let rewritten: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(rewritten["choices"]["passed matmul"], "rows,tiled");
}
