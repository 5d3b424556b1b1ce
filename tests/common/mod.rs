//! Shared helpers for GPU tests: one device per test binary, skip or fail when there is none.

#![allow(dead_code)]

use std::sync::OnceLock;

use cdl::gpu::{Gpu, GpuOptions};

/// The test device, or `None` (with `SKIPPED: no adapter` printed) when the machine has no
/// adapter. With `REQUIRE_GPU=1` a missing adapter fails the test instead, so CI cannot pass
/// by skipping.
pub fn gpu_or_skip() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let got = GPU.get_or_init(|| pollster::block_on(Gpu::new(&GpuOptions::from_env())).map_err(|e| e.to_string()));
    match got {
        Ok(g) => Some(g),
        Err(e) => {
            let required = std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(!required, "REQUIRE_GPU=1 but no adapter: {e}");
            println!("SKIPPED: no adapter ({e})");
            None
        }
    }
}
