//! Kernel variants: the registry checks every variant whatever is in use (ops_gpu_vs_cpu), and
//! here: a variant forced through `GpuOptions` / `CDL_VARIANT` is the one dispatched, training
//! gives the same losses in either matmul scheme, `cdl info` and `cdl bench ops` name the
//! variants in use, and a misspelt `CDL_VARIANT` is a one-line error.

use crate::common;
use crate::common::cli::{error_line, gpu_scratch, text, train_args};

use cdl::gpu::{parse_variants, Gpu, GpuOptions};
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
    assert_eq!(Scheme::of(&gpu), Ok(Scheme::Tiled));
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
        assert_eq!(Scheme::of(shared), Ok(Scheme::Rows));
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
    let mut curves = Vec::new();
    for scheme in Scheme::NAMES {
        let out = dir.join(scheme);
        let o = Command::new(env!("CARGO_BIN_EXE_cdl"))
            .args(train_args(out.to_str().unwrap(), &["--steps", "6", "--log-every", "2"]))
            .env("CDL_VARIANT", format!("matmul:{scheme}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        curves.push(common::cli::loss_curve(&out));
    }
    assert_eq!(curves[0].len(), 3);
    for (r, t) in curves[0].iter().zip(&curves[1]) {
        for (x, y) in r.as_array().unwrap().iter().zip(t.as_array().unwrap()) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= SCHEMES_REL * x.abs().max(1.0), "rows {r} vs tiled {t}");
        }
    }
}

#[test]
fn info_and_bench_ops_name_the_variants_in_use() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    let run = |args: &[&str], variant: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cdl"));
        c.args(args).env_remove("CDL_VARIANT");
        if let Some(v) = variant {
            c.env("CDL_VARIANT", v);
        }
        c.output().unwrap()
    };
    let o = run(&["info"], Some("matmul:tiled"));
    assert!(text(&o).contains("matmul           tiled (forced; of rows, tiled)"), "{}", text(&o));
    for (forced, want) in [(None, "rows"), (Some("matmul:tiled"), "tiled")] {
        let o = run(&["bench", "ops", "--runs", "1", "--sizes", "8,20"], forced);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["variants"]["matmul"], want, "{v}");
        let mm: Vec<_> = v["cases"].as_array().unwrap().iter().filter(|c| c["op"] == "matmul_fwd").collect();
        // Every scheme at every size, the one in use marked.
        assert_eq!(mm.len(), 4, "{v}");
        for c in &mm {
            assert_eq!(c["in_use"], c["scheme"] == want, "{c}");
            assert!(c["gflops"].as_f64().unwrap() > 0.0, "{c}");
        }
        assert!(mm.iter().any(|c| c["kernel"] == "matmul_nn_tiled"), "{v}");
    }
    for bad in ["matmul:nope", "conv9:rows", "matmul"] {
        let line = error_line(&run(&["info"], Some(bad)));
        assert!(line.contains("CDL_VARIANT") && line.contains("matmul:tiled"), "{bad}: {line}");
    }
}
