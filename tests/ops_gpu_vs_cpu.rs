//! Every GPU entry point against its CPU reference, on shapes that need several workgroups and
//! are not powers of two (the checks live in the op registry so the browser suite runs the same).
//! Prints llm.c-style OK / NOT OK lines per entry and shape.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use cdl::gpu::fold_workgroups;
use cdl::ops;

fn run(op: &str) {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let spec = ops::op(op).unwrap_or_else(|| panic!("no op {op} in the registry"));
    let results = pollster::block_on((spec.check)(gpu)).unwrap_or_else(|e| panic!("{op}: {e}"));
    for r in &results {
        println!("{r}");
    }
    let entries: Vec<&str> = results.iter().map(|r| r.entry).collect();
    for e in spec.entries {
        assert!(entries.contains(&e.name), "{op}: entry {} was not checked", e.name);
    }
    let bad: Vec<String> = results.iter().filter(|r| !r.ok()).map(ToString::to_string).collect();
    assert!(bad.is_empty(), "{op} on {}:\n{}", gpu.describe(), bad.join("\n"));
}

macro_rules! op_tests {
    ($($name:ident),*) => {
        $(#[test] fn $name() { run(stringify!($name)); })*

        #[test]
        fn every_registry_op_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for spec in ops::OPS {
                assert!(tested.contains(&spec.name), "registry op {} has no test here", spec.name);
            }
        }
    };
}

op_tests!(elementwise, matmul, reduce, philox, groupnorm, resample, embedding, softmax, optim, conv2d, loss, rows);

/// A dispatch of more than 65,535 workgroups folds into 2-D and still covers every element.
#[test]
fn large_dispatch_folds() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let n = 65_535 * 256 + 4_099;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let xb = gpu.upload("x", &x).expect("upload");
    let yb = gpu.zeros("y", n).expect("alloc");
    let d = pollster::block_on(ops::elementwise::scale(gpu, &xb, &yb, n, 2.0)).expect("scale");
    gpu.run(&[&d]);
    let y = pollster::block_on(gpu.read(&yb)).expect("read");
    let bad = (0..n).find(|&i| y[i] != 2.0 * x[i]);
    assert_eq!(bad, None, "element not written after folding");
}

#[test]
fn fold_workgroups_stays_within_limits() {
    for count in [1u32, 65_535, 65_536, 1 << 20, 65_535 * 65_535, 65_535 * 65_535 + 1, u32::MAX] {
        let g = fold_workgroups(count).expect("fold");
        assert!(g.x <= 65_535 && g.y <= 65_535 && g.z <= 65_535, "{count} -> {g:?}");
        let total = u64::from(g.x) * u64::from(g.y) * u64::from(g.z);
        assert!(total >= u64::from(count), "{count} -> {g:?} covers only {total}");
        // The grid overshoots by less than one x-row times the outer dimensions.
        assert!(
            total - u64::from(count) < u64::from(g.y) * u64::from(g.z) + u64::from(g.x) * u64::from(g.z),
            "{count} -> {g:?}"
        );
    }
}

/// Bad shapes are errors, not device validation panics.
#[test]
fn shape_mismatch_is_an_error() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let a = gpu.zeros("a", 10).expect("alloc");
    let out = gpu.zeros("out", 10).expect("alloc");
    let d = ops::matmul::Dims::new(4, 4, 4);
    let err = pollster::block_on(ops::matmul::matmul(gpu, ops::matmul::Layout::NN, &a, &a, None, &out, d))
        .expect_err("16-element operands from 10-element buffers must be refused");
    assert!(err.to_string().contains("needs 16"), "{err}");
}
