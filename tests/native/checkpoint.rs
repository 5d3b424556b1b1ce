//! Checkpoints (src/train/checkpoint.rs): bit-exact round trips, the compatibility check, decoding
//! of crafted untrusted bytes (every rejection is a one-line error, never a panic), and, natively,
//! atomic saves that leave the previous checkpoint intact when they fail.

use cdl::train::checkpoint::{
    decode, encode, Checkpoint, CheckpointError, FORMAT_VERSION, MAX_HEADER_BYTES, RESERVED_KEY_PREFIX,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Bit patterns that a float round trip most easily breaks.
const SPECIAL_BITS: [u32; 14] = [
    0x7fc0_0000, // quiet NaN
    0x7fc0_1234, // quiet NaN with payload
    0xffc0_0001, // negative quiet NaN with payload
    0x7f80_0001, // signalling NaN
    0xff80_0abc, // negative signalling NaN with payload
    0x8000_0000, // -0.0
    0x0000_0000, // +0.0
    0x0000_0001, // smallest positive subnormal
    0x807f_ffff, // largest negative subnormal
    0x0080_0000, // smallest positive normal
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x7f7f_ffff, // f32::MAX
    0x3f80_0001, // 1 + ulp
];

fn special_values() -> Vec<f32> {
    SPECIAL_BITS.iter().map(|&b| f32::from_bits(b)).collect()
}

fn bits(data: &[f32]) -> Vec<u32> {
    data.iter().map(|x| x.to_bits()).collect()
}

/// A checkpoint with awkward values and names in every group of the naming convention.
fn sample() -> Checkpoint {
    let mut c = Checkpoint::new("unet", "{\"channels\": [16, 32],\n \"name\": \"ünïcödé \\\"q\\\"\"}", u64::MAX);
    c.extra.insert("seed".into(), "42".into());
    c.extra.insert("note".into(), "line one\nline two".into());
    c.extra.insert(String::new(), "empty key".into());
    c.insert("model.down.0.conv1.weight", vec![2, 7], special_values()).unwrap();
    c.insert("model.down.0.conv1.bias", vec![0], vec![]).unwrap();
    c.insert("model.empty", vec![3, 0, 5], vec![]).unwrap();
    c.insert("model.scale", vec![], vec![-0.0]).unwrap();
    c.insert("ema.down.0.conv1.weight", vec![14], special_values()).unwrap();
    c.insert("optim.m.down.0.conv1.weight", vec![2, 7], vec![1e-40; 14]).unwrap();
    c.insert("optim.v.down.0.conv1.weight", vec![2, 7], vec![f32::MIN_POSITIVE / 4.0; 14]).unwrap();
    c
}

fn assert_bit_identical(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.arch, b.arch);
    assert_eq!(a.model_config, b.model_config);
    assert_eq!(a.step, b.step);
    assert_eq!(a.extra, b.extra);
    assert_eq!(a.len(), b.len());
    for (ta, tb) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(ta.name, tb.name);
        assert_eq!(ta.shape, tb.shape, "{}", ta.name);
        assert_eq!(bits(&ta.data), bits(&tb.data), "{}", ta.name);
    }
}

/// A safetensors byte string: 8-byte little-endian header length, header, payload.
fn st(header: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The `__metadata__` entry of a valid CDL header.
const META: &str =
    r#""__metadata__":{"cdl.format_version":"1","cdl.arch":"mlp","cdl.step":"3","cdl.model_config":"{}"}"#;

/// Decodes bytes that must be rejected; returns the message after checking it is one line and
/// contains `needle`.
fn rejected(bytes: &[u8], needle: &str) -> String {
    let err = decode(bytes).expect_err("crafted bytes must be rejected");
    let msg = err.to_string();
    assert!(!msg.contains('\n') && !msg.contains('\r'), "multi-line message: {msg:?}");
    assert!(msg.contains(needle), "message {msg:?} should contain {needle:?}");
    assert!(matches!(err, CheckpointError::Format(_)), "{err:?}");
    msg
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// encode -> decode keeps every bit: NaN payloads, -0.0, subnormals, infinities, empty and scalar
/// tensors, metadata with newlines, quotes and non-ASCII, step u64::MAX. (The codec keeps NaN;
/// `check_finite`, which `save` and `load` call, is what refuses it.)
#[test]
fn round_trip_is_bit_exact() {
    let c = sample();
    let back = decode(&encode(&c).unwrap()).unwrap();
    assert_bit_identical(&c, &back);
    assert_eq!(back.format_version(), FORMAT_VERSION);
    assert_eq!(back.get("model.empty").unwrap().shape, vec![3, 0, 5]);
    assert_eq!(back.get("model.scale").unwrap().shape, Vec::<usize>::new());
}

/// Hundreds of tensors of varied sizes survive, in name order, and re-encoding decodes the same.
#[test]
fn round_trip_many_tensors_in_name_order() {
    let mut c = Checkpoint::new("mlp", "", 7);
    // Inserted in model order, which is not name order (10 sorts before 2).
    for i in 0..300usize {
        let n = i % 17;
        let data: Vec<f32> = (0..n).map(|j| f32::from_bits((i * 1_000_003 + j * 7919) as u32)).collect();
        c.insert(format!("model.layers.{i}.weight"), vec![n], data).unwrap();
    }
    let names: Vec<&str> = c.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tensors() is sorted by name");

    let back = decode(&encode(&c).unwrap()).unwrap();
    assert_bit_identical(&c, &back);
    let again = decode(&encode(&back).unwrap()).unwrap();
    assert_bit_identical(&c, &again);
    assert_eq!(back.shapes(), c.shapes());
}

/// A checkpoint with no tensors and no extra entries is valid too.
#[test]
fn round_trip_empty_checkpoint() {
    let c = Checkpoint::new("mlp", "", 0);
    let back = decode(&encode(&c).unwrap()).unwrap();
    assert!(back.is_empty());
    assert_bit_identical(&c, &back);
}

// ---------------------------------------------------------------------------------------------
// Building and encoding

/// insert refuses duplicates, shape/data mismatches, overflowing shapes and reserved names; encode
/// refuses extra keys in the reserved namespace. Messages are one line and name the tensor or key.
#[test]
fn invalid_contents_are_refused() {
    let mut c = Checkpoint::new("mlp", "", 0);
    c.insert("model.w", vec![2], vec![1.0, 2.0]).unwrap();
    let cases = [
        (c.clone().insert("model.w", vec![1], vec![0.0]), "duplicate tensor \"model.w\""),
        (c.clone().insert("model.b", vec![2, 3], vec![0.0; 5]), "shape [2, 3] holds 6 values but 5 were given"),
        (c.clone().insert("model.s", vec![], vec![]), "holds 1 values but 0 were given"),
        (c.clone().insert("model.o", vec![usize::MAX, 2], vec![]), "overflows"),
        (c.clone().insert("", vec![0], vec![]), "empty"),
        (c.clone().insert("__metadata__", vec![0], vec![]), "reserved"),
    ];
    for (result, needle) in cases {
        let msg = result.unwrap_err().to_string();
        assert!(msg.contains(needle) && !msg.contains('\n'), "{msg:?} should contain {needle:?}");
    }
    assert_eq!(c.len(), 1, "failed inserts leave the checkpoint unchanged");

    let mut bad = c.clone();
    bad.extra.insert(format!("{RESERVED_KEY_PREFIX}seed"), "1".into());
    let msg = encode(&bad).unwrap_err().to_string();
    assert!(msg.contains("\"cdl.seed\"") && msg.contains("reserved"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Compatibility

fn expected_mlp() -> Vec<(String, Vec<usize>)> {
    vec![
        ("model.l0.weight".into(), vec![4, 2]),
        ("model.l0.bias".into(), vec![4]),
        ("model.l1.weight".into(), vec![2, 4]),
    ]
}

fn mlp_checkpoint() -> Checkpoint {
    let mut c = Checkpoint::new("mlp", "{}", 10);
    for (name, shape) in expected_mlp() {
        let n = shape.iter().product();
        c.insert(name, shape, vec![0.5; n]).unwrap();
    }
    c
}

fn incompatible(c: &Checkpoint, arch: &str, expected: &[(String, Vec<usize>)]) -> String {
    let err = c.check_compatible(arch, expected).unwrap_err();
    assert!(matches!(err, CheckpointError::Incompatible(_)), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg:?}");
    msg
}

/// A matching checkpoint passes; each kind of mismatch is named, with both shapes where they
/// differ; the architecture is checked first, then `expected` in the caller's order, then extras.
#[test]
fn check_compatible_names_the_first_mismatch() {
    let c = mlp_checkpoint();
    let exp = expected_mlp();
    c.check_compatible("mlp", &exp).unwrap();
    // Borrowed forms work too.
    c.check_compatible(
        "mlp",
        &[("model.l0.weight", &[4usize, 2][..]), ("model.l0.bias", &[4]), ("model.l1.weight", &[2, 4])],
    )
    .unwrap();

    assert_eq!(incompatible(&c, "unet", &exp), "incompatible checkpoint: architecture is \"mlp\", expected \"unet\"");

    let mut missing = exp.clone();
    missing.push(("model.l1.bias".into(), vec![2]));
    assert_eq!(
        incompatible(&c, "mlp", &missing),
        "incompatible checkpoint: missing tensor \"model.l1.bias\" (expected shape [2])"
    );

    let mut reshaped = exp.clone();
    reshaped[1].1 = vec![5];
    assert_eq!(
        incompatible(&c, "mlp", &reshaped),
        "incompatible checkpoint: tensor \"model.l0.bias\" has shape [4], expected [5]"
    );

    let fewer = exp[..2].to_vec();
    assert_eq!(
        incompatible(&c, "mlp", &fewer),
        "incompatible checkpoint: unexpected tensor \"model.l1.weight\" (shape [2, 4])"
    );

    // Several mismatches: the first in the caller's order is named, the rest counted.
    let mut many = vec![("model.zzz".to_string(), vec![1])];
    many.extend(reshaped[..2].iter().cloned());
    assert_eq!(
        incompatible(&c, "mlp", &many),
        "incompatible checkpoint: missing tensor \"model.zzz\" (expected shape [1]) (and 2 more mismatches)"
    );

    // The architecture outranks tensor mismatches.
    assert!(incompatible(&c, "unet", &many).contains("architecture"));
}

// ---------------------------------------------------------------------------------------------
// Crafted untrusted bytes

/// Files cut short or with an impossible header length are rejected before anything is parsed.
#[test]
fn rejects_truncated_and_oversized_header_lengths() {
    rejected(&[], "truncated: 0 bytes");
    rejected(&[1, 0, 0], "truncated: 3 bytes");
    // Header length larger than the file.
    rejected(&st("{}", b"")[..9], "exceeds the 1 bytes that follow");
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}");
    rejected(&long, "header length 1000 exceeds the 2 bytes");
    // Header length above the fixed bound, whatever the file size (checked before allocating).
    for n in [MAX_HEADER_BYTES + 1, u64::MAX / 2, u64::MAX] {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        rejected(&bytes, &format!("header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes"));
    }
    rejected(&st("", b""), "too small");
}

/// Headers that are not JSON objects, or not UTF-8, are rejected with the parser's reason.
#[test]
fn rejects_corrupt_headers() {
    rejected(&st("{\"a\":", b""), "not valid JSON");
    rejected(&st("[1, 2]", b""), "not a JSON object");
    let mut not_utf8 = st("{\"\u{e9}\":1}", b"");
    not_utf8[10] = 0xff;
    rejected(&not_utf8, "not valid JSON");
    rejected(&st(r#"{"__metadata__":{"cdl.step":3}}"#, b""), "__metadata__ is not an object of strings");
    rejected(&st(r#"{"w":5}"#, b""), "tensor \"w\": missing or non-string dtype");
}

// ---------------------------------------------------------------------------------------------
// F16 tensors

/// F16 bit patterns: zeros, subnormals, normals, the largest finite, infinities and NaNs (quiet,
/// signalling, with payloads, negative), each with the f32 it is exactly.
const F16_CASES: [(u16, u32); 14] = [
    (0x0000, 0x0000_0000), // +0
    (0x8000, 0x8000_0000), // -0
    (0x0001, 0x3380_0000), // smallest subnormal, 2^-24
    (0x03ff, 0x387f_c000), // largest subnormal, 1023 * 2^-24
    (0x0400, 0x3880_0000), // smallest normal, 2^-14
    (0x3c00, 0x3f80_0000), // 1
    (0x3c01, 0x3f80_2000), // 1 + 2^-10
    (0xc000, 0xc000_0000), // -2
    (0x7bff, 0x477f_e000), // 65504, the largest finite
    (0x7c00, 0x7f80_0000), // +inf
    (0xfc00, 0xff80_0000), // -inf
    (0x7e00, 0x7fc0_0000), // quiet NaN
    (0x7c01, 0x7f80_2000), // signalling NaN, payload 1
    (0xfe3f, 0xffc7_e000), // negative quiet NaN with payload
];

/// An F16 tensor decodes to exactly the f32 of each bit pattern (NaN payloads and signalling
/// NaNs included) and is marked F16.
#[test]
fn f16_values_are_widened_exactly() {
    let payload: Vec<u8> = F16_CASES.iter().flat_map(|(h, _)| h.to_le_bytes()).collect();
    let header =
        format!(r#"{{{META},"model.w":{{"dtype":"F16","shape":[2,7],"data_offsets":[0,{}]}}}}"#, payload.len());
    let c = decode(&st(&header, &payload)).unwrap();
    let w = c.get("model.w").unwrap();
    assert_eq!(w.shape, [2, 7]);
    assert_eq!(bits(&w.data), F16_CASES.iter().map(|(_, f)| *f).collect::<Vec<_>>());
    assert!(c.is_f16("model.w"));
}

/// Tensors chosen with `store_f16` are written as F16 (half the bytes), rounded to the nearest
/// with ties to even; decoding gives the rounded values, marked F16, and encoding that again gives
/// the same bytes. The other tensors stay F32 bit for bit.
#[test]
fn f16_round_trip_rounds_to_nearest_even() {
    let mut c = Checkpoint::new("mlp", "{}", 9);
    // (f32 in, f16 bits out): exact values, a tie rounded down to even, a tie rounded up to even,
    // just above a tie, below half the smallest subnormal (to 0), the top of the range.
    let cases: [(f32, u16); 7] = [
        (1.5, 0x3e00),
        (1.0 + 2f32.powi(-11), 0x3c00),
        (1.0 + 3.0 * 2f32.powi(-11), 0x3c02),
        (1.0 + 2f32.powi(-11) + 2f32.powi(-20), 0x3c01),
        (2f32.powi(-26), 0x0000),
        (65519.0, 0x7bff),
        (-0.0, 0x8000),
    ];
    let (values, want): (Vec<f32>, Vec<u16>) = cases.iter().copied().unzip();
    c.insert("model.w", vec![7], values.clone()).unwrap();
    c.insert("optim.m.w", vec![7], values.clone()).unwrap();
    c.store_f16("model.w").unwrap();
    assert!(c.store_f16("model.missing").is_err());
    let bytes = encode(&c).unwrap();
    let all_f32 = {
        let mut plain = Checkpoint::new("mlp", "{}", 9);
        plain.insert("model.w", vec![7], values.clone()).unwrap();
        plain.insert("optim.m.w", vec![7], values.clone()).unwrap();
        encode(&plain).unwrap()
    };
    assert_eq!(all_f32.len() - bytes.len(), 7 * 2, "an F16 tensor takes half the bytes");
    let back = decode(&bytes).unwrap();
    assert!(back.is_f16("model.w") && !back.is_f16("optim.m.w"));
    let widened: Vec<f32> = want.iter().map(|&h| half::f16::from_bits(h).to_f32()).collect();
    assert_eq!(bits(&back.get("model.w").unwrap().data), bits(&widened));
    assert_eq!(bits(&back.get("optim.m.w").unwrap().data), bits(&values));
    // round_f16 gives in memory what the file holds.
    let mut rounded = c.clone();
    rounded.round_f16().unwrap();
    assert_eq!(bits(&rounded.get("model.w").unwrap().data), bits(&widened));
    // The decoded checkpoint encodes to the same bytes, NaNs of every kind included.
    assert_eq!(encode(&back).unwrap().len(), bytes.len());
    assert_bit_identical(&decode(&encode(&back).unwrap()).unwrap(), &back);
    let payload: Vec<u8> = F16_CASES.iter().flat_map(|(h, _)| h.to_le_bytes()).collect();
    let header = format!(r#"{{{META},"model.w":{{"dtype":"F16","shape":[14],"data_offsets":[0,28]}}}}"#);
    let specials = decode(&st(&header, &payload)).unwrap();
    assert_bit_identical(&decode(&encode(&specials).unwrap()).unwrap(), &specials);
}

/// A finite value beyond F16's range is refused with one line naming the tensor and the index
/// (an infinity is stored as one).
#[test]
fn f16_overflow_is_refused() {
    let mut c = Checkpoint::new("mlp", "{}", 1);
    c.insert("ema.w", vec![3], vec![1.0, f32::INFINITY, 65520.0]).unwrap();
    c.store_f16("ema.w").unwrap();
    let msg = encode(&c).unwrap_err().to_string();
    assert!(msg.contains("\"ema.w\" at index 2") && msg.contains("F16 range") && !msg.contains('\n'), "{msg}");
    assert!(c.round_f16().unwrap_err().to_string().contains("index 2"));
}

/// An F16 entry whose byte span is not shape × 2 is refused, as F32's is for shape × 4.
#[test]
fn f16_span_mismatch_is_refused() {
    let t = |shape: &str, offsets: &str| {
        format!(r#"{{{META},"model.w":{{"dtype":"F16","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    rejected(&st(&t("[3]", "[0,8]"), &[0; 8]), "shape [3] in F16 does not fill data_offsets [0, 8]");
    // F32's span of the same shape is twice F16's.
    rejected(&st(&t("[4]", "[0,16]"), &[0; 16]), "shape [4] in F16 does not fill");
    rejected(&st(&t("[2]", "[0,8]"), &[0; 4]), "data_offsets [0, 8] do not fit the 4 data bytes");
    assert!(decode(&st(&t("[4]", "[0,8]"), &[0; 8])).is_ok());
}

/// Only F32 and F16 tensors are accepted; the message names the tensor and its dtype.
#[test]
fn rejects_other_dtypes() {
    for (dtype, bytes) in [("BF16", 2), ("F64", 8), ("I32", 4), ("U8", 1), ("BOOL", 1)] {
        let header =
            format!(r#"{{{META},"model.w":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,{}]}}}}"#, 2 * bytes);
        let msg =
            rejected(&st(&header, &vec![0u8; 2 * bytes]), &format!("dtype {dtype}, only F32 and F16 are supported"));
        assert!(msg.contains("\"model.w\""), "{msg}");
    }
}

/// Shapes that do not fill their byte span, spans outside the file, gaps, overlaps, trailing bytes
/// and offsets crafted to overflow the size arithmetic are all rejected.
#[test]
fn rejects_shape_and_offset_mismatches() {
    let t = |shape: &str, offsets: &str| {
        format!(r#"{{{META},"model.w":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    rejected(&st(&t("[3]", "[0,8]"), &[0; 8]), "shape [3] in F32 does not fill data_offsets [0, 8]");
    rejected(&st(&t("[2,2]", "[0,8]"), &[0; 8]), "shape [2, 2] in F32 does not fill");
    rejected(&st(&t("[2]", "[0,8]"), &[0; 4]), "data_offsets [0, 8] do not fit the 4 data bytes");
    rejected(&st(&t("[2]", "[8,0]"), &[0; 8]), "data_offsets [8, 0] do not fit");
    rejected(&st(&t("[-2]", "[0,8]"), &[0; 8]), "not a list of non-negative integers");
    rejected(&st(&t("[2]", "[0]"), &[0; 8]), "not two non-negative integers");
    rejected(&st(&t("[4611686018427387904,4]", "[0,0]"), &[]), "does not fill");
    // Gap before the first tensor, and bytes no tensor covers.
    rejected(&st(&t("[1]", "[4,8]"), &[0; 8]), "invalid safetensors layout");
    rejected(&st(&t("[2]", "[0,8]"), &[0; 12]), "invalid safetensors layout");
    // Overlapping tensors.
    let overlap = format!(
        r#"{{{META},"a":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}},"b":{{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}}}"#
    );
    rejected(&st(&overlap, &[0; 12]), "invalid safetensors layout");
    // Eight contiguous tensors of 2^61 - 4 bytes end at u64::MAX - 31: safetensors 0.8.0 adds the
    // header length to that end offset and panics on the overflow (debug builds); we must not.
    let mut huge = format!("{{{META}");
    let numel = (1u64 << 59) - 1;
    for i in 0..8u64 {
        let (s, e) = (i * numel * 4, (i + 1) * numel * 4);
        huge.push_str(&format!(r#","t{i}":{{"dtype":"F32","shape":[{numel}],"data_offsets":[{s},{e}]}}"#));
    }
    huge.push('}');
    rejected(&st(&huge, &[0; 16]), "do not fit the 16 data bytes");
}

/// Valid safetensors that are not CDL checkpoints, or carry bad CDL metadata, are rejected.
#[test]
fn rejects_missing_or_bad_metadata() {
    let w = r#""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let with = |meta: &str| st(&format!("{{\"__metadata__\":{{{meta}}},{w}}}"), &[0; 4]);
    rejected(&st(&format!("{{{w}}}"), &[0; 4]), "no __metadata__");
    rejected(&with(r#""format":"pt""#), "missing metadata key \"cdl.format_version\"");
    let base = r#""cdl.arch":"mlp","cdl.step":"1","cdl.model_config":"""#;
    rejected(&with(&format!(r#""cdl.format_version":"2",{base}"#)), "format version 2 is newer");
    rejected(&with(&format!(r#""cdl.format_version":"0",{base}"#)), "\"0\" is not a positive integer");
    rejected(&with(&format!(r#""cdl.format_version":"v1",{base}"#)), "\"v1\" is not a positive integer");
    rejected(&with(r#""cdl.format_version":"1","cdl.step":"1","cdl.model_config":"""#), "\"cdl.arch\"");
    rejected(
        &with(r#""cdl.format_version":"1","cdl.arch":"mlp","cdl.step":"-1","cdl.model_config":"""#),
        "step \"-1\"",
    );
    rejected(&with(&format!(r#""cdl.format_version":"1",{base},"cdl.future":"x""#)), "unknown reserved metadata key");
    // Foreign keys are kept as extra entries.
    let ok = decode(&with(&format!(r#""cdl.format_version":"1",{base},"format":"pt""#))).unwrap();
    assert_eq!(ok.extra.get("format").map(String::as_str), Some("pt"));
    assert_eq!(ok.get("w").unwrap().data, vec![0.0]);
}

/// Control characters from a file never break the one-line rule.
#[test]
fn messages_from_hostile_names_stay_on_one_line() {
    let header = format!(r#"{{{META},"evil\nname\r":{{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}}}"#);
    let msg = rejected(&st(&header, &[0]), "dtype I8");
    assert!(msg.contains("evil\\nname\\r"), "{msg}");
}

/// Every prefix of a valid file, and every single-byte corruption of its header, decodes to an
/// error or a checkpoint, never a panic.
#[test]
fn truncations_and_bit_flips_never_panic() {
    let mut c = Checkpoint::new("mlp", "{}", 1);
    c.insert("model.a", vec![2], vec![1.0, -0.0]).unwrap();
    c.insert("model.b", vec![1, 1], vec![f32::NAN]).unwrap();
    let bytes = encode(&c).unwrap();
    for len in 0..bytes.len() {
        let msg = decode(&bytes[..len]).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
    }
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..header_end {
        for flip in [0x01u8, 0x20, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            if let Err(e) = decode(&bad) {
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }
}

/// `check_finite` names the first tensor (in name order) holding NaN, inf or -inf, its first bad
/// flat index and the count over the whole checkpoint, on one line; a finite checkpoint passes,
/// subnormals, -0.0 and f32::MAX included.
#[test]
fn check_finite_names_the_tensor_and_the_first_bad_index() {
    let with = |name: &str, data: Vec<f32>| {
        let mut c = Checkpoint::new("mlp", "{}", 1);
        c.insert("model.a", vec![3], vec![1.0, -0.0, f32::MAX]).unwrap();
        c.insert("optim.v.a", vec![2], vec![1e-45, f32::MIN_POSITIVE]).unwrap();
        let n = data.len();
        c.insert(name, vec![n / 2, 2], data).unwrap();
        c
    };
    assert!(with("model.b", vec![0.5; 4]).check_finite().is_ok());
    let cases = [
        ("model.b", vec![0.0, 1.0, 2.0, f32::NAN], "tensor \"model.b\" holds NaN at index 3"),
        ("ema.w\nx", vec![f32::INFINITY, 0.0], "tensor \"ema.w\\nx\" holds inf at index 0"),
        (
            "optim.m.b",
            vec![0.0, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0xff80_0abc)],
            "tensor \"optim.m.b\" holds -inf at index 1 (3 non-finite values in all)",
        ),
    ];
    for (name, data, want) in cases {
        let err = with(name, data).check_finite().unwrap_err();
        assert!(matches!(err, CheckpointError::NonFinite(_)), "{err:?}");
        assert_eq!(err.to_string(), want);
    }
}

// ---------------------------------------------------------------------------------------------
// Files (native only)

#[cfg(not(target_arch = "wasm32"))]
mod files {
    use super::*;
    use cdl::train::checkpoint::{load, save, write_atomic};
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use crate::common::dirs::TestDir;

    /// The names in `dir`, sorted.
    fn entries(dir: &TestDir) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// `finite_sample()` saved as ckpt.safetensors in a new directory.
    fn saved_sample(tag: &str) -> (TestDir, PathBuf, Checkpoint) {
        let dir = TestDir::new(tag);
        let path = dir.path("ckpt.safetensors");
        let a = finite_sample();
        save(&path, &a).unwrap();
        (dir, path, a)
    }

    fn one_line_naming(err: &CheckpointError, path: &Path) -> String {
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(msg.contains(&path.display().to_string()), "{msg:?} should name {}", path.display());
        msg
    }

    /// `sample()` with every non-finite value replaced by -f32::MAX: what `save` accepts.
    fn finite_sample() -> Checkpoint {
        let s = sample();
        let mut c = Checkpoint::new(s.arch.clone(), s.model_config.clone(), s.step);
        c.extra = s.extra.clone();
        for t in s.into_tensors() {
            let data = t.data.iter().map(|&v| if v.is_finite() { v } else { -f32::MAX }).collect();
            c.insert(t.name, t.shape, data).unwrap();
        }
        c
    }

    /// A checkpoint holding NaN, written as plain bytes (`save` refuses it): `load` refuses it
    /// with one line naming the file, the tensor and the index, while `decode` still reads it;
    /// `save` refuses to replace a good checkpoint with it and leaves no temporary file.
    #[test]
    fn load_and_save_refuse_non_finite_tensors() {
        let dir = TestDir::new("non-finite");
        let good = dir.0.join("good.safetensors");
        save(&good, &checkpoint_b()).unwrap();
        let before = std::fs::read(&good).unwrap();
        let mut bad = checkpoint_b();
        bad.insert("model.y", vec![2, 2], vec![0.0, 1.0, f32::NAN, 2.0]).unwrap();
        let path = dir.0.join("bad.safetensors");
        std::fs::write(&path, encode(&bad).unwrap()).unwrap();
        let read = decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(bits(&read.get("model.y").unwrap().data), bits(&bad.get("model.y").unwrap().data));
        let msg = one_line_naming(&load(&path).unwrap_err(), &path);
        assert!(msg.ends_with(": tensor \"model.y\" holds NaN at index 2"), "{msg}");
        let msg = one_line_naming(&save(&good, &bad).unwrap_err(), &good);
        assert!(msg.contains("holds NaN at index 2"), "{msg}");
        assert_eq!(std::fs::read(&good).unwrap(), before);
        assert_eq!(entries(&dir), vec!["bad.safetensors".to_string(), "good.safetensors".to_string()]);
    }

    fn checkpoint_b() -> Checkpoint {
        let mut b = Checkpoint::new("unet", "{}", 99);
        b.insert("model.x", vec![3], vec![7.0, 8.0, 9.0]).unwrap();
        b
    }

    /// save -> load keeps every bit, and a second save replaces the first; no temporary file stays.
    #[test]
    fn save_load_round_trip_and_overwrite() {
        let (dir, path, a) = saved_sample("roundtrip");
        assert_bit_identical(&a, &load(&path).unwrap());
        // The file is plain safetensors: the bytes are exactly what encode produced, up to the
        // order of metadata keys, so compare lengths and the decoded content.
        assert_eq!(std::fs::read(&path).unwrap().len(), encode(&a).unwrap().len());

        let b = checkpoint_b();
        save(&path, &b).unwrap();
        assert_bit_identical(&b, &load(&path).unwrap());
        assert_eq!(entries(&dir), vec!["ckpt.safetensors".to_string()]);
    }

    /// A save whose writer fails midway (after writing half of B) leaves A intact and loadable,
    /// leaves no temporary file, and reports one line naming the target path. Same for a panic
    /// inside the writer and for a checkpoint that fails to encode.
    #[test]
    fn failed_save_keeps_previous_checkpoint() {
        let (dir, path, a) = saved_sample("atomic");
        let a_bytes = std::fs::read(&path).unwrap();

        let b_bytes = encode(&checkpoint_b()).unwrap();
        let err = write_atomic(&path, |f| {
            f.write_all(&b_bytes[..b_bytes.len() / 2])?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        let msg = one_line_naming(&err, &path);
        assert!(msg.starts_with("cannot write ") && msg.ends_with(": disk on fire"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), a_bytes);
        assert_bit_identical(&a, &load(&path).unwrap());
        assert_eq!(entries(&dir), vec!["ckpt.safetensors".to_string()]);

        let panicked = std::panic::catch_unwind(|| {
            let _ = write_atomic(&path, |f| {
                f.write_all(b"partial")?;
                panic!("writer panicked");
            });
        });
        assert!(panicked.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), a_bytes);
        assert_eq!(entries(&dir), vec!["ckpt.safetensors".to_string()]);

        let mut unencodable = checkpoint_b();
        unencodable.extra.insert("cdl.x".into(), String::new());
        let err = save(&path, &unencodable).unwrap_err();
        let msg = one_line_naming(&err, &path);
        assert!(msg.contains("reserved"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), a_bytes);
        assert_eq!(entries(&dir), vec!["ckpt.safetensors".to_string()]);
    }

    /// Saving where no file can be created gives one line naming the path: a missing directory,
    /// a "directory" that is a regular file, and (when not running as root, which ignores
    /// permissions) a read-only directory, where the previous checkpoint also survives.
    #[test]
    fn unwritable_directory_is_reported() {
        let dir = TestDir::new("unwritable");
        let c = checkpoint_b();

        let missing = dir.0.join("no-such-dir").join("ckpt.safetensors");
        let msg = one_line_naming(&save(&missing, &c).unwrap_err(), &missing);
        assert!(msg.starts_with("cannot create a temporary file to write "), "{msg}");

        let file = dir.0.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("ckpt.safetensors");
        one_line_naming(&save(&under_file, &c).unwrap_err(), &under_file);

        let ro = dir.0.join("read-only");
        std::fs::create_dir(&ro).unwrap();
        let path = ro.join("ckpt.safetensors");
        save(&path, &finite_sample()).unwrap();
        let before = std::fs::read(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            let root = std::fs::write(ro.join("probe"), b"").is_ok();
            if !root {
                one_line_naming(&save(&path, &c).unwrap_err(), &path);
                assert_eq!(std::fs::read(&path).unwrap(), before);
            }
            let _ = std::fs::remove_file(ro.join("probe"));
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(&ro).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt.safetensors")]);
    }

    /// load names the path in every error: missing file, truncated file, header length beyond the
    /// file or the bound (rejected before the file is read), wrong dtype, and a directory.
    #[test]
    fn load_errors_name_the_path() {
        let dir = TestDir::new("load");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("short", vec![1, 2, 3], "truncated: 3 bytes"),
            ("long-header", st("{}", b"")[..9].to_vec(), "exceeds the 1 bytes that follow"),
            ("huge-header", [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat(), "exceeds the limit"),
            (
                "f64",
                st(&format!(r#"{{{META},"w":{{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}}}"#), &[0; 8]),
                "dtype F64, only F32 and F16",
            ),
        ];
        for (name, bytes, needle) in cases {
            let path = dir.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = load(&path).unwrap_err();
            let msg = one_line_naming(&err, &path);
            assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
            assert!(matches!(err, CheckpointError::InFile { .. }), "{err:?}");
        }

        let missing = dir.0.join("missing.safetensors");
        let msg = one_line_naming(&load(&missing).unwrap_err(), &missing);
        assert!(msg.starts_with("cannot open "), "{msg}");

        let msg = one_line_naming(&load(&dir.0).unwrap_err(), &dir.0);
        assert!(msg.starts_with("cannot read ") || msg.contains("truncated"), "{msg}");
    }
}
