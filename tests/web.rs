//! The op registry in a real browser: every kernel compiled to wasm, run through the browser's
//! WebGPU (SwiftShader in headless Chromium), compared with the CPU reference compiled to wasm.
//! Run by the test command through wasm-bindgen-test-runner and chromedriver.

#![cfg(target_arch = "wasm32")]

use cdl::gpu::{Gpu, GpuOptions};
use cdl::ops;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The kernels run on the browser's WebGPU implementation, not on a CPU fallback in Rust.
#[wasm_bindgen_test]
async fn runs_on_browser_webgpu() {
    let g = gpu().await;
    cdl::gpu::log(&format!("cdl web test adapter: {}", g.describe()));
    assert_eq!(g.info.backend, wgpu::Backend::BrowserWebGpu, "{}", g.describe());
}

async fn run(op: &str) {
    let g = gpu().await;
    let spec = ops::op(op).unwrap_or_else(|| panic!("no op {op} in the registry"));
    let results = (spec.check)(&g).await.unwrap_or_else(|e| panic!("{op}: {e}"));
    for r in &results {
        cdl::gpu::log(&r.to_string());
    }
    for e in spec.entries {
        assert!(results.iter().any(|r| r.entry == e.name), "{op}: entry {} was not checked", e.name);
    }
    let bad: Vec<String> = results.iter().filter(|r| !r.ok()).map(ToString::to_string).collect();
    assert!(bad.is_empty(), "{op} on {}:\n{}", g.describe(), bad.join("\n"));
}

macro_rules! op_tests {
    ($($name:ident),*) => {
        $(#[wasm_bindgen_test] async fn $name() { run(stringify!($name)).await; })*

        #[wasm_bindgen_test]
        fn every_registry_op_has_a_browser_test() {
            let tested = [$(stringify!($name)),*];
            for spec in ops::OPS {
                assert!(tested.contains(&spec.name), "registry op {} has no browser test", spec.name);
            }
        }
    };
}

op_tests!(elementwise, matmul, reduce, philox, groupnorm, resample, embedding, softmax, optim, conv2d);
