//! Every GPU entry point against its CPU reference, on shapes that need several workgroups and
//! are not powers of two (the checks live in the op registry so the browser suite runs the same).
//! Prints llm.c-style OK / NOT OK lines per entry and shape.

use crate::common;

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

op_tests!(elementwise, matmul, reduce, philox, groupnorm, resample, embedding, softmax, optim, conv2d, loss, rows, sampler, inception);

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

/// A recorded submission runs its steps in the order recorded (a clear before the dispatch that
/// reads the cleared buffer, a copy after the dispatch that wrote its source), reports each
/// dispatch's kernel variant, and adds exactly its submissions and dispatches to the counters.
#[test]
fn a_recorder_submits_clears_dispatches_and_copies_in_order() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    // A device of its own: the shared one's counters move with the other tests in this binary.
    let gpu = pollster::block_on(cdl::gpu::Gpu::new(&cdl::gpu::GpuOptions::from_env())).expect("device");
    let n = 300;
    let x = gpu.upload("x", &vec![1.0; n]).expect("x");
    let y = gpu.upload("y", &vec![5.0; n]).expect("y");
    let out = gpu.zeros("out", n).expect("out");
    // y <- y + 2x, then out <- y: with x cleared first, out must hold the old y.
    let axpy = pollster::block_on(ops::elementwise::axpy(&gpu, &x, &y, n, 2.0)).expect("axpy");
    let before = gpu.counters();
    let mut rec = gpu.recorder();
    rec.clear(&x).dispatch(&axpy).copy(&y, 0, &out, 0, n);
    assert_eq!(rec.kernels(), vec![axpy.key.as_str()]);
    rec.submit();
    let got = pollster::block_on(gpu.read(&out)).expect("read");
    assert!(got.iter().all(|&v| v == 5.0), "clear did not precede the dispatch: {:?}", &got[..4]);
    // With x = 1 again: y <- 5 + 2 = 7, out <- 7, x <- 0, y <- 7 + 0. A copy or a clear encoded
    // out of order would leave 5 in out or 9 in y.
    gpu.write(&x, &vec![1.0; n]);
    let mut rec = gpu.recorder();
    rec.dispatch(&axpy).copy(&y, 0, &out, 0, n).clear(&x).dispatch(&axpy);
    rec.submit();
    let (got, y_now) =
        (pollster::block_on(gpu.read(&out)).expect("read"), pollster::block_on(gpu.read(&y)).expect("read"));
    assert!(got.iter().all(|&v| v == 7.0), "the copy did not see the first dispatch: {:?}", &got[..4]);
    assert!(y_now.iter().all(|&v| v == 7.0), "the clear did not precede the second dispatch: {:?}", &y_now[..4]);
    let after = gpu.counters();
    assert_eq!(after.submissions - before.submissions, 2, "{before:?} -> {after:?}");
    assert_eq!(after.dispatches - before.dispatches, 3, "{before:?} -> {after:?}");
}
