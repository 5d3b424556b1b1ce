//! Property tests of every reader of untrusted bytes, the stable twin of the fuzz targets in
//! `fuzz/` (docs/fuzzing.md): the same target functions (`fuzz/src/lib.rs`) get random bytes and
//! mutations of valid inputs (truncated, bytes flipped, spans spliced, huge declared sizes) and
//! must give a value or one one-line error, never panic, and stay within the reader's allocation
//! bound, measured per call by the counting allocator that file installs.
//!
//! Case counts are bounded so the file runs in well under a minute in release. Failing cases are
//! not persisted to a file (`failure_persistence: None`): proptest prints the shrunk input, and a
//! real finding becomes a test in tests/native/fuzz_regressions.rs with its input in
//! tests/fuzz-regressions/. `CDL_WRITE_FUZZ_SEEDS=1` makes `fuzz_seeds_are_accepted_inputs`
//! rewrite the fuzz corpus seeds (fuzz/seeds/) from the builders below.

use crate::contract;

use std::path::{Path, PathBuf};

use cdl::train::checkpoint::{self, Checkpoint};
use cdl::train::cifar::{Split, TEST_FILE, TRAIN_FILES};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------------
// Valid inputs (also the fuzz corpus seeds)

/// A small checkpoint of every tensor kind: matrix, scalar, empty, with extra metadata.
fn seed_checkpoint() -> Vec<u8> {
    let mut ck = Checkpoint::new("mlp", r#"{"width":4,"blocks":1}"#, 7);
    ck.extra.insert("seed".into(), "1".into());
    ck.insert("model.w", vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, 1e-3, 3.5]).unwrap();
    ck.insert("ema.w", vec![2, 3], vec![0.25; 6]).unwrap();
    ck.insert("model.s", vec![], vec![1.0]).unwrap();
    ck.insert("optim.m.e", vec![0, 4], vec![]).unwrap();
    checkpoint::encode(&ck).unwrap()
}

/// A shipped file (`cdl export`): F16 weights and preview beside an F32 tensor, with the
/// preview's metadata.
fn seed_checkpoint_f16() -> Vec<u8> {
    let mut ck = Checkpoint::new("mlp", r#"{"width":4,"blocks":1}"#, 7);
    ck.extra.insert("preview".into(), r#"{"n":2}"#.into());
    ck.insert("model.w", vec![2], vec![0.5, -1.25]).unwrap();
    ck.insert("ema.w", vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, -0.0, 65504.0]).unwrap();
    ck.insert("preview.samples", vec![2, 2], vec![0.1, 0.2, -0.3, 1.5]).unwrap();
    ck.store_f16("ema.w").unwrap();
    ck.store_f16("preview.samples").unwrap();
    checkpoint::encode(&ck).unwrap()
}

fn seeds_csv() -> Vec<Vec<u8>> {
    ["x,y\n1,2\n-3.5,4e2\n", "1,2\r\n3,4\r\n\r\n5,.5\n", "id,Y,X\n0,1,2\n1,\"3\",4\n"]
        .map(|s| s.as_bytes().to_vec())
        .to_vec()
}

/// A batch of `n` records, label r % 10, pixels a pattern of (r, i).
fn cifar_records(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..n {
        out.push((r % 10) as u8);
        out.extend((0..3072).map(|i| ((i * 7 + r * 13) % 251) as u8));
    }
    out
}

/// A .tar.gz of `entries` (name, type, data), as the official archive lays out its files.
fn targz(entries: &[(String, tar::EntryType, Vec<u8>)]) -> Vec<u8> {
    gzip(&tar_bytes(entries))
}

fn tar_bytes(entries: &[(String, tar::EntryType, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The tar (uncompressed) of a split with `records` per batch, plus a text file and a folder.
fn cifar_tar(split: Split, records: usize) -> Vec<u8> {
    let mut entries = vec![("cifar-10-batches-bin/".to_string(), tar::EntryType::Directory, vec![])];
    entries.push(("cifar-10-batches-bin/batches.meta.txt".into(), tar::EntryType::Regular, b"airplane\n".to_vec()));
    for f in split.files() {
        entries.push((format!("cifar-10-batches-bin/{f}"), tar::EntryType::Regular, cifar_records(records)));
    }
    tar_bytes(&entries)
}

/// The options byte of `contract::archive_options` for `split` and `records` (1 or 2).
fn archive_byte(split: Split, records: usize) -> u8 {
    u8::from(split == Split::Test) | (u8::from(records == 2) << 1)
}

fn seeds_cifar_archive() -> Vec<Vec<u8>> {
    [(Split::Train, 1), (Split::Test, 2)]
        .map(|(split, records)| [vec![archive_byte(split, records)], gzip(&cifar_tar(split, records))].concat())
        .to_vec()
}

fn encode_image(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// The options byte of `contract::image_options`.
fn image_byte(size: u32, channels: u32, exact: bool) -> u8 {
    (size - 1) as u8 | if channels == 3 { 32 } else { 0 } | if exact { 64 } else { 0 }
}

/// PNG (RGB, RGBA, 16-bit gray) and JPEG (RGB, gray) images, each with an options byte that
/// crops, resizes or takes it exactly.
fn seeds_image() -> Vec<Vec<u8>> {
    use image::{DynamicImage, ImageFormat};
    let rgb =
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 99])));
    let rgba =
        DynamicImage::ImageRgba8(image::RgbaImage::from_fn(6, 4, |x, y| image::Rgba([x as u8, y as u8, 7, 200])));
    let gray16 =
        DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(5, 7, |x, y| image::Luma([x as u16 * 9000 + y as u16])));
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(9, 6, |x, y| image::Luma([(x * 20 + y) as u8])));
    vec![
        [vec![image_byte(8, 3, true)], encode_image(&rgb, ImageFormat::Png)].concat(),
        [vec![image_byte(3, 3, false)], encode_image(&rgba, ImageFormat::Png)].concat(),
        [vec![image_byte(4, 1, false)], encode_image(&gray16, ImageFormat::Png)].concat(),
        [vec![image_byte(5, 3, false)], encode_image(&rgb, ImageFormat::Jpeg)].concat(),
        [vec![image_byte(6, 1, false)], encode_image(&gray, ImageFormat::Jpeg)].concat(),
    ]
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A config that sets values of every kind (the fuzz seed; scripts/fuzz adds configs/ itself).
const RUN_CONFIG_SEED: &str =
    "data = \"moons\"\nsteps = 10\nlr = 2e-3\nlevels_mu = -1.5\nflip = true\nprecond = \"edm\"\n";

/// The presets of configs/ plus `RUN_CONFIG_SEED`.
fn seeds_run_config() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(repo("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    out.push(RUN_CONFIG_SEED.as_bytes().to_vec());
    out
}

/// Every target with its seeds.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("checkpoint_decode", vec![seed_checkpoint(), seed_checkpoint_f16()]),
        ("csv_points", seeds_csv()),
        ("cifar_batch", vec![cifar_records(1), cifar_records(2)]),
        ("cifar_archive", seeds_cifar_archive()),
        ("image_decode", seeds_image()),
        ("run_config", seeds_run_config()),
    ]
}

/// The seeds are inputs each reader accepts, so mutations of them reach past the first checks
/// (the configs/ presets are checked by tests/native/cli_config.rs); with CDL_WRITE_FUZZ_SEEDS=1 they
/// are (re)written to fuzz/seeds/<target>/ first.
#[test]
fn fuzz_seeds_are_accepted_inputs() {
    use cdl::train::{cifar, data, images};
    let write = std::env::var_os("CDL_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    for (target, inputs) in seeds() {
        // The presets are read from configs/ by scripts/fuzz, not copied.
        let inputs = if target == "run_config" { vec![RUN_CONFIG_SEED.as_bytes().to_vec()] } else { inputs };
        let dir = repo(&format!("fuzz/seeds/{target}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            for (i, bytes) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
            }
        }
        let mut on_disk: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        on_disk.sort();
        assert_eq!(on_disk.len(), inputs.len(), "fuzz/seeds/{target}: rerun with CDL_WRITE_FUZZ_SEEDS=1");
        for path in on_disk {
            let bytes = std::fs::read(&path).unwrap();
            let ok = match target {
                "checkpoint_decode" => checkpoint::decode(&bytes).map(drop).map_err(|e| e.to_string()),
                "csv_points" => data::parse_csv_limited(std::str::from_utf8(&bytes).unwrap(), "s", 64)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                "cifar_batch" => cifar::parse_batch(&bytes, "s").map(drop).map_err(|e| e.to_string()),
                "cifar_archive" => {
                    let (split, opts, rest) = contract::archive_options(&bytes);
                    cifar::read_archive_with(rest, "s", split, &opts).map(drop).map_err(|e| e.to_string())
                }
                "image_decode" => {
                    let (opts, rest) = contract::image_options(&bytes);
                    images::decode_image_with(rest, "s", &opts).map(drop).map_err(|e| e.to_string())
                }
                _ => contract::parse_run_config(std::str::from_utf8(&bytes).unwrap()).map(drop),
            };
            assert!(ok.is_ok(), "{}: {}", path.display(), ok.unwrap_err());
            // The target itself holds the contract on its seed.
            contract::run(target, &bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// One edit of a valid input; positions are taken modulo the input length.
#[derive(Clone, Debug)]
enum Edit {
    /// Keep the first `n mod (len + 1)` bytes.
    Truncate(usize),
    /// XOR one byte.
    Flip(usize, u8),
    /// Replace `len` bytes at a position by `bytes` (splicing in headers, numbers, markers).
    Splice(usize, usize, Vec<u8>),
    /// Copy a span of the input over another place (duplicated headers and entries).
    Copy(usize, usize, usize),
    /// Write a little- or big-endian integer (a declared size, length or dimension).
    Int(usize, u64, u8, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    let huge = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(0x7fff_ffff),
        Just(16_385),
        Just(100_000_001),
        0u64..70_000,
        any::<u64>(),
    ];
    let tokens = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"[[[[[[[[".to_vec()),
        Just(b"{\"dtype\":\"F32\",\"shape\":[".to_vec()),
        Just(b"18446744073709551615".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"nan".to_vec()),
        Just(b"1e309".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b",".to_vec()),
        Just(b"\xff\xd8\xff\xc2".to_vec()),
        Just(b"IDAT".to_vec()),
        Just(b"././@LongLink".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<usize>(), 0..8usize, tokens).prop_map(|(i, n, b)| Edit::Splice(i, n, b)),
        (any::<usize>(), any::<usize>(), 1..600usize).prop_map(|(f, t, n)| Edit::Copy(f, t, n)),
        (any::<usize>(), huge, prop_oneof![Just(2u8), Just(4), Just(8)], any::<bool>())
            .prop_map(|(i, v, w, le)| Edit::Int(i, v, w, le)),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = b.len();
        match e {
            Edit::Truncate(n) => b.truncate(n % (len + 1)),
            Edit::Flip(i, x) if len > 0 => b[i % len] ^= x,
            Edit::Splice(i, n, bytes) => {
                let at = i % (len + 1);
                let end = (at + n).min(len);
                b.splice(at..end, bytes.iter().copied());
            }
            Edit::Copy(from, to, n) if len > 0 => {
                let from = from % len;
                let span = b[from..(from + n).min(len)].to_vec();
                let to = to % len;
                let end = (to + span.len()).min(len);
                b.splice(to..end, span);
            }
            Edit::Int(i, v, w, le) if len > 0 => {
                let w = usize::from(*w);
                let bytes = if *le { v.to_le_bytes() } else { v.to_be_bytes() };
                let bytes = if *le { &bytes[..w] } else { &bytes[8 - w..] };
                let at = i % len;
                let end = (at + w).min(len);
                b.splice(at..end, bytes.iter().copied());
            }
            _ => {}
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..5)
}

/// The seed `i` of `target` (modulo their number) with `edits` applied.
fn mutated(target: &str, i: usize, edits: &[Edit]) -> Vec<u8> {
    let all = seeds();
    let inputs = &all.iter().find(|(t, _)| *t == target).unwrap().1;
    apply(inputs[i % inputs.len()].clone(), edits)
}

/// Random bytes: short and mostly small, sometimes longer.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), prop::collection::vec(any::<u8>(), 0..4096)]
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn checkpoint_decode_keeps_the_contract_on_mutated_checkpoints(i in 0..1usize, e in edits()) {
        contract::checkpoint_decode(&mutated("checkpoint_decode", i, &e));
    }

    #[test]
    fn checkpoint_decode_keeps_the_contract_on_random_bytes(bytes in raw_bytes()) {
        contract::checkpoint_decode(&bytes);
    }

    /// Hand-built headers: JSON values of every type where the entry fields belong, nested
    /// containers, huge numbers and offsets, with a header length that is right, short or long.
    #[test]
    fn checkpoint_decode_keeps_the_contract_on_generated_headers(
        entries in prop::collection::vec((json_key(), json_value()), 0..6),
        payload in 0usize..64,
        skew in prop_oneof![Just(0i64), -3i64..3],
    ) {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let header = format!("{{{}}}", body.join(","));
        let len = (header.len() as i64 + skew).max(0) as u64;
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, payload));
        contract::checkpoint_decode(&bytes);
    }
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"__metadata__\"".to_string()),
        Just("\"model.w\"".to_string()),
        Just("\"\"".to_string()),
        Just("\"a\\nb\"".to_string()),
        "\"[a-z.]{1,6}\"",
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("\"F32\"".to_string()),
        Just("\"F16\"".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        (0u64..40).prop_map(|v| v.to_string()),
        "\"[a-z0-9 ]{0,8}\"",
    ];
    scalar.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (prop_oneof![Just("dtype"), Just("shape"), Just("data_offsets"), Just("x"), Just("cdl.arch")], inner),
                0..4
            )
            .prop_map(|v| format!(
                "{{{}}}",
                v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
            )),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// CSV points

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn csv_points_keep_the_contract_on_mutated_csv(i in 0..3usize, e in edits()) {
        contract::csv_points(&mutated("csv_points", i, &e));
    }

    #[test]
    fn csv_points_keep_the_contract_on_random_bytes(bytes in raw_bytes()) {
        contract::csv_points(&bytes);
    }

    /// Rows of fields drawn from numbers, non-finite and out-of-range values, names, quotes and
    /// empty fields, with every line ending; the default row limit as well as the target's.
    #[test]
    fn csv_points_keep_the_contract_on_generated_rows(
        rows in prop::collection::vec((prop::collection::vec(csv_field(), 0..5), csv_sep(), csv_eol()), 0..80),
    ) {
        let text: String = rows.iter().map(|(fields, sep, eol)| format!("{}{eol}", fields.join(sep))).collect();
        contract::csv_points(text.as_bytes());
        let r = cdl::train::data::parse_csv(&text, "rows.csv");
        contract::assert_one_line("data::parse_csv", &r);
    }
}

fn csv_field() -> impl Strategy<Value = String> {
    prop_oneof![
        (-1e6f64..1e6).prop_map(|v| v.to_string()),
        Just(String::new()),
        Just("x".into()),
        Just("Y".into()),
        Just("nan".into()),
        Just("-inf".into()),
        Just("1e39".into()),
        Just(".5".into()),
        Just("\"2\"".into()),
        Just("\"a\nb\"".into()),
        Just("\"".into()),
        Just(" 3 ".into()),
        "[a-z0-9.e+-]{0,6}",
    ]
}

fn csv_sep() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just(","), 1 => Just(";"), 1 => Just(", ")]
}

fn csv_eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("\n\n")]
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn cifar_batch_keeps_the_contract_on_mutated_batches(i in 0..2usize, e in edits()) {
        contract::cifar_batch(&mutated("cifar_batch", i, &e));
    }

    #[test]
    fn cifar_batch_keeps_the_contract_on_random_bytes(bytes in raw_bytes(), records in 0usize..3) {
        let mut bytes = bytes;
        bytes.resize(bytes.len().max(records * cdl::train::cifar::RECORD_BYTES), 3);
        contract::cifar_batch(&bytes);
    }

    /// Mutations of the compressed archive (mostly corrupt gzip) and of the tar inside it before
    /// compression (valid gzip, broken or hostile tar: sizes, types, names, long-name records).
    #[test]
    fn cifar_archive_keeps_the_contract_on_mutated_archives(
        i in 0..2usize,
        e in edits(),
        inside in any::<bool>(),
    ) {
        let input = if inside {
            let (split, records) = if i == 0 { (Split::Train, 1) } else { (Split::Test, 2) };
            [vec![archive_byte(split, records)], gzip(&apply(cifar_tar(split, records), &e))].concat()
        } else {
            mutated("cifar_archive", i, &e)
        };
        contract::cifar_archive(&input);
    }

    /// Archives built from entries of every tar type, names of the split, duplicates, and sizes
    /// above, at and below one batch.
    #[test]
    fn cifar_archive_keeps_the_contract_on_generated_entries(
        entries in prop::collection::vec((tar_name(), tar_kind(), 0usize..8000), 0..8),
        byte in any::<u8>(),
    ) {
        let entries: Vec<(String, tar::EntryType, Vec<u8>)> =
            entries.into_iter().map(|(n, k, len)| (n, k, vec![(len % 10) as u8; len])).collect();
        contract::cifar_archive(&[vec![byte], targz(&entries)].concat());
    }

    #[test]
    fn cifar_archive_keeps_the_contract_on_random_bytes(bytes in raw_bytes(), gz in any::<bool>()) {
        let input = if gz { [vec![bytes.first().copied().unwrap_or(0)], gzip(&bytes)].concat() } else { bytes };
        contract::cifar_archive(&input);
    }
}

fn tar_name() -> impl Strategy<Value = String> {
    let files: Vec<&'static str> = TRAIN_FILES.iter().copied().chain([TEST_FILE, "batches.meta.txt", "x"]).collect();
    (prop::sample::select(files), any::<bool>()).prop_map(|(f, nested)| {
        if nested {
            format!("cifar-10-batches-bin/{f}")
        } else {
            f.to_string()
        }
    })
}

fn tar_kind() -> impl Strategy<Value = tar::EntryType> {
    use tar::EntryType::*;
    prop::sample::select(vec![
        Regular,
        Regular,
        Regular,
        Directory,
        Symlink,
        Link,
        GNULongName,
        GNULongLink,
        XHeader,
        XGlobalHeader,
        GNUSparse,
        Continuous,
        Fifo,
    ])
}

// ---------------------------------------------------------------------------------------------
// Images

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn image_decode_keeps_the_contract_on_mutated_images(i in 0..5usize, e in edits(), opts in any::<u8>()) {
        let mut input = mutated("image_decode", i, &e);
        if opts & 1 == 1 && !input.is_empty() {
            input[0] = opts >> 1;
        }
        contract::image_decode(&input);
    }

    /// Headers that declare other dimensions (a valid PNG checksum, so the decoder believes
    /// them): 0, small, at and above the side limit, and huge pixel counts.
    #[test]
    fn image_decode_keeps_the_contract_on_declared_dimensions(
        i in 0..5usize,
        w in declared_side(),
        h in declared_side(),
        cut in any::<usize>(),
    ) {
        let input = with_dimensions(&seeds_image()[i], w, h);
        contract::image_decode(&input);
        // The same header with its pixel data cut short.
        contract::image_decode(&input[..input.len() - cut % (input.len() / 2)]);
    }

    #[test]
    fn image_decode_keeps_the_contract_on_random_bytes(bytes in raw_bytes(), png in any::<bool>()) {
        let magic: &[u8] = if png { b"\x89PNG\r\n\x1a\n" } else { b"\xff\xd8\xff" };
        contract::image_decode(&[&[0u8][..], magic, &bytes].concat());
        contract::image_decode(&bytes);
    }
}

/// A side that a decoder can reject or accept fast; large accepted JPEGs take seconds each, so
/// sides between 1,024 and the limit (16,384) are left to tests/native/fuzz_regressions.rs.
fn declared_side() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..64, 64u32..1024, Just(16_384), 16_385u32..70_000, Just(u32::MAX)]
}

/// `input` (options byte, then a PNG or JPEG) with the dimensions in its header replaced.
fn with_dimensions(input: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = input.to_vec();
    let img = &mut b[1..];
    if img.starts_with(b"\x89PNG") {
        // IHDR: length (4), "IHDR", width, height (big-endian), ..., CRC over type and data.
        img[16..20].copy_from_slice(&w.to_be_bytes());
        img[20..24].copy_from_slice(&h.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&img[12..29]);
        img[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    } else if let Some(i) = img.windows(2).position(|m| m == [0xFF, 0xC0]) {
        // SOF0: marker, length (2), precision (1), height (2), width (2).
        let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
        img[i + 5..i + 7].copy_from_slice(&clamp(h).to_be_bytes());
        img[i + 7..i + 9].copy_from_slice(&clamp(w).to_be_bytes());
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Run configs

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn run_config_keeps_the_contract_on_mutated_presets(i in 0..20usize, e in edits()) {
        contract::run_config(&mutated("run_config", i, &e));
    }

    #[test]
    fn run_config_keeps_the_contract_on_random_bytes(bytes in raw_bytes()) {
        contract::run_config(&bytes);
    }

    /// Lines of known keys (and near misses) with values of every TOML type, out-of-range and
    /// non-finite numbers, tables and arrays.
    #[test]
    fn run_config_keeps_the_contract_on_generated_keys(lines in prop::collection::vec((toml_key(), toml_value()), 0..8)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        contract::run_config(text.as_bytes());
    }
}

fn toml_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "data",
        "model",
        "loss",
        "steps",
        "batch",
        "lr",
        "warmup",
        "ema",
        "clip",
        "seed",
        "anchors",
        "points",
        "lambda_cdl",
        "cdl_norm",
        "levels_mu",
        "levels_scale",
        "levels_clip",
        "edm_p_mean",
        "edm_p_std",
        "width",
        "blocks",
        "precond",
        "toy_points",
        "log_every",
        "checkpoint_every",
        "sample_every",
        "sample_steps",
        "out",
        "flip",
        "classes",
        "independent_draws",
        "config",
        "resume",
        "quiet",
        "lrr",
        "\"a\\nb\"",
        "t.u",
    ])
    .prop_map(str::to_string)
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u64..70_000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("true".to_string()),
        Just("\"moons\"".to_string()),
        Just("\"cdl\"".to_string()),
        Just("\"edm\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        "\"[a-z0-9-]{0,8}\"",
    ]
}

// ---------------------------------------------------------------------------------------------
// Bounds at the costliest inputs known

/// Random inputs are small, so the fixed allowance hides a per-byte cost; these inputs of
/// 0.1 to 1 MB are the costliest per byte found for each reader, and the bound must hold there.
#[test]
fn bounds_hold_for_the_costliest_inputs_known() {
    use cdl::train::data::MAX_CSV_LINE_BYTES;
    // A shape of 65,537 ones: safetensors buffers each dimension as a 32-byte value.
    let shape = vec!["1"; 65_537].join(",");
    let meta = r#""__metadata__":{"cdl.format_version":"1","cdl.arch":"a","cdl.step":"0","cdl.model_config":""}"#;
    let header = format!(r#"{{{meta},"w":{{"dtype":"F32","shape":[{shape}],"data_offsets":[0,4]}}}}"#);
    let mut ck = (header.len() as u64).to_le_bytes().to_vec();
    ck.extend_from_slice(header.as_bytes());
    ck.extend_from_slice(&[0; 4]);
    // Many one-character metadata entries.
    let many: String = (0..20_000).map(|i| format!(r#""{i}":"","#)).collect();
    let header = format!(
        r#"{{"__metadata__":{{{many}"cdl.format_version":"1","cdl.arch":"a","cdl.step":"0","cdl.model_config":""}}}}"#
    );
    let mut meta_ck = (header.len() as u64).to_le_bytes().to_vec();
    meta_ck.extend_from_slice(header.as_bytes());
    for bytes in [&ck, &meta_ck] {
        let (r, peak) = contract::measure(|| checkpoint::decode(bytes));
        assert!(r.is_ok(), "{}", r.unwrap_err());
        contract::assert_within("checkpoint::decode", peak, contract::checkpoint_bound(bytes.len()), bytes.len());
    }
    // Lines of commas at the line limit, and 100,000 short rows.
    let commas = format!("{}\n", ",".repeat(MAX_CSV_LINE_BYTES)).repeat(8);
    let rows = "0,0\n".repeat(100_000);
    for text in [commas, rows] {
        let (r, peak) = contract::measure(|| cdl::train::data::parse_csv(&text, "c.csv"));
        contract::assert_one_line("data::parse_csv", &r);
        contract::assert_within("data::parse_csv", peak, contract::csv_bound(text.len()), text.len());
    }
    // An array of 20,000 inline tables: a TOML tree node and a JSON one for each.
    let text = format!("data = [{}{{a=1}}]", "{a=1},".repeat(20_000));
    let (r, peak) = contract::measure(|| contract::parse_run_config(&text));
    assert!(r.is_err());
    contract::assert_within("train::apply_config", peak, contract::run_config_bound(text.len()), text.len());
}

// ---------------------------------------------------------------------------------------------
// Files: the same readers behind a path

/// `checkpoint::load` and `data::read_csv` on mutated files give a value or a one-line error
/// that names the file.
#[test]
fn file_readers_name_the_file_in_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("cdl-prop-parsers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(48));
    runner
        .run(&(edits(), any::<bool>()), |(e, csv)| {
            let (path, err) = if csv {
                let path = dir.join("points.csv");
                std::fs::write(&path, mutated("csv_points", 0, &e)).unwrap();
                (path.clone(), cdl::train::data::read_csv(&path).err().map(|e| e.to_string()))
            } else {
                let path = dir.join("run.safetensors");
                std::fs::write(&path, mutated("checkpoint_decode", 0, &e)).unwrap();
                (path.clone(), checkpoint::load(&path).err().map(|e| e.to_string()))
            };
            if let Some(msg) = err {
                prop_assert!(!msg.contains('\n'), "{msg}");
                prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
            }
            Ok(())
        })
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
