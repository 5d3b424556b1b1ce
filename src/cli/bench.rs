//! `cdl bench ops`: kernel timings as JSON. Each case runs once to warm up (pipeline compile,
//! first-touch allocation), then `runs` times; the median wall time of submit-to-idle is
//! reported. The naive matmul (dev/kernels/matmul_v0_naive.wgsl) is measured in the same run
//! as the baseline, since absolute times on a shared machine are noisy.

use std::time::Instant;

use serde_json::{json, Value};

use cdl::gpu::{Dispatch, Gpu, GpuError};
use cdl::ops::conv2d::{self, Conv2dShape, Pass};
use cdl::ops::matmul::{self, Dims, Layout};
use cdl::ops::reduce;
use cdl::ops::tune::{self, Scheme};
use cdl::philox::normal_vec;

async fn time(gpu: &Gpu, d: &[&Dispatch], runs: usize) -> Result<f64, GpuError> {
    gpu.run(d);
    gpu.finish().await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        gpu.run(d);
        gpu.finish().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// Square matmuls of each size in `sizes`, in every scheme (`matmul::Scheme`, each timed with
/// the same buffers and runs), against the naive baseline, each marked whether it is the scheme
/// `gpu` uses for that shape (forced, cached or measured: `matmul::scheme_for`); then the
/// compact UNet's largest convolutions at batch `conv_batch` (none at 0, `conv_cases`); then
/// the row reductions.
pub async fn ops(gpu: &Gpu, runs: usize, sizes: &[usize], conv_batch: usize) -> Result<Value, GpuError> {
    let forced = gpu.variant("matmul");
    let mut cases = Vec::new();
    for &size in sizes {
        let d = Dims::new(size, size, size);
        let a = gpu.upload("a", &normal_vec(size * size, 1, 0))?;
        let b = gpu.upload("b", &normal_vec(size * size, 1, 1))?;
        let out = gpu.zeros("out", size * size)?;
        let shape = format!("{size}x{size}x{size}");
        let naive_kernel = gpu.kernel("matmul_naive", "matmul_v0_naive", matmul::NAIVE_SOURCE, "matmul_naive").await?;
        let naive = naive_dispatch(gpu, &naive_kernel, [&a, &b, gpu.unused(), &out], d)?;
        let naive_ms = time(gpu, &[&naive], if size >= 1024 { 1 } else { runs }).await?;
        let in_use = matmul::scheme_for(gpu, Layout::NN, d, matmul::Strides::contiguous(d)).await?;
        for scheme in matmul::Scheme::ALL {
            gpu.set_variant("matmul", Some(scheme.name()));
            let fwd = matmul::matmul(gpu, Layout::NN, &a, &b, None, &out, d).await?;
            let bwd_a = matmul::matmul_bwd_a(gpu, Layout::NN, &out, &b, &a, d).await?;
            let bwd_b = matmul::matmul_bwd_b(gpu, Layout::NN, &out, &a, &b, d).await?;
            for (name, kernel, disp) in [
                ("matmul_fwd", Layout::NN.entry(scheme, d), &fwd),
                ("matmul_bwd_a", matmul::bwd_a_plan(Layout::NN, d).entry(scheme), &bwd_a),
                ("matmul_bwd_b", matmul::bwd_b_plan(Layout::NN, d).entry(scheme), &bwd_b),
            ] {
                let ms = time(gpu, &[disp], runs).await?;
                cases.push(json!({
                    "op": name, "scheme": scheme.name(), "in_use": scheme == in_use, "kernel": kernel,
                    "shape": shape, "median_ms": ms, "gflops": d.flops() / ms / 1e6,
                    "baseline": "matmul_v0_naive", "baseline_ms": naive_ms,
                    "speedup_vs_baseline": naive_ms / ms,
                }));
            }
        }
        gpu.set_variant("matmul", forced.as_deref());
    }
    if conv_batch > 0 {
        cases.extend(conv_cases(gpu, runs, conv_batch).await?);
    }
    let (rows, n) = (1024usize, 4096usize);
    let x = gpu.upload("x", &normal_vec(rows * n, 2, 0))?;
    let y = gpu.upload("y", &normal_vec(rows * n, 2, 1))?;
    let out = gpu.zeros("out", rows)?;
    let bytes = (rows * n * 4) as f64;
    let shape = format!("{rows}x{n}");
    let rs = reduce::row_sum(gpu, &x, &out, rows, n).await?;
    let ms = time(gpu, &[&rs], runs).await?;
    cases.push(json!({"op": "row_sum", "shape": shape, "median_ms": ms, "gbps": bytes / ms / 1e6}));
    let se = reduce::row_sq_err(gpu, &x, &y, &out, rows, n).await?;
    let ms = time(gpu, &[&se], runs).await?;
    cases.push(json!({"op": "row_sq_err", "shape": shape, "median_ms": ms, "gbps": 2.0 * bytes / ms / 1e6}));
    let parts = gpu.zeros("partials", reduce::sum_sq_partials(rows * n))?;
    let ss = reduce::sum_sq(gpu, &x, &parts, &out, rows * n).await?;
    let ms = time(gpu, &[&ss.partial, &ss.total], runs).await?;
    cases.push(json!({"op": "sum_sq", "shape": format!("{}", rows * n), "median_ms": ms, "gbps": bytes / ms / 1e6}));
    Ok(json!({
        "bench": "ops",
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "driver": format!("{} {}", gpu.info.driver, gpu.info.driver_info),
        "runs": runs,
        "variants": variants_json(gpu),
        "statistic": "median wall ms from submit to queue idle, after one warm-up run",
        "cases": cases,
    }))
}

/// The compact UNet's largest convolutions, all on its 32 x 32 feature maps: conv1 of the first
/// up-path ResBlock over the concatenated 96 channels, that block's 1 x 1 skip, and the
/// 32-channel 3 x 3 convolution of every level-0 block.
fn unet_compact_convs(batch: usize) -> [Conv2dShape; 3] {
    [
        Conv2dShape::new(batch, 96, 32, 32, 32, 3, 1),
        Conv2dShape::new(batch, 96, 32, 32, 32, 1, 1),
        Conv2dShape::new(batch, 32, 32, 32, 32, 3, 1),
    ]
}

/// Each pass (forward, input and weight gradient) of each `unet_compact_convs` shape in both
/// conv2d schemes, timed interleaved (`tune::median_times`, `runs` each), each marked whether
/// it is the scheme `gpu` uses for that pass and shape (`conv2d::scheme_for`).
async fn conv_cases(gpu: &Gpu, runs: usize, batch: usize) -> Result<Vec<Value>, GpuError> {
    let forced = gpu.variant("conv2d");
    let mut cases = Vec::new();
    for s in unet_compact_convs(batch) {
        let x = gpu.upload("x", &normal_vec(s.x_len(), 3, 0))?;
        let w = gpu.upload("w", &normal_vec(s.weight_len(), 3, 1))?;
        let bias = gpu.upload("bias", &normal_vec(s.cout, 3, 2))?;
        let dout = gpu.upload("dout", &normal_vec(s.out_len(), 3, 3))?;
        let (out, dx, dw) =
            (gpu.zeros("out", s.out_len())?, gpu.zeros("dx", s.x_len())?, gpu.zeros("dw", s.weight_len())?);
        let shape = format!("B={} Cin={} Cout={} {}x{} K={}", s.b, s.cin, s.cout, s.h, s.w, s.k);
        for pass in Pass::ALL {
            let in_use = conv2d::scheme_for(gpu, pass, s).await?;
            let mut candidates = Vec::new();
            for scheme in Scheme::ALL {
                gpu.set_variant("conv2d", Some(scheme.name()));
                let d = match pass {
                    Pass::Fwd => conv2d::conv2d_fwd(gpu, &x, &w, Some(&bias), None, &out, s).await?,
                    Pass::BwdInput => conv2d::conv2d_bwd_input(gpu, &dout, &w, None, &dx, s).await?,
                    Pass::BwdWeight => conv2d::conv2d_bwd_weight(gpu, &dout, &x, &dw, s).await?,
                };
                candidates.push((scheme, d));
            }
            gpu.set_variant("conv2d", forced.as_deref());
            for (scheme, secs) in tune::median_times(gpu, &candidates, runs).await? {
                let ms = secs * 1e3;
                cases.push(json!({
                    "op": format!("conv2d_{}", pass.name()), "scheme": scheme.name(), "in_use": scheme == in_use,
                    "kernel": pass.entry(scheme, s), "shape": shape, "median_ms": ms,
                    "gflops": conv2d::flops(s) / ms / 1e6,
                }));
            }
        }
    }
    Ok(cases)
}

/// The variants in use per op family with variants: the forced one, or "per shape" with the
/// count of shapes choosing each variant (`Gpu::choice`: cached or measured).
pub fn variants_json(gpu: &Gpu) -> Value {
    let mut v = json!({});
    for (op, variant, forced) in cdl::ops::variants_in_use(gpu) {
        v[op] = if forced {
            json!({"forced": variant})
        } else {
            let mut counts = json!({});
            for (key, choice) in gpu.choices() {
                if key.starts_with(&format!("{op} ")) {
                    counts[&choice] = json!(counts[&choice].as_u64().unwrap_or(0) + 1);
                }
            }
            json!({"default": variant, "tuning": gpu.tuning(), "chosen_per_shape": counts})
        };
    }
    v
}

fn naive_dispatch(
    gpu: &Gpu,
    kernel: &cdl::gpu::Kernel,
    bufs: [&cdl::gpu::Buffer; 4],
    d: Dims,
) -> Result<Dispatch, GpuError> {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P([u32; 12]); // matmul's Params: m, n, k, batch, strides, has_bias, epilogue, padding
    let p = P([d.m as u32, d.n as u32, d.k as u32, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // 8x8 invocations per workgroup over a 2-D grid of outputs.
    let mut disp = gpu.dispatch(kernel, &bufs, &p, 1)?;
    disp.set_grid(d.n.div_ceil(8) as u32, d.m.div_ceil(8) as u32);
    Ok(disp)
}

/// The side of the square matmul whose best rate `best_matmul` measures.
const PEAK_SIZE: usize = 1024;

/// The best matmul rate of this adapter, measured now: a square forward product of side
/// `PEAK_SIZE` in every scheme that passed its check (the variant forced or chosen is put back
/// afterwards), the fastest scheme's GFLOP/s. What a model's achieved rate is compared with.
pub async fn best_matmul(gpu: &Gpu, runs: usize) -> Result<Value, GpuError> {
    let size = PEAK_SIZE;
    let d = Dims::new(size, size, size);
    let a = gpu.upload("peak a", &normal_vec(size * size, 1, 0))?;
    let b = gpu.upload("peak b", &normal_vec(size * size, 1, 1))?;
    let out = gpu.zeros("peak out", size * size)?;
    let forced = gpu.variant("matmul");
    let mut best: Option<(&str, f64)> = None;
    for scheme in matmul::Scheme::passing(gpu, &matmul::SPEC).await? {
        gpu.set_variant("matmul", Some(scheme.name()));
        let disp = matmul::matmul(gpu, Layout::NN, &a, &b, None, &out, d).await?;
        let gflops = d.flops() / time(gpu, &[&disp], runs).await? / 1e6;
        if best.is_none_or(|(_, g)| gflops > g) {
            best = Some((scheme.name(), gflops));
        }
    }
    gpu.set_variant("matmul", forced.as_deref());
    let (scheme, gflops) = best.unwrap_or(("none", f64::NAN));
    Ok(json!({"shape": format!("{size}x{size}x{size}"), "scheme": scheme, "gflops": gflops}))
}

/// Analytic FLOPs per step (`Dispatch::flops`), the achieved rate and its ratio to `peak`
/// (`best_matmul`'s JSON), merged into a case.
fn efficiency(case: &mut Value, flops_per_step: f64, ms_per_step: f64, peak: &Value) {
    let gflops = flops_per_step / ms_per_step / 1e6;
    case["flops_per_step"] = json!(flops_per_step);
    case["gflops_per_s"] = json!(gflops);
    case["efficiency_vs_best_matmul"] = json!(peak["gflops"].as_f64().map(|p| gflops / p));
}

// --- cdl bench model ---------------------------------------------------------------------------

/// What the training-step benchmark needs of a model built for one batch size.
pub struct BenchNet<'a> {
    /// Architecture (`mlp`, `unet`), as the mirror's `--arch` takes it.
    pub name: &'static str,
    /// What the JSON calls this case (`unet compact`).
    pub label: String,
    pub config: String,
    pub batch: usize,
    pub params: &'a cdl::nn::Params,
    pub forward: &'a [Dispatch],
    pub backward: &'a [Dispatch],
    pub memory_bytes: u64,
}

/// Median milliseconds of one training step (forward, backward, one Adam step over every
/// parameter), the per-kernel breakdown from timestamp queries, and the same step of the
/// PyTorch mirror on the CPU when `python` is given.
pub async fn train_step(
    gpu: &Gpu,
    net: &BenchNet<'_>,
    runs: usize,
    python: Option<&std::path::Path>,
    peak: &Value,
) -> Result<Value, String> {
    use cdl::ops::optim;
    use cdl::train::trainer::AdamConfig;
    let e = |e: GpuError| e.to_string();
    let n = net.params.layout.flat_len();
    let (m, v) = (gpu.zeros("adam m", n).map_err(e)?, gpu.zeros("adam v", n).map_err(e)?);
    let cfg = AdamConfig::adam(1e-4);
    let adam = optim::adam_step(gpu, &net.params.grad, None, &net.params.value, &m, &v, n, &cfg, 1).await.map_err(e)?;
    let step = || {
        cdl::model::submit(gpu, net.params, net.forward, Some(net.backward));
        gpu.run(&[&adam.dispatch]);
    };
    step();
    gpu.finish().await.map_err(e)?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        step();
        gpu.finish().await.map_err(e)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];

    let all: Vec<&Dispatch> = net.forward.iter().chain(net.backward).chain([&adam.dispatch]).collect();
    let breakdown = match gpu.profile(&all).await.map_err(e)? {
        None => Value::Null,
        Some(times) => {
            let mut by_key: Vec<(String, usize, f64)> = Vec::new();
            for (d, t) in all.iter().zip(times) {
                match by_key.iter_mut().find(|k| k.0 == d.key) {
                    Some(k) => {
                        k.1 += 1;
                        k.2 += t;
                    }
                    None => by_key.push((d.key.clone(), 1, t)),
                }
            }
            by_key.sort_by(|a, b| b.2.total_cmp(&a.2));
            json!(by_key.iter().map(|(k, c, t)| json!({"kernel": k, "calls": c, "ms": t})).collect::<Vec<_>>())
        }
    };
    let pytorch = match python {
        None => Value::Null,
        Some(py) => mirror_step(py, net)?,
    };
    let speedup = pytorch.get("ms_per_step").and_then(Value::as_f64).map(|t| t / median);
    let flops: u64 = all.iter().map(|d| d.flops()).sum();
    let mut case = json!({
        "model": net.label,
        "config": serde_json::from_str::<Value>(&net.config).unwrap_or(Value::Null),
        "batch": net.batch,
        "params": net.params.layout.count(),
        "memory_bytes": net.memory_bytes,
        "optimizer_bytes_adam": 2 * 4 * n as u64,
        "median_ms_per_step": median,
        "samples_per_s": net.batch as f64 / median * 1e3,
        "breakdown_ms": breakdown,
        "dispatches_per_step": all.len(),
        "pytorch": pytorch,
        "speedup_vs_pytorch": speedup,
    });
    efficiency(&mut case, flops as f64, median, peak);
    Ok(case)
}

/// The same training step of the PyTorch mirror (tools/mirror.py bench), on the CPU.
fn mirror_step(python: &std::path::Path, net: &BenchNet<'_>) -> Result<Value, String> {
    mirror_rows(python, net.name, &net.config, net.batch)
}

/// `cdl bench model`: the MLP at batch 128 and 1024, the UNet presets `tiny` and `compact` at
/// batch 8 and 32.
pub async fn model(gpu: &Gpu, runs: usize, python: Option<&std::path::Path>) -> Result<Value, String> {
    use cdl::model::{Mlp, MlpConfig, UNet, UNetConfig};
    let e = |e: GpuError| e.to_string();
    let peak = best_matmul(gpu, runs).await.map_err(e)?;
    let mut cases = Vec::new();
    for batch in [128usize, 1024] {
        let cfg = MlpConfig::default();
        let mlp = Mlp::new(gpu, cfg, batch, 0).await.map_err(e)?;
        gpu.write(&mlp.x, &normal_vec(batch * cfg.dim, 3, 0));
        gpu.write(&mlp.t, &normal_vec(batch, 3, 1));
        gpu.write(&mlp.dout, &normal_vec(batch * cfg.dim, 3, 2));
        let (forward, backward) = mlp.dispatches();
        let net = BenchNet {
            name: "mlp",
            label: "mlp".into(),
            config: cfg.to_json(),
            batch,
            params: &mlp.params,
            forward,
            backward,
            memory_bytes: mlp.memory_bytes,
        };
        cases.push(train_step(gpu, &net, runs, python, &peak).await?);
    }
    for (label, cfg) in [("unet tiny", UNetConfig::tiny()), ("unet compact", UNetConfig::compact())] {
        for batch in [8usize, 32] {
            let s2 = cfg.image_size * cfg.image_size;
            let unet = UNet::new(gpu, cfg.clone(), batch, 0).await.map_err(e)?;
            gpu.write(&unet.x, &normal_vec(batch * cfg.in_channels * s2, 3, 0));
            gpu.write(&unet.t, &normal_vec(batch, 3, 1));
            gpu.write(&unet.dout, &normal_vec(batch * cfg.out_channels * s2, 3, 2));
            let (forward, backward) = unet.dispatches();
            let net = BenchNet {
                name: "unet",
                label: label.into(),
                config: cfg.to_json(),
                batch,
                params: &unet.params,
                forward,
                backward,
                memory_bytes: unet.memory_bytes() as u64,
            };
            cases.push(train_step(gpu, &net, runs, python, &peak).await?);
        }
    }
    Ok(json!({
        "bench": "model",
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "runs": runs,
        "variants": variants_json(gpu),
        "best_matmul": peak,
        "statistic": "median wall ms of one training step (forward, backward, Adam) from submit to queue idle, after one warm-up step; breakdown from timestamp queries, one pass per dispatch; flops_per_step: two per multiply-add of every matrix product and convolution of the step, counted from their shapes (other ops count 0); efficiency_vs_best_matmul: gflops_per_s over best_matmul's rate, measured in the same run; pytorch: tools/mirror.py bench, same step, on the CPU with 2 threads (or CDL_MIRROR_DEVICE=cuda)",
        "cases": cases,
    }))
}

// --- cdl bench train ---------------------------------------------------------------------------

/// Random examples in [−1, 1] of one row length (the benchmark needs shapes, not data).
struct Synthetic {
    n: usize,
    d: usize,
    data: Vec<f32>,
}

impl cdl::train::trainer::Examples for Synthetic {
    fn len(&self) -> usize {
        self.n
    }
    fn row_len(&self) -> usize {
        self.d
    }
    fn gather(&self, idx: &[u32], _seed: u64, _step: u64, out: &mut [f32], _labels: &mut [u32]) {
        for (j, &i) in idx.iter().enumerate() {
            let i = i as usize;
            out[j * self.d..(j + 1) * self.d].copy_from_slice(&self.data[i * self.d..(i + 1) * self.d]);
        }
    }
}

/// Options of `cdl bench train`.
pub struct TrainBench<'a> {
    pub model: &'a str,
    pub batches: &'a [usize],
    pub anchors: usize,
    pub points: usize,
    pub runs: usize,
    pub sampler_steps: usize,
    pub python: Option<&'a std::path::Path>,
}

/// A training run of `model` with loss `kind` at batch `batch` (K `anchors`, M `points`, a
/// metrics line every `log_every` steps) over synthetic examples in [−1, 1], every dispatch of
/// its step prepared: what `cdl bench train` times and `cdl tune` tunes.
pub async fn synthetic_run(
    gpu: &Gpu,
    model: &str,
    kind: cdl::train::recipe::LossKind,
    batch: usize,
    anchors: usize,
    points: usize,
    log_every: usize,
) -> Result<cdl::train::run::Run, String> {
    use cdl::train::run::{Run, RunConfig, TrainingData};
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let cfg = RunConfig {
        model: model.to_string(),
        loss: kind,
        batch: batch as u64,
        anchors: anchors as u64,
        points: points as u64,
        log_every: log_every as u64,
        ..RunConfig::default()
    };
    cfg.validate().map_err(|x| e(&x))?;
    let net = cfg.net().map_err(|x| e(&x))?;
    let (n, d) = ((4 * batch).max(64), net.row_len());
    let synthetic = normal_vec(n * d, 5, 0).iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let data = TrainingData {
        source: "synthetic".into(),
        examples: Box::new(Synthetic { n, d, data: synthetic }),
        variances: vec![0.3; d],
        standardization: None,
    };
    Run::new(gpu, cfg, std::rc::Rc::new(data)).await.map_err(|x| e(&x))
}

/// `cdl bench train`: real training steps (rows, loss head, backward, Adam, EMA) of a model
/// preset at each batch size, with the standard loss alone and with CDL (K anchors, M points),
/// as examples/s; samples/s of each sampler at `sampler_steps`; the device memory the run
/// allocates; and the PyTorch mirror's step on the same number of rows.
pub async fn train(gpu: &Gpu, o: &TrainBench<'_>) -> Result<Value, String> {
    use cdl::train::recipe::LossKind;
    use cdl::train::run::NetConfig;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let peak = best_matmul(gpu, o.runs.clamp(1, 5)).await.map_err(|x| e(&x))?;
    let mut cases = Vec::new();
    for &batch in o.batches {
        for (label, kind) in [("std", LossKind::Itd), ("std+cdl", LossKind::Cdl)] {
            let mut run = synthetic_run(gpu, o.model, kind, batch, o.anchors, o.points, o.runs).await?;
            let (rows, model) = (run.trainer().config().rows(), run.trainer().net());
            let device_bytes = model.memory_bytes() + model.params().layout.optimizer_bytes();
            run.train_chunk(gpu, 1).await.map_err(|x| e(&x))?;
            let (before, start) = (gpu.counters(), Instant::now());
            let mut left = o.runs;
            while left > 0 {
                let k = left.min(run.chunk_limit());
                run.train_chunk(gpu, k).await.map_err(|x| e(&x))?;
                left -= k;
            }
            let secs = start.elapsed().as_secs_f64();
            let after = gpu.counters();
            let per_step = |x: u64| x as f64 / o.runs as f64;
            let pytorch = match o.python {
                None => Value::Null,
                Some(py) => {
                    let (name, config) = match run.net() {
                        NetConfig::Mlp(c) => ("mlp", c.to_json()),
                        NetConfig::UNet(c) => ("unet", c.to_json()),
                    };
                    let p = mirror_rows(py, name, &config, rows)?;
                    let ms = p.get("ms_per_step").and_then(Value::as_f64);
                    json!({"rows": rows, "device": p["device"], "ms_per_step": ms,
                           "examples_per_s": ms.map(|m| batch as f64 / m * 1e3)})
                }
            };
            let ms_per_step = secs * 1e3 / o.runs as f64;
            let mut case = json!({
                "what": "train", "model": o.model, "batch": batch, "loss": label, "rows": rows,
                "ms_per_step": ms_per_step,
                "examples_per_s": (batch * o.runs) as f64 / secs,
                "dispatches_per_step": per_step(after.dispatches - before.dispatches),
                "submissions_per_step": per_step(after.submissions - before.submissions),
                "device_bytes": device_bytes,
                "pytorch": pytorch,
            });
            efficiency(&mut case, per_step(after.flops - before.flops), ms_per_step, &peak);
            cases.push(case);
            if label == "std" {
                cases.extend(samplers(gpu, &run, o.model, batch, o.sampler_steps, false).await?);
            }
        }
    }
    Ok(json!({
        "bench": "train",
        "schema": 1,
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "runs": o.runs,
        "variants": variants_json(gpu),
        "cdl": {"anchors": o.anchors, "points": o.points},
        "best_matmul": peak,
        "statistic": "train: wall time of `runs` full training steps (one warm-up step first) including the async statistics readback; examples/s = batch·runs/s; dispatches, submissions and flops per step: the device's counters over the timed steps (flops: two per multiply-add of every matrix product and convolution, counted from their shapes; other ops count 0); efficiency_vs_best_matmul: gflops_per_s over best_matmul's rate, measured in the same run; device_bytes = the model's buffers (parameters, gradients, activations) plus Adam moments and EMA, as allocated (wgpu reports no peak); sample: one run of each sampler on `batch` samples at --sampler-steps; pytorch: tools/mirror.py bench on the same number of rows (forward, backward, Adam), on the CPU with 2 threads (or CDL_MIRROR_DEVICE=cuda)",
        "cases": cases,
    }))
}

/// One run of each sampler (DDPM, DDIM, EDM Heun, parallel DDPM) at `steps` on `n` samples of
/// `run`'s EMA weights, timed from the first evaluation to the samples on the host: with the
/// sampler's arithmetic on the device ("path": "device"), and with `host` also on the host in f64
/// right after it (the reference path, one readback per evaluation), so the two compare in the
/// same run.
async fn samplers(
    gpu: &Gpu,
    run: &cdl::train::run::Run,
    model: &str,
    n: usize,
    steps: usize,
    host: bool,
) -> Result<Vec<Value>, String> {
    use cdl::diffusion::sampler::{sample, DdpmVariance, SamplerConfig};
    use cdl::eval::denoiser::GpuDenoiser;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut cases = Vec::new();
    for cfg in [
        SamplerConfig::Ddpm { steps: steps.max(2), variance: DdpmVariance::Beta },
        SamplerConfig::Ddim { steps },
        SamplerConfig::Heun { steps: steps.max(2), churn: 0.0 },
        SamplerConfig::Parallel {
            steps: steps.max(2),
            window: steps.max(2),
            tol: 0.1,
            ddim: false,
            variance: DdpmVariance::Posterior,
        },
    ] {
        let mut den = GpuDenoiser::from_trainer(gpu, run.trainer(), n.min(1024)).await.map_err(|x| e(&x))?;
        for path in if host { &["device", "host"][..] } else { &["device"][..] } {
            let (before, start) = (gpu.counters(), Instant::now());
            let (_, s) = if *path == "host" {
                sample(&mut den, &cfg, n, 0, None).await
            } else {
                den.sample_on_device(&cfg, n, 0, None).await
            }
            .map_err(|x| e(&x))?;
            let secs = start.elapsed().as_secs_f64();
            let after = gpu.counters();
            cases.push(json!({
                "what": "sample", "model": model, "batch": n, "sampler": cfg.name(), "path": path,
                "passes": s.passes, "evaluations": s.evaluations, "seconds": secs,
                "samples_per_s": n as f64 / secs,
                "submissions": after.submissions - before.submissions,
                "flops": after.flops - before.flops,
                "gflops_per_s": (after.flops - before.flops) as f64 / secs / 1e9,
            }));
        }
    }
    Ok(cases)
}

/// `cdl bench sample`: samples/s of every sampler on `n` samples of an untrained `model` (the
/// arithmetic and the number of evaluations do not depend on the weights).
pub async fn sample(gpu: &Gpu, model: &str, n: usize, steps: usize) -> Result<Value, String> {
    use cdl::train::recipe::LossKind;
    let run = synthetic_run(gpu, model, LossKind::Itd, 1, 1, 1, 1).await?;
    let cases = samplers(gpu, &run, model, n, steps, true).await?;
    Ok(json!({
        "bench": "sample",
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "variants": variants_json(gpu),
        "statistic": "wall time of one run of each sampler on `batch` samples (the model evaluated on at most 1,024 at once), from the first evaluation to the samples on the host, with the sampler's arithmetic on the device (path device) and, right after, on the host in f64 (path host, one readback per evaluation); submissions: command buffers submitted during the run; flops: the matrix products and convolutions of its evaluations, counted from their shapes",
        "cases": cases,
    }))
}

/// The PyTorch mirror's training step (forward, backward, Adam) of `arch` with `config` on
/// `rows` rows.
fn mirror_rows(python: &std::path::Path, arch: &str, config: &str, rows: usize) -> Result<Value, String> {
    // The checkout's mirror where the binary runs from one (a binary carried to another machine),
    // else the one it was built from.
    let here = std::path::Path::new("tools/mirror.py");
    let script = if here.is_file() {
        here
    } else {
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/mirror.py"))
    };
    // CDL_MIRROR_DEVICE=cuda times the mirror on the GPU (scripts/gpu-bench).
    let device = std::env::var("CDL_MIRROR_DEVICE").unwrap_or_else(|_| "cpu".into());
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["bench", "--arch", arch, "--config", config, "--batch", &rows.to_string(), "--device", &device])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("PyTorch mirror failed: {}", err.lines().last().unwrap_or("no output")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("PyTorch mirror printed no JSON ({e}): {text}"))
}

/// `cdl bench fid`: images/s of the Inception feature network with random weights at each batch
/// size, from the images on the host to the features on the host.
pub async fn fid(gpu: &Gpu, batches: &[usize], size: usize, runs: usize) -> Result<Value, String> {
    use cdl::eval::inception::{Inception, InceptionWeights, FEATURES};
    let weights = InceptionWeights::random(0);
    let mut cases = Vec::new();
    for &batch in batches {
        let net = Inception::new(gpu, &weights, batch, size, size).map_err(|e| e.to_string())?;
        let flops = net.flops_per_image(gpu).await.map_err(|e| e.to_string())?;
        // Values in [0, 1], as the network expects.
        let x: Vec<f32> =
            normal_vec(3 * size * size * batch, 7, 0).iter().map(|v| 0.5 + 0.15 * v.clamp(-3.0, 3.0)).collect();
        let mut ms = Vec::with_capacity(runs);
        for run in 0..=runs {
            let t = Instant::now();
            let f = net.features(gpu, &x, batch).await.map_err(|e| e.to_string())?;
            if f.len() != batch * FEATURES {
                return Err(format!("internal: {} features for {batch} images", f.len()));
            }
            if run > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        let per_s = batch as f64 / (median / 1e3);
        // Each step of the network timed alone (timestamp queries, where the adapter has them),
        // slowest first: where the time goes.
        let layers = match net.profile(gpu, batch).await.map_err(|e| e.to_string())? {
            None => Value::Null,
            Some(mut steps) => {
                steps.sort_by(|a, b| b.2.total_cmp(&a.2));
                json!(steps
                    .iter()
                    .map(|(name, flops, ms)| json!({
                        "step": name,
                        "ms": ms,
                        "gflops_per_s": if *ms > 0.0 { *flops as f64 / (ms * 1e6) } else { 0.0 },
                    }))
                    .collect::<Vec<_>>())
            }
        };
        cases.push(json!({
            "batch": batch,
            "size": size,
            "ms": median,
            "images_per_s": per_s,
            "flops_per_image": flops,
            "gflops": per_s * flops as f64 / 1e9,
            "layers": layers,
        }));
    }
    Ok(json!({
        "bench": "fid",
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "variants": variants_json(gpu),
        "statistic": "median wall ms of one `Inception::features` call on `batch` images of size×size (upload, resize to 299×299, the network, readback of the 2,048 features), after one warm-up call; gflops: images/s times flops_per_image, the FLOPs the launchers count (two per multiply-add); layers: each step of the network timed alone by timestamp queries (null without them), slowest first, with its counted FLOPs per ms",
        "cases": cases,
    }))
}
