//! The UNet on the GPU against an f64 oracle (tests/oracle/unet.rs) composed from the ResBlock
//! oracle, the reference attention and the CPU references: output, dx and every parameter
//! gradient, with a random upstream gradient. The oracle's own backward is checked against central
//! differences first, on a smaller net, so a wrong composition cannot hide behind agreement with
//! the GPU. Also: the presets' sizes (math.md §8); the description's parameter count and FLOPs
//! against the layout, the built model and a hand count; and the refusal of configs the device
//! or the attention layer cannot take. The oracle and GPU checks also run with EDM's preconditioning
//! ("edm", σ_d = 0.5).

use crate::common::{self, OracleCheck};

use crate::oracle::resblock;
use crate::oracle::unet as unet_oracle;

use cdl::gpu::GpuError;
use cdl::model::unet::{self, Block, Description, UNet, UNetConfig};
use cdl::model::Precond;
use cdl::philox::normal_vec;
use cdl::reference::gradcheck::{check, coords, dot};
use cdl::reference::to_f64;
use cdl::reference::tol::LOOSE;
use resblock::tensors;
use unet_oracle::Oracle;

/// The smallest net with every kind of step: 8 px, ch 8, mult [1, 2], 1 block, attention at 4
/// (C = 16, T = 16: (C / heads) T = 256, a multiple of 64 as the attention layer requires).
fn micro() -> UNetConfig {
    UNetConfig {
        image_size: 8,
        in_channels: 3,
        out_channels: 3,
        channels: 8,
        mult: vec![1, 2],
        blocks_per_level: 1,
        attn_resolutions: vec![4],
        heads: 1,
        num_classes: 0,
        norm_groups: 32,
        precond: Precond::Eps,
    }
}

/// Classes of the class-conditional cases and the labels of their batch of 2.
const CLASSES: usize = 10;
const LABELS: [u32; 2] = [3, 7];

/// The one-hot rows of `labels` (B, k), as `UNet::write_labels` writes them.
fn onehot(labels: &[u32], k: usize) -> Vec<f64> {
    let mut v = vec![0.0; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        v[i * k + l as usize] = 1.0;
    }
    v
}

/// x (B, Cin, S, S), t (B,), dout (B, Cout, S, S).
fn inputs(cfg: &UNetConfig, b: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s2 = cfg.image_size * cfg.image_size;
    let x = normal_vec(b * cfg.in_channels * s2, 13, 0);
    let t: Vec<f32> = normal_vec(b, 13, 1).iter().map(|v| 1.5 * v).collect();
    let dout = normal_vec(b * cfg.out_channels * s2, 13, 2);
    (x, t, dout)
}

/// The oracle's backward agrees with central differences of sum(out * dout), at a few
/// coordinates of every parameter tensor and of x. Norm gains and biases are moved off 1 and 0
/// so their gradients are generic.
#[test]
fn oracle_backward_matches_finite_differences() {
    oracle_fd(micro(), &[]);
}

/// The same with class conditioning (10 classes, labels [3, 7]): class_emb.weight included.
#[test]
fn oracle_backward_matches_finite_differences_class_conditional() {
    oracle_fd(UNetConfig { num_classes: CLASSES, ..micro() }, &LABELS);
}

/// The same with EDM's preconditioning: the input scaling and the skip term reach dx.
#[test]
fn oracle_backward_matches_finite_differences_edm() {
    oracle_fd(UNetConfig { precond: Precond::Edm, ..micro() }, &[]);
}

fn oracle_fd(cfg: UNetConfig, labels: &[u32]) {
    let b = 2;
    let oh = onehot(labels, cfg.num_classes);
    let layout = unet::layout(&cfg).unwrap();
    let mut p = tensors(layout.split(&layout.init_values(5)));
    common::jitter(&mut p, &layout, "norm", 6);
    let (x, t, dout) = inputs(&cfg, b);
    let (x, t, dout) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let oracle = Oracle { cfg: &cfg, b, p: &p };
    let (_, cache) = oracle.forward_labeled(&x, &t, &oh);
    let (grads, dx) = oracle.backward(&cache, &x, &dout);
    assert_eq!(grads.len(), p.len(), "a gradient per parameter tensor");
    assert_eq!(p.contains_key("class_emb.weight"), cfg.num_classes > 0);
    for (name, value) in &p {
        let loss = |v: &[f64]| {
            let mut q = p.clone();
            q.insert(name.clone(), v.to_vec());
            dot(&Oracle { cfg: &cfg, b, p: &q }.forward_labeled(&x, &t, &oh).0, &dout)
        };
        // class_emb.weight: only the labels' columns have a nonzero gradient; check those too.
        let mut at = coords(value.len(), 3);
        if name == "class_emb.weight" {
            at.extend(labels.iter().map(|&l| l as usize));
            at.extend(labels.iter().map(|&l| cfg.num_classes + l as usize));
        }
        check(name, loss, value, &grads[name], at).unwrap();
    }
    check("x", |v: &[f64]| dot(&oracle.forward_labeled(v, &t, &oh).0, &dout), &x, &dx, coords(x.len(), 12)).unwrap();
    println!("OK     oracle vs central differences: {cfg:?}, B={b}, {} tensors and x", p.len());
}

/// GPU forward and backward of the tiny preset at batch 2 against the oracle, on the GPU's own
/// initial parameters.
#[test]
fn gpu_matches_oracle() {
    gpu_vs_oracle(UNetConfig::tiny(), &[]);
}

/// The same, class-conditional: 10 classes, labels [3, 7] (class_emb.weight's gradient included).
#[test]
fn gpu_matches_oracle_class_conditional() {
    gpu_vs_oracle(UNetConfig { num_classes: CLASSES, ..UNetConfig::tiny() }, &LABELS);
}

/// The same with norm_groups 2 instead of 32 (every GroupNorm of the tiny net: 2 groups).
#[test]
fn gpu_matches_oracle_norm_groups_2() {
    gpu_vs_oracle(UNetConfig { norm_groups: 2, ..UNetConfig::tiny() }, &[]);
}

/// The same with EDM's preconditioning (σ_d = 0.5).
#[test]
fn gpu_matches_oracle_edm() {
    gpu_vs_oracle(UNetConfig { precond: Precond::Edm, ..UNetConfig::tiny() }, &[]);
}

fn gpu_vs_oracle(cfg: UNetConfig, labels: &[u32]) {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let b = 2;
    let model = pollster::block_on(UNet::new(gpu, cfg.clone(), b, 9)).unwrap();
    let (x, t, dout) = inputs(&cfg, b);
    if cfg.num_classes > 0 {
        model.write_labels(gpu, labels).unwrap();
    }
    gpu.write(&model.x, &x);
    gpu.write(&model.t, &t);
    gpu.write(&model.dout, &dout);
    model.submit(gpu, true);
    let read = |buf| pollster::block_on(gpu.read(buf)).unwrap();
    let (out, dx) = (read(&model.out), read(&model.dx));
    let (values, grads) = (read(&model.params.value), read(&model.params.grad));

    let layout = &model.params.layout;
    let p = tensors(layout.split(&values));
    let oracle = Oracle { cfg: &cfg, b, p: &p };
    let (x64, t64, dout64) = (to_f64(&x), to_f64(&t), to_f64(&dout));
    let (want_out, cache) = oracle.forward_labeled(&x64, &t64, &onehot(labels, cfg.num_classes));
    let (want_grads, want_dx) = oracle.backward(&cache, &x64, &dout64);

    println!("{cfg:?}, B={b}: {} parameters, {} bytes on the device", model.param_count(), model.memory_bytes());
    let mut report = OracleCheck::new("", LOOSE);
    report.check("out", &out, &want_out);
    report.check("dx", &dx, &want_dx);
    report.grads(layout, &grads, &want_grads);
    report.finish();
    assert_eq!(want_grads.len(), layout.shapes().len());
    let (est, _) = unet::memory_estimate(&cfg, b).unwrap();
    assert_eq!(model.memory_bytes(), est);
    assert!(model.memory_bytes() > 8 * model.param_count());
    assert_eq!(layout.shapes().iter().any(|(n, _)| n == "class_emb.weight"), cfg.num_classes > 0);
}

/// `write_labels` refuses a label >= num_classes, a wrong number of labels and an unconditional
/// model; the class-conditional layout has `class_emb.weight` (E, K) right after emb.fc2.
#[test]
fn refuses_bad_labels() {
    let cfg = UNetConfig { num_classes: CLASSES, ..micro() };
    let shapes = unet::layout(&cfg).unwrap().shapes();
    let i = shapes.iter().position(|(n, _)| n == "class_emb.weight").unwrap();
    assert_eq!(shapes[i].1, vec![cfg.emb_dim(), CLASSES]);
    assert_eq!(shapes[i - 1].0, "emb.fc2.bias");
    let Some(gpu) = common::gpu_or_skip() else { return };
    let model = pollster::block_on(UNet::new(gpu, cfg, 2, 0)).unwrap();
    model.write_labels(gpu, &[0, 9]).unwrap();
    let err = model.write_labels(gpu, &[3, 10]).unwrap_err();
    println!("refused: {err}");
    assert!(matches!(err, GpuError::Shape(ref m) if m.contains("label 10")), "{err}");
    assert!(model.write_labels(gpu, &[3]).is_err(), "one label for batch 2");
    let plain = pollster::block_on(UNet::new(gpu, micro(), 2, 0)).unwrap();
    assert!(plain.labels_onehot.is_none());
    assert!(plain.write_labels(gpu, &[0, 0]).is_err(), "unconditional model");
}

/// A second step gives the same gradients: zeroing works and nothing accumulates across steps
/// (the skip gradients' scratch buffers included, and with "edm" dx, which its backward first
/// overwrites and then adds the skip term to).
#[test]
fn gradients_do_not_leak_across_steps() {
    for precond in [Precond::Eps, Precond::Edm] {
        gradients_repeat(UNetConfig { precond, ..micro() });
    }
}

fn gradients_repeat(cfg: UNetConfig) {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let b = 2;
    let model = pollster::block_on(UNet::new(gpu, cfg.clone(), b, 4)).unwrap();
    let (x, t, dout) = inputs(&cfg, b);
    gpu.write(&model.x, &x);
    gpu.write(&model.t, &t);
    gpu.write(&model.dout, &dout);
    model.submit(gpu, true);
    let first = pollster::block_on(gpu.read(&model.params.grad)).unwrap();
    let first_dx = pollster::block_on(gpu.read(&model.dx)).unwrap();
    model.submit(gpu, true);
    assert_eq!(first, pollster::block_on(gpu.read(&model.params.grad)).unwrap());
    assert_eq!(first_dx, pollster::block_on(gpu.read(&model.dx)).unwrap());
}

/// The presets' parameter counts, at the scale of math.md §8 (a plain PyTorch re-implementation:
/// A 1.67 M, B 6.65 M).
#[test]
fn preset_sizes() {
    let count = |c: &UNetConfig| unet::layout(c).unwrap().count();
    let (tiny, compact, small) =
        (count(&UNetConfig::tiny()), count(&UNetConfig::compact()), count(&UNetConfig::small()));
    println!("parameters: tiny {tiny}, compact (spec A) {compact}, small (spec B) {small}");
    for (name, c) in [("tiny", UNetConfig::tiny()), ("compact", UNetConfig::compact()), ("small", UNetConfig::small())]
    {
        let (bytes, largest) = unet::memory_estimate(&c, 128).unwrap();
        println!("memory at B=128: {name} {:.1} MiB, largest buffer {:.1} MiB", mb(bytes), mb(largest));
    }
    assert!((1_500_000..=1_900_000).contains(&compact), "compact: {compact}");
    assert!((6_000_000..=7_500_000).contains(&small), "small: {small}");
    assert!(tiny < compact);
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Configs beside the presets, each valid for the attention layer at batch 1: 10 classes; 2
/// groups; 2 blocks per level with 2 heads; one input and two output channels with no blocks on
/// the way down; mult [1, 3] (24 channels, 6 groups); EDM's preconditioning.
fn odd_configs() -> Vec<UNetConfig> {
    vec![
        UNetConfig { num_classes: CLASSES, ..micro() },
        UNetConfig { norm_groups: 2, ..micro() },
        UNetConfig { blocks_per_level: 2, heads: 2, ..micro() },
        UNetConfig { in_channels: 1, out_channels: 2, blocks_per_level: 0, ..micro() },
        UNetConfig { mult: vec![1, 3], ..micro() },
        UNetConfig { precond: Precond::Edm, ..micro() },
    ]
}

/// The description's parameter count, computed from the block sizes alone, equals the layout
/// the layers register, in total (the presets' counts pinned: checkpoints have these shapes)
/// and block by block through the names (`{name}.*` of a ResBlock or an upsampling conv,
/// `{name}.attn*` of an attention block).
#[test]
fn description_counts_the_layout() {
    let presets = [(UNetConfig::tiny(), 188_627), (UNetConfig::compact(), 1_697_859), (UNetConfig::small(), 6_764_675)];
    let four_levels = UNetConfig {
        mult: vec![1, 3, 2, 1],
        blocks_per_level: 3,
        attn_resolutions: vec![16, 4],
        ..UNetConfig::compact()
    };
    let others = odd_configs().into_iter().chain([four_levels]).map(|c| {
        let n = unet::layout(&c).unwrap().count();
        (c, n)
    });
    for (cfg, want) in presets.into_iter().chain(others) {
        let d = Description::new(&cfg).unwrap();
        let shapes = unet::layout(&cfg).unwrap().shapes();
        assert_eq!(d.param_count(), want, "{cfg:?}");
        assert_eq!(shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(), want, "{cfg:?}");
        let numel = |prefix: &str| {
            shapes
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum::<usize>()
        };
        for b in &d.blocks {
            let prefix = match b {
                Block::Res { name, .. } | Block::Up { name, .. } => format!("{name}."),
                Block::Attn { name, .. } => format!("{name}.attn"),
                _ => continue,
            };
            assert_eq!(numel(&prefix), b.params(), "{b:?} of {cfg:?}");
        }
    }
}

/// Built on the GPU, every odd config and the tiny preset hold the description's parameters.
#[test]
fn built_model_holds_the_description_count() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    for cfg in odd_configs().into_iter().chain([UNetConfig::tiny()]) {
        let d = Description::new(&cfg).unwrap();
        let model = pollster::block_on(UNet::new(gpu, cfg.clone(), 1, 0)).unwrap();
        assert_eq!(model.param_count(), d.param_count(), "{cfg:?}");
        assert_eq!(model.params.value.len, model.params.layout.flat_len(), "{cfg:?}");
        assert_eq!((model.description(), model.flops()), (&d, d.flops()), "{cfg:?}");
    }
}

/// The FLOPs the launchers count from their shapes (`Dispatch::flops`, what `cdl bench` reports)
/// equal the description's count: the forward dispatches of a batch of 3 hold 3 times the
/// per-image count, and the backward twice the forward less the input gradients of the
/// products that read labels and noise features (emb.fc1 and the class embedding), which no
/// one needs. conv_in's input gradient is computed: it is the model's `dx`.
#[test]
fn dispatch_flops_equal_the_description_count() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    const BATCH: u64 = 3;
    for cfg in [micro(), UNetConfig { num_classes: CLASSES, ..micro() }, UNetConfig::tiny()] {
        let model = pollster::block_on(UNet::new(gpu, cfg.clone(), BATCH as usize, 0)).unwrap();
        let (fwd, bwd) = model.dispatches();
        let sum = |ds: &[cdl::gpu::Dispatch]| ds.iter().map(|d| d.flops()).sum::<u64>();
        assert_eq!(sum(fwd), BATCH * model.flops(), "{cfg:?}");
        // emb.fc1: channels -> E = 4 channels; the class embedding: classes -> E.
        let (ch, e) = (cfg.channels as u64, 4 * cfg.channels as u64);
        let no_dx = 2 * ch * e + 2 * cfg.num_classes as u64 * e;
        assert_eq!(sum(bwd), 2 * sum(fwd) - BATCH * no_dx, "{cfg:?}");
    }
}

/// FLOPs per image equal a hand count of the micro net (below), and change exactly as the
/// count says: the class embedding adds one K x E product; heads split the channels of the
/// attention products without changing their work. The presets: printed, and ordered.
#[test]
fn flops_match_a_hand_count() {
    // 2 x multiply-adds: a k x k convolution cin -> cout over r x r pixels; a Linear i -> o;
    // attention over c channels at r x r (1x1 qkv and proj; q^T k and v attn^T over T = r² tokens).
    let conv = |cin: u64, cout: u64, k: u64, r: u64| 2 * r * r * cin * cout * k * k;
    let lin = |i: u64, o: u64| 2 * i * o;
    let attn = |c: u64, r: u64| conv(c, 3 * c, 1, r) + conv(c, c, 1, r) + 2 * 2 * (r * r) * (r * r) * c;
    // A ResBlock: two 3x3 convolutions, the 1x1 skip when cin != cout, emb_scale and emb_shift (E = 32).
    let res = |cin: u64, cout: u64, r: u64| {
        let skip = if cin == cout { 0 } else { conv(cin, cout, 1, r) };
        conv(cin, cout, 3, r) + conv(cout, cout, 3, r) + skip + 2 * lin(32, cout)
    };
    // micro(): 8 px, 3 channels in and out, ch 8, E 32, mult [1, 2], 1 block, attention at 4.
    let want = lin(8, 32) + lin(32, 32) // emb.fc1, emb.fc2
        + conv(3, 8, 3, 8) // conv_in
        + res(8, 8, 8) // down.0.0
        + res(8, 16, 4) + attn(16, 4) // down.1.0, after the 2x2 pool
        + res(16, 16, 4) + attn(16, 4) + res(16, 16, 4) // mid
        + res(16 + 16, 16, 4) + attn(16, 4) // up.1.0: cat with down.1.0
        + res(16 + 8, 16, 4) + attn(16, 4) // up.1.1: cat with the pooled map
        + conv(16, 16, 3, 8) // up.1.conv, after the 2x upsample
        + res(16 + 8, 8, 8) // up.0.0: cat with down.0.0
        + res(8 + 8, 8, 8) // up.0.1: cat with conv_in's output
        + conv(8, 3, 3, 8); // conv_out
    let flops = |c: &UNetConfig| Description::new(c).unwrap().flops();
    assert_eq!(flops(&micro()), want);
    assert_eq!(flops(&UNetConfig { num_classes: CLASSES, ..micro() }), want + lin(CLASSES as u64, 32));
    assert_eq!(flops(&UNetConfig { heads: 2, ..micro() }), want);
    assert_eq!(flops(&UNetConfig { precond: Precond::Edm, ..micro() }), want);
    let (tiny, compact, small) =
        (flops(&UNetConfig::tiny()), flops(&UNetConfig::compact()), flops(&UNetConfig::small()));
    println!("forward GFLOPs per image: tiny {:.3}, compact {:.3}, small {:.3}", gf(tiny), gf(compact), gf(small));
    assert!(0 < tiny && tiny < compact && compact < small);
}

fn gf(flops: u64) -> f64 {
    flops as f64 / 1e9
}

/// Names follow the contract in `UNet`'s doc.
#[test]
fn parameter_names() {
    let names: Vec<String> = unet::layout(&micro()).unwrap().shapes().into_iter().map(|(n, _)| n).collect();
    for want in [
        "emb.fc1.weight",
        "emb.fc2.bias",
        "conv_in.weight",
        "down.0.0.res.conv1.weight",
        "down.1.0.res.skip.weight",
        "down.1.0.attn_norm.weight",
        "down.1.0.attn.qkv.weight",
        "mid.res0.norm1.weight",
        "mid.attn.proj.bias",
        "mid.res1.conv2.bias",
        "up.1.0.res.skip.weight",
        "up.1.1.attn.qkv.bias",
        "up.1.conv.weight",
        "up.0.1.res.conv2.weight",
        "norm_out.weight",
        "conv_out.bias",
    ] {
        assert!(names.iter().any(|n| n == want), "missing {want}");
    }
    assert!(!names.iter().any(|n| n.starts_with("up.0.conv")), "no upsampling after level 0");
    assert!(!names.iter().any(|n| n.starts_with("down.0.0.attn")), "no attention at 8 px");
}

/// Configs the attention layer cannot address are refused with its error, without a device:
/// the middle attention at 2 x 2 with 4 channels has (C / heads) T = 16, not a multiple of 64.
#[test]
fn refuses_unaligned_attention() {
    let cfg = UNetConfig {
        image_size: 4,
        in_channels: 3,
        out_channels: 3,
        channels: 4,
        mult: vec![1, 1],
        blocks_per_level: 1,
        attn_resolutions: vec![],
        heads: 1,
        num_classes: 0,
        norm_groups: 32,
        precond: Precond::Eps,
    };
    let err = unet::memory_estimate(&cfg, 2).unwrap_err();
    println!("refused: {err}");
    assert!(matches!(err, GpuError::Shape(ref m) if m.contains("attention")), "{err}");
    assert!(unet::layout(&UNetConfig { channels: 6, ..UNetConfig::tiny() }).is_err(), "6 channels");
    assert!(unet::layout(&UNetConfig { image_size: 10, mult: vec![1, 2, 2], ..UNetConfig::tiny() }).is_err());
    // min(3, 16 / 4) = 3 groups do not divide 16 channels; 0 groups is no config.
    let err = unet::layout(&UNetConfig { norm_groups: 3, ..UNetConfig::tiny() }).unwrap_err();
    assert!(err.to_string().contains("norm_groups 3"), "{err}");
    assert!(unet::layout(&UNetConfig { norm_groups: 0, ..UNetConfig::tiny() }).is_err());
    // "edm" adds the input to the output: the channel counts must agree.
    let err = unet::layout(&UNetConfig { out_channels: 6, precond: Precond::Edm, ..UNetConfig::tiny() }).unwrap_err();
    assert!(err.to_string().contains("in_channels 3 != out_channels 6"), "{err}");
    assert!(unet::layout(&UNetConfig { out_channels: 6, ..UNetConfig::tiny() }).is_ok());
}

/// A config whose largest buffer exceeds the device's storage binding limit is refused before
/// anything is allocated: attention at 128 x 128 (scores (B, 1, T, T) with T = 16384).
#[test]
fn refuses_oversize_config() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let cfg = UNetConfig { image_size: 128, attn_resolutions: vec![128], ..UNetConfig::tiny() };
    let err = pollster::block_on(UNet::new(gpu, cfg, 8, 0)).unwrap_err();
    println!("refused: {err}");
    assert!(matches!(err, GpuError::TooLarge { .. }), "{err}");
}
