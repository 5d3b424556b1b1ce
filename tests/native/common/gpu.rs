//! The test device, one for the whole binary (skip or fail when there is none), and the checks of
//! GPU results against the f64 oracles.

use std::collections::HashMap;
use std::sync::OnceLock;

use cdl::gpu::{Gpu, GpuOptions};
use cdl::nn::ParamLayout;
use cdl::philox::normal_vec;
use cdl::reference::tol::{compare, Tol};

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

/// GPU results against an f64 oracle with one tolerance: one OK / NOT OK line per tensor (after
/// `label`, which says what case this is), and `finish` fails listing every mismatch.
pub struct OracleCheck {
    label: String,
    tol: Tol,
    bad: Vec<String>,
}

impl OracleCheck {
    pub fn new(label: impl Into<String>, tol: Tol) -> Self {
        Self { label: label.into(), tol, bad: Vec::new() }
    }

    pub fn check(&mut self, what: &str, got: &[f32], want: &[f64]) {
        let r = compare(got, want, self.tol);
        println!("{} {}{what}: {r}", if r.ok() { "OK    " } else { "NOT OK" }, self.label);
        if !r.ok() {
            self.bad.push(what.to_string());
        }
    }

    /// Every parameter gradient of `layout` in `grads` against the oracle's, by name.
    pub fn grads(&mut self, layout: &ParamLayout, grads: &[f32], want: &HashMap<String, Vec<f64>>) {
        for (name, _, g) in layout.split(grads) {
            self.check(&format!("grad {name}"), &g, &want[&name]);
        }
    }

    pub fn finish(self) {
        assert!(self.bad.is_empty(), "mismatches: {:?}", self.bad);
    }
}

/// Moves every tensor of `p` whose name contains `pattern` by 0.3 N(0, 1) (philox `seed`, the
/// layout index as tag), so that norm gains and biases leave 1 and 0 and their gradients are generic.
pub fn jitter(p: &mut HashMap<String, Vec<f64>>, layout: &ParamLayout, pattern: &str, seed: u64) {
    for (i, (name, _)) in layout.shapes().iter().enumerate() {
        if name.contains(pattern) {
            let v = p.get_mut(name).unwrap();
            let noise = normal_vec(v.len(), seed, i as u32);
            for (a, r) in v.iter_mut().zip(noise) {
                *a += 0.3 * f64::from(r);
            }
        }
    }
}
