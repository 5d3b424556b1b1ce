//! `cdl bench ops`: kernel timings as JSON. Each case runs once to warm up (pipeline compile,
//! first-touch allocation), then `runs` times; the median wall time of submit-to-idle is
//! reported. The naive matmul (dev/kernels/matmul_v0_naive.wgsl) is measured in the same run
//! as the baseline, since absolute times on a shared machine are noisy.

use std::time::Instant;

use serde_json::{json, Value};

use cdl::gpu::{Dispatch, Gpu, GpuError};
use cdl::ops::matmul::{self, Dims, Layout};
use cdl::ops::reduce;
use cdl::reference::philox::normal_vec;

const NAIVE: &str = include_str!("../../dev/kernels/matmul_v0_naive.wgsl");

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

pub async fn ops(gpu: &Gpu, runs: usize) -> Result<Value, GpuError> {
    let mut cases = Vec::new();
    for size in [256usize, 512, 1024] {
        let d = Dims::new(size, size, size);
        let a = gpu.upload("a", &normal_vec(size * size, 1, 0))?;
        let b = gpu.upload("b", &normal_vec(size * size, 1, 1))?;
        let out = gpu.zeros("out", size * size)?;
        let shape = format!("{size}x{size}x{size}");
        let fwd = matmul::matmul(gpu, Layout::NN, &a, &b, None, &out, d).await?;
        let bwd_a = matmul::matmul_bwd_a(gpu, Layout::NN, &out, &b, &a, d).await?;
        let bwd_b = matmul::matmul_bwd_b(gpu, Layout::NN, &out, &a, &b, d).await?;
        let naive_kernel = gpu.kernel("matmul_naive", "matmul_v0_naive", NAIVE, "matmul_naive").await?;
        let naive = naive_dispatch(gpu, &naive_kernel, [&a, &b, gpu.unused(), &out], d)?;
        let naive_ms = time(gpu, &[&naive], if size == 1024 { 1 } else { runs }).await?;
        for (name, kernel, disp) in [
            ("matmul_fwd", Layout::NN.entry(d), &fwd),
            ("matmul_bwd_a", matmul::bwd_a_plan(Layout::NN, d).entry(), &bwd_a),
            ("matmul_bwd_b", matmul::bwd_b_plan(Layout::NN, d).entry(), &bwd_b),
        ] {
            let ms = time(gpu, &[disp], runs).await?;
            cases.push(json!({
                "op": name, "kernel": kernel, "shape": shape, "median_ms": ms,
                "gflops": d.flops() / ms / 1e6,
                "baseline": "matmul_v0_naive", "baseline_ms": naive_ms,
                "speedup_vs_baseline": naive_ms / ms,
            }));
        }
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
        "statistic": "median wall ms from submit to queue idle, after one warm-up run",
        "cases": cases,
    }))
}

fn naive_dispatch(
    gpu: &Gpu,
    kernel: &cdl::gpu::Kernel,
    bufs: [&cdl::gpu::Buffer; 4],
    d: Dims,
) -> Result<Dispatch, GpuError> {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P([u32; 8]);
    let p = P([d.m as u32, d.n as u32, d.k as u32, 1, 0, 0, 0, 0]);
    // 8x8 invocations per workgroup over a 2-D grid of outputs.
    let mut disp = gpu.dispatch(kernel, &bufs, &p, 1)?;
    disp.set_grid(d.n.div_ceil(8) as u32, d.m.div_ceil(8) as u32);
    Ok(disp)
}
