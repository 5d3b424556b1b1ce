//! Image data (src/train/cifar.rs, src/train/images.rs): CIFAR-10 batches, archives, folders and
//! single files made by the tests in the official layout (small batches through
//! `CifarOptions::records_per_batch`), their one-line errors for bad input, the trainer's view
//! (v/127.5 − 1, deterministic flips, labels), and PNG/JPEG folders (order, modes, the
//! center-crop rule, strict sizes, corrupt files).

use std::io::Write;

use crate::common::dirs::TestDir;

use cdl::train::cifar::{
    self, parse_batch, read_archive, read_archive_with, Cifar, CifarExamples, CifarOptions, Split, BATCH_BYTES,
    IMAGE_BYTES, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
};
use cdl::train::images::{
    decode_image, decode_image_with, flip_at, to_unit, FolderOptions, ImageDataError, ImageSet, MAX_IMAGE_FILE_BYTES,
};
use cdl::train::trainer::Examples;

/// Records per batch in the test archives.
const R: usize = 7;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Batch `b` (0..5 train, 5 test) of `n` records: label (3i + b) % 10, pixel k of record i
/// (i·7 + k·13 + b·31) % 256. Returns (file bytes, images, labels).
fn batch(b: usize, n: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut bytes, mut images, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let label = ((3 * i + b) % 10) as u8;
        let img: Vec<u8> = (0..IMAGE_BYTES).map(|k| ((i * 7 + k * 13 + b * 31) % 256) as u8).collect();
        bytes.push(label);
        bytes.extend_from_slice(&img);
        images.extend_from_slice(&img);
        labels.push(label);
    }
    (bytes, images, labels)
}

/// The expected train (batches 0..5 concatenated) and test sets.
fn expected(n: usize) -> (Cifar, Cifar) {
    let mut train = Cifar { images: Vec::new(), labels: Vec::new() };
    for b in 0..5 {
        let (_, img, lab) = batch(b, n);
        train.images.extend(img);
        train.labels.extend(lab);
    }
    let (_, images, labels) = batch(5, n);
    (train, Cifar { images, labels })
}

/// The bytes of the file `name` of the official layout (other names: a short text).
fn file_bytes(name: &str, n: usize) -> Vec<u8> {
    if let Some(b) = TRAIN_FILES.iter().position(|f| *f == name) {
        batch(b, n).0
    } else if name == TEST_FILE {
        batch(5, n).0
    } else {
        format!("{name}\n").into_bytes()
    }
}

/// A .tar.gz holding `names` (in this order) under cifar-10-batches-bin/, as the official one.
fn targz(names: &[&str], n: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_path("cifar-10-batches-bin/").unwrap();
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_cksum();
    builder.append(&dir, std::io::empty()).unwrap();
    for name in names {
        let data = file_bytes(name, n);
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("cifar-10-batches-bin/{name}")).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append(&h, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Every file, shuffled, with the metadata and readme among them.
const SHUFFLED: [&str; 8] = [
    "data_batch_5.bin",
    "batches.meta.txt",
    "data_batch_2.bin",
    "test_batch.bin",
    "data_batch_1.bin",
    "readme.html",
    "data_batch_4.bin",
    "data_batch_3.bin",
];

fn small() -> CifarOptions {
    CifarOptions { records_per_batch: R }
}

/// The error's message, checked to be one line that names `source`.
fn message(e: ImageDataError, source: &str) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains(source), "error does not name {source}: {s}");
    s
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10 batches and archives

#[test]
fn parse_batch_reads_records_exactly() {
    let (bytes, images, labels) = batch(2, R);
    assert_eq!(bytes.len(), R * RECORD_BYTES);
    let c = parse_batch(&bytes, "b.bin").unwrap();
    assert_eq!((c.len(), c.images.len()), (R, R * IMAGE_BYTES));
    assert_eq!(c.images, images);
    assert_eq!(c.labels, labels);
    assert_eq!(c.image(3), &images[3 * IMAGE_BYTES..4 * IMAGE_BYTES]);
    assert_eq!(Cifar::CLASSES.len(), 10);
    assert_eq!((Cifar::CLASSES[0], Cifar::CLASSES[9]), ("airplane", "truck"));
    assert_eq!(BATCH_BYTES, 30_730_000);
}

#[test]
fn parse_batch_rejects_truncated_and_empty() {
    let (bytes, _, _) = batch(0, 2);
    let s = message(parse_batch(&bytes[..bytes.len() - 1], "short.bin").unwrap_err(), "short.bin");
    assert!(s.contains("truncated or not a CIFAR-10 batch: 6145 bytes, not a multiple of 3073"), "{s}");
    let s = message(parse_batch(&[], "empty.bin").unwrap_err(), "empty.bin");
    assert!(s.contains("0 bytes"), "{s}");
}

#[test]
fn parse_batch_rejects_label_10_naming_the_record() {
    let (mut bytes, _, _) = batch(0, 5);
    bytes[3 * RECORD_BYTES] = 10;
    let s = message(parse_batch(&bytes, "labels.bin").unwrap_err(), "labels.bin");
    assert!(s.contains("record 3") && s.contains("label 10"), "{s}");
}

#[test]
fn archive_round_trips_train_and_test_in_file_order() {
    let gz = targz(&SHUFFLED, R);
    let (train, test) = expected(R);
    let got = read_archive_with(gz.as_slice(), "c.tar.gz", Split::Train, &small()).unwrap();
    assert_eq!(got.len(), 5 * R);
    assert_eq!(got, train, "train: data_batch_1..5 concatenated in that order");
    let got = read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &small()).unwrap();
    assert_eq!(got, test);
}

#[test]
fn archive_checks_the_official_batch_size_by_default() {
    let gz = targz(&SHUFFLED, R);
    let s = message(read_archive(gz.as_slice(), "c.tar.gz", Split::Test).unwrap_err(), "c.tar.gz");
    assert!(s.contains("test_batch.bin") && s.contains("expected 10000 records"), "{s}");
    // A batch of another record count than asked for is refused too.
    let opts = CifarOptions { records_per_batch: R + 1 };
    let s = message(read_archive_with(gz.as_slice(), "c.tar.gz", Split::Train, &opts).unwrap_err(), "c.tar.gz");
    assert!(s.contains("7 records") && s.contains("expected 8 records"), "{s}");
}

#[test]
fn archive_names_missing_batches() {
    let names: Vec<&str> = SHUFFLED.iter().copied().filter(|n| *n != "data_batch_3.bin").collect();
    let gz = targz(&names, R);
    let e = read_archive_with(gz.as_slice(), "c.tar.gz", Split::Train, &small()).unwrap_err();
    assert!(matches!(e, ImageDataError::Missing { .. }), "{e}");
    let s = message(e, "c.tar.gz");
    assert!(s.contains("missing data_batch_3.bin"), "{s}");
    assert!(!s.contains("data_batch_1"), "{s}");
    // The test split is still there.
    assert!(read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &small()).is_ok());
    let gz = targz(&TRAIN_FILES, R);
    let s = message(read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &small()).unwrap_err(), "c.tar.gz");
    assert!(s.contains("missing test_batch.bin"), "{s}");
}

#[test]
fn archive_in_a_truncated_batch_entry_gives_the_truncation_message() {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let (bytes, _, _) = batch(5, R);
    let data = &bytes[..bytes.len() - 100];
    let mut h = tar::Header::new_gnu();
    h.set_path("cifar-10-batches-bin/test_batch.bin").unwrap();
    h.set_size(data.len() as u64);
    h.set_cksum();
    builder.append(&h, data).unwrap();
    let gz = builder.into_inner().unwrap().finish().unwrap();
    let s = message(read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &small()).unwrap_err(), "c.tar.gz");
    assert!(s.contains("cifar-10-batches-bin/test_batch.bin") && s.contains("not a multiple of 3073"), "{s}");
}

#[test]
fn archive_corrupt_gzip_is_a_one_line_error() {
    let gz = targz(&SHUFFLED, R);
    // The gzip magic.
    let mut bad = gz.clone();
    bad[0] ^= 0xff;
    let e = read_archive_with(bad.as_slice(), "c.tar.gz", Split::Train, &small()).unwrap_err();
    assert!(matches!(e, ImageDataError::Archive { .. }), "{e}");
    let s = message(e, "c.tar.gz");
    assert!(s.contains("corrupt or truncated archive"), "{s}");
    // Bytes flipped inside the compressed stream (deflate error, bad tar header or CRC mismatch).
    for at in [gz.len() / 3, gz.len() / 2, gz.len() - 12] {
        let mut bad = gz.clone();
        for b in &mut bad[at..at + 4] {
            *b ^= 0x5a;
        }
        for split in [Split::Train, Split::Test] {
            let r = read_archive_with(bad.as_slice(), "c.tar.gz", split, &small());
            message(r.unwrap_err(), "c.tar.gz");
        }
    }
    // The CRC-32 / length trailer alone.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 8] ^= 1;
    let s = message(read_archive_with(bad.as_slice(), "c.tar.gz", Split::Test, &small()).unwrap_err(), "c.tar.gz");
    assert!(s.contains("corrupt or truncated archive"), "{s}");
}

#[test]
fn archive_truncated_is_an_error() {
    let gz = targz(&SHUFFLED, R);
    for keep in [10, gz.len() / 4, gz.len() / 2, gz.len() - 1] {
        for split in [Split::Train, Split::Test] {
            let r = read_archive_with(&gz[..keep], "cut.tar.gz", split, &small());
            let s = message(r.unwrap_err(), "cut.tar.gz");
            assert!(s.contains("corrupt or truncated archive") || s.contains("missing"), "{keep}: {s}");
        }
    }
}

#[test]
fn archive_entry_larger_than_a_batch_is_refused_by_its_header() {
    for claimed in [1u64 << 40, (R * RECORD_BYTES) as u64 + 1] {
        let mut h = tar::Header::new_gnu();
        h.set_path("cifar-10-batches-bin/test_batch.bin").unwrap();
        h.set_size(claimed);
        h.set_mode(0o644);
        h.set_cksum();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(h.as_bytes()).unwrap();
        enc.write_all(&[0u8; 4096]).unwrap();
        let gz = enc.finish().unwrap();
        let e = read_archive_with(gz.as_slice(), "big.tar.gz", Split::Test, &small()).unwrap_err();
        assert!(matches!(e, ImageDataError::TooLarge { .. }), "{e}");
        let s = message(e, "big.tar.gz");
        assert!(s.contains("test_batch.bin") && s.contains(&format!("{claimed} bytes")), "{s}");
    }
}

#[test]
fn batch_options_out_of_range_are_refused() {
    let gz = targz(&SHUFFLED, R);
    let e = read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &CifarOptions { records_per_batch: 0 });
    assert!(matches!(e, Err(ImageDataError::Invalid(_))));
    let e = read_archive_with(gz.as_slice(), "c.tar.gz", Split::Test, &CifarOptions { records_per_batch: usize::MAX });
    assert!(matches!(e, Err(ImageDataError::Invalid(_))));
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10 files (native)

#[cfg(not(target_arch = "wasm32"))]
mod cifar_files {
    use super::*;

    /// Writes the official folder layout under `root/cifar-10-batches-bin/`.
    fn write_dir(root: &std::path::Path, names: &[&str]) -> std::path::PathBuf {
        let dir = root.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            std::fs::write(dir.join(name), file_bytes(name, R)).unwrap();
        }
        dir
    }

    #[test]
    fn archive_folder_and_single_bin_agree() {
        let tmp = TestDir::new("agree");
        let (train, test) = expected(R);
        let gz_path = tmp.0.join("cifar-10-binary.tar.gz");
        std::fs::write(&gz_path, targz(&SHUFFLED, R)).unwrap();
        let dir = write_dir(&tmp.0, &SHUFFLED);
        // An archive without its extension is recognised by the gzip magic.
        let plain = tmp.0.join("archive");
        std::fs::copy(&gz_path, &plain).unwrap();
        for path in [&gz_path, &plain, &tmp.0, &dir] {
            assert_eq!(cifar::load_with(path, Split::Train, &small()).unwrap(), train, "{}", path.display());
            assert_eq!(cifar::load_with(path, Split::Test, &small()).unwrap(), test, "{}", path.display());
        }
        let one = cifar::load_with(&dir.join("data_batch_2.bin"), Split::Train, &small()).unwrap();
        let (_, images, labels) = batch(1, R);
        assert_eq!(one, Cifar { images, labels });
        // Official sizes by default.
        let s = message(cifar::load(&dir.join("test_batch.bin"), Split::Test).unwrap_err(), "test_batch.bin");
        assert!(s.contains("expected 10000 records"), "{s}");
    }

    #[test]
    fn missing_path_is_named() {
        let tmp = TestDir::new("missing");
        let path = tmp.0.join("no-such-cifar.tar.gz");
        let e = cifar::load(&path, Split::Train).unwrap_err();
        assert!(matches!(e, ImageDataError::Io { .. }), "{e}");
        let s = message(e, "no-such-cifar.tar.gz");
        assert!(s.starts_with("cannot open"), "{s}");
    }

    #[test]
    fn folder_missing_a_batch_names_it() {
        let tmp = TestDir::new("dirmissing");
        let names: Vec<&str> = SHUFFLED.iter().copied().filter(|n| *n != "data_batch_3.bin").collect();
        write_dir(&tmp.0, &names);
        let s = message(cifar::load_with(&tmp.0, Split::Train, &small()).unwrap_err(), "cifar-10-batches-bin");
        assert!(s.contains("missing data_batch_3.bin"), "{s}");
    }

    #[test]
    fn bad_files_are_named() {
        let tmp = TestDir::new("badfiles");
        let (bytes, _, _) = batch(0, R);
        let short = tmp.0.join("short.bin");
        std::fs::write(&short, &bytes[..bytes.len() - 1]).unwrap();
        let s = message(cifar::load_with(&short, Split::Test, &small()).unwrap_err(), "short.bin");
        assert!(s.contains("not a multiple of 3073"), "{s}");
        let big = tmp.0.join("big.bin");
        std::fs::write(&big, [bytes.as_slice(), &[0u8; RECORD_BYTES]].concat()).unwrap();
        let e = cifar::load_with(&big, Split::Test, &small()).unwrap_err();
        assert!(matches!(e, ImageDataError::TooLarge { .. }), "{e}");
        message(e, "big.bin");
        let mut labels = bytes.clone();
        labels[2 * RECORD_BYTES] = 200;
        let lab = tmp.0.join("labels.bin");
        std::fs::write(&lab, &labels).unwrap();
        let s = message(cifar::load_with(&lab, Split::Test, &small()).unwrap_err(), "labels.bin");
        assert!(s.contains("record 2") && s.contains("label 200"), "{s}");
        let gz = tmp.0.join("cut.tar.gz");
        let full = targz(&SHUFFLED, R);
        std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
        let s = message(cifar::load_with(&gz, Split::Train, &small()).unwrap_err(), "cut.tar.gz");
        assert!(s.contains("corrupt or truncated archive") || s.contains("missing"), "{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// The trainer's view of CIFAR-10

fn small_set() -> Cifar {
    expected(R).0
}

#[test]
fn cifar_examples_scale_exactly_and_gather_labels() {
    let data = small_set();
    let ex = CifarExamples::new(data.clone(), false, true);
    assert_eq!((ex.len(), ex.row_len()), (5 * R, 3072));
    let idx = [4u32, 0, 33, 4];
    let mut out = vec![f32::NAN; idx.len() * 3072];
    let mut labels = vec![99u32; idx.len()];
    ex.gather(&idx, 1, 2, &mut out, &mut labels);
    for (j, &i) in idx.iter().enumerate() {
        let img = data.image(i as usize);
        for k in 0..3072 {
            let v = out[j * 3072 + k];
            assert_eq!(v.to_bits(), (f32::from(img[k]) / 127.5 - 1.0).to_bits());
            assert!((-1.0..=1.0).contains(&v));
        }
        assert_eq!(labels[j], u32::from(data.labels[i as usize]));
    }
    assert_eq!((to_unit(0), to_unit(255)), (-1.0, 1.0));
    // Unconditional: labels are left as they are.
    let ex = CifarExamples::new(data, false, false);
    let mut labels = vec![99u32; idx.len()];
    ex.gather(&idx, 1, 2, &mut out, &mut labels);
    assert_eq!(labels, vec![99; idx.len()]);
}

#[test]
fn cifar_flips_are_deterministic_and_mirror_rows() {
    // Image 0: pixel (c, y, x) = 8c + x + y (distinct across x), so a mirror is visible.
    let mut img = vec![0u8; IMAGE_BYTES];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                img[c * 1024 + y * 32 + x] = (8 * c + x * 3 + y) as u8;
            }
        }
    }
    let data = Cifar { images: img.clone(), labels: vec![1] };
    let ex = CifarExamples::new(data, true, false);
    let b = 64;
    let idx = vec![0u32; b];
    let (seed, step) = (7u64, (1u64 << 33) + 5);
    let mut out = vec![0f32; b * 3072];
    let mut again = vec![0f32; b * 3072];
    let mut labels = vec![0u32; b];
    ex.gather(&idx, seed, step, &mut out, &mut labels);
    ex.gather(&idx, seed, step, &mut again, &mut labels);
    assert_eq!(out, again, "same (seed, step): same flips");
    let mut flipped = 0;
    for j in 0..b {
        let row = &out[j * 3072..(j + 1) * 3072];
        let f = flip_at(seed, step, j);
        flipped += usize::from(f);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let src = if f { 31 - x } else { x };
                    assert_eq!(row[c * 1024 + y * 32 + x], to_unit(img[c * 1024 + y * 32 + src]), "j {j}");
                }
            }
        }
    }
    assert!(flipped > 0 && flipped < b, "{flipped} of {b} flipped");
    // The decision depends on (seed, step, position) only: other steps and seeds differ.
    let pattern = |seed: u64, step: u64| (0..b).map(|j| flip_at(seed, step, j)).collect::<Vec<_>>();
    assert_ne!(pattern(seed, step), pattern(seed, step + 1));
    assert_ne!(pattern(seed, step), pattern(seed + 1, step));
    assert_ne!(pattern(seed, step), pattern(seed, step + (1 << 32)), "the high word of the step counts");
    // Flips off: never mirrored.
    let ex = CifarExamples::new(Cifar { images: img.clone(), labels: vec![1] }, false, false);
    ex.gather(&idx, seed, step, &mut out, &mut labels);
    assert!(out.chunks_exact(3072).all(|r| r.iter().zip(&img).all(|(&v, &p)| v == to_unit(p))));
}

#[test]
fn about_half_of_the_examples_are_flipped() {
    let n = 20_000;
    let mut count = 0usize;
    for step in 0..(n / 100) as u64 {
        count += (0..100).filter(|&j| flip_at(3, step, j)).count();
    }
    let frac = count as f64 / n as f64;
    assert!((frac - 0.5).abs() < 0.02, "flipped fraction {frac}");
}

// ---------------------------------------------------------------------------------------------
// Image folders

/// A PNG or JPEG of `img`.
fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// w×h RGB image whose pixel is f(x, y).
fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y))))
}

/// Pixel (x, y) of a size×size CHW u8 image with `c` channels.
fn px(chw: &[u8], size: usize, c: usize, x: usize, y: usize) -> Vec<u8> {
    (0..c).map(|k| chw[k * size * size + y * size + x]).collect()
}

#[test]
fn center_crop_keeps_the_middle_of_wide_and_tall_images() {
    // Three 16-wide bands red | green | blue: the 16×16 center crop is all green.
    let wide = rgb(48, 16, |x, _| match x / 16 {
        0 => [255, 0, 0],
        1 => [0, 255, 0],
        _ => [0, 0, 255],
    });
    let tall = rgb(16, 48, |_, y| match y / 16 {
        0 => [255, 0, 0],
        1 => [0, 255, 0],
        _ => [0, 0, 255],
    });
    for (name, img) in [("wide.png", wide), ("tall.png", tall)] {
        let out = decode_image(&encode(&img, image::ImageFormat::Png), name, 8, 3).unwrap();
        assert_eq!(out.len(), 3 * 64);
        for (y, x) in (0..8).flat_map(|y| (0..8).map(move |x| (y, x))) {
            assert_eq!(px(&out, 8, 3, x, y), vec![0, 255, 0], "{name} ({x}, {y})");
        }
    }
    // Two halves red | blue, 32×16 → the crop is x in 8..24: its left half red, right half blue.
    let halves = rgb(32, 16, |x, _| if x < 16 { [255, 0, 0] } else { [0, 0, 255] });
    let out = decode_image(&encode(&halves, image::ImageFormat::Png), "halves.png", 16, 3).unwrap();
    for y in 0..16 {
        assert_eq!(px(&out, 16, 3, 7, y), vec![255, 0, 0]);
        assert_eq!(px(&out, 16, 3, 8, y), vec![0, 0, 255]);
    }
    // An odd excess: 4×1 → side 1 at x = (4 − 1)/2 = 1.
    let row = rgb(4, 1, |x, _| [x as u8 * 60, 0, 0]);
    assert_eq!(decode_image(&encode(&row, image::ImageFormat::Png), "row.png", 1, 3).unwrap(), vec![60, 0, 0]);
}

#[cfg(not(target_arch = "wasm32"))]
mod folders {
    use super::*;
    use cdl::train::images::{load_folder, load_folder_with};

    /// A folder with PNG/JPEG files of several sizes and modes, plus files to skip.
    fn mixed_folder(name: &str) -> TestDir {
        let tmp = TestDir::new(name);
        let p = |f: &str| tmp.0.join(f);
        // c.png: exactly 8×8 RGB, kept as is.
        let c = rgb(8, 8, |x, y| [(x * 30) as u8, (y * 30) as u8, 7]);
        std::fs::write(p("c.png"), encode(&c, image::ImageFormat::Png)).unwrap();
        // b.PNG: RGBA 40×20 (alpha dropped), uniform.
        let b = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(40, 20, image::Rgba([10, 20, 30, 40])));
        std::fs::write(p("b.PNG"), encode(&b, image::ImageFormat::Png)).unwrap();
        // a.jpg: grayscale 16×24 JPEG, uniform 128.
        let a = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(16, 24, image::Luma([128])));
        std::fs::write(p("a.jpg"), encode(&a, image::ImageFormat::Jpeg)).unwrap();
        // Skipped: other extensions, hidden files, folders.
        std::fs::write(p("notes.txt"), "not an image").unwrap();
        std::fs::write(p(".hidden.png"), "not an image either").unwrap();
        std::fs::create_dir_all(p("sub.png")).unwrap();
        tmp
    }

    #[test]
    fn folder_loads_png_and_jpeg_in_name_order_as_rgb() {
        let tmp = mixed_folder("mixed");
        let set = load_folder(&tmp.0, 8, 3).unwrap();
        assert_eq!(set.names, vec!["a.jpg", "b.PNG", "c.png"]);
        assert_eq!((set.len(), set.size, set.channels), (3, 8, 3));
        assert_eq!(set.images.len(), 3 * 3 * 64);
        // The gray JPEG: R = G = B ≈ 128 (JPEG is lossy).
        for (x, y) in [(0, 0), (7, 7), (3, 4)] {
            let p = px(set.image(0), 8, 3, x, y);
            assert!(p[0] == p[1] && p[1] == p[2] && p[0].abs_diff(128) <= 2, "{p:?}");
        }
        // The RGBA PNG: alpha dropped, uniform colour kept exactly.
        assert!(set.image(1).chunks_exact(64).zip([10u8, 20, 30]).all(|(plane, v)| plane.iter().all(|&p| p == v)));
        // The 8×8 PNG: untouched, CHW.
        for (x, y) in [(0, 0), (7, 0), (2, 5)] {
            assert_eq!(px(set.image(2), 8, 3, x, y), vec![(x * 30) as u8, (y * 30) as u8, 7]);
        }
        // One channel: luma.
        let gray = load_folder(&tmp.0, 4, 1).unwrap();
        assert_eq!((gray.len(), gray.images.len()), (3, 3 * 16));
        assert!(gray.image(0).iter().all(|&v| v.abs_diff(128) <= 2));
        // The trainer's view: v/127.5 − 1, no labels written, flips per (seed, step, position).
        let mut set = set;
        set.flip = true;
        assert_eq!((Examples::len(&set), set.row_len()), (3, 192));
        let idx = [2u32, 2, 2, 2, 2, 2, 2, 2];
        let mut out = vec![0f32; idx.len() * 192];
        let mut labels = vec![5u32; idx.len()];
        set.gather(&idx, 11, 4, &mut out, &mut labels);
        assert_eq!(labels, vec![5; idx.len()]);
        let src = set.image(2);
        for j in 0..idx.len() {
            let f = flip_at(11, 4, j);
            for k in 0..192 {
                let (row, x) = (k / 8, k % 8);
                let s = row * 8 + if f { 7 - x } else { x };
                assert_eq!(out[j * 192 + k], to_unit(src[s]));
            }
        }
    }

    #[test]
    fn corrupt_image_is_named() {
        let tmp = mixed_folder("corrupt");
        let mut bytes = encode(&rgb(8, 8, |_, _| [1, 2, 3]), image::ImageFormat::Png);
        let n = bytes.len();
        bytes.truncate(n / 2);
        std::fs::write(tmp.0.join("d.png"), &bytes).unwrap();
        let e = load_folder(&tmp.0, 8, 3).unwrap_err();
        let s = message(e, "d.png");
        assert!(s.contains("cannot decode image"), "{s}");
        // A text file named .png.
        std::fs::write(tmp.0.join("d.png"), "hello").unwrap();
        let s = message(load_folder(&tmp.0, 8, 3).unwrap_err(), "d.png");
        assert!(s.contains("not a PNG or JPEG image"), "{s}");
    }

    #[test]
    fn empty_folder_and_missing_folder_are_errors() {
        let tmp = TestDir::new("empty");
        std::fs::write(tmp.0.join("readme.txt"), "nothing here").unwrap();
        let e = load_folder(&tmp.0, 8, 3).unwrap_err();
        assert!(matches!(e, ImageDataError::Empty { .. }), "{e}");
        let s = message(e, &tmp.0.display().to_string());
        assert!(s.contains("no image files"), "{s}");
        let gone = tmp.0.join("gone");
        let s = message(load_folder(&gone, 8, 3).unwrap_err(), "gone");
        assert!(s.starts_with("cannot read folder"), "{s}");
    }

    #[test]
    fn exact_mode_names_the_file_and_both_sizes() {
        let tmp = mixed_folder("exact");
        let e = load_folder_with(&tmp.0, &FolderOptions { size: 8, channels: 3, exact: true }).unwrap_err();
        let s = message(e, "a.jpg");
        assert!(s.contains("16×24") && s.contains("8×8"), "{s}");
        // Only the 8×8 colour file left: accepted as is.
        std::fs::remove_file(tmp.0.join("a.jpg")).unwrap();
        std::fs::remove_file(tmp.0.join("b.PNG")).unwrap();
        let set = load_folder_with(&tmp.0, &FolderOptions { size: 8, channels: 3, exact: true }).unwrap();
        assert_eq!(set.names, vec!["c.png"]);
        // A colour image where gray was asked for.
        let s = message(
            load_folder_with(&tmp.0, &FolderOptions { size: 8, channels: 1, exact: true }).unwrap_err(),
            "c.png",
        );
        assert!(s.contains("image is colour, expected grayscale"), "{s}");
    }

    #[test]
    fn oversized_image_file_is_refused_before_reading() {
        let tmp = TestDir::new("bigfile");
        let f = std::fs::File::create(tmp.0.join("huge.png")).unwrap();
        f.set_len(MAX_IMAGE_FILE_BYTES + 1).unwrap();
        let e = load_folder(&tmp.0, 8, 3).unwrap_err();
        assert!(matches!(e, ImageDataError::TooLarge { .. }), "{e}");
        message(e, "huge.png");
    }
}

#[test]
fn strict_colour_rule_and_arguments() {
    let gray = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([9])));
    let png = encode(&gray, image::ImageFormat::Png);
    let s = message(
        decode_image_with(&png, "g.png", &FolderOptions { size: 4, channels: 3, exact: true }).unwrap_err(),
        "g.png",
    );
    assert!(s.contains("image is grayscale, expected colour"), "{s}");
    // Without exact mode a gray image is converted: R = G = B.
    assert_eq!(decode_image(&png, "g.png", 4, 3).unwrap(), vec![9; 48]);
    assert!(matches!(decode_image(&png, "g.png", 0, 3), Err(ImageDataError::Invalid(_))));
    assert!(matches!(decode_image(&png, "g.png", 4, 2), Err(ImageDataError::Invalid(_))));
    assert!(ImageSet::new(4, 3).is_empty());
}

#[test]
fn image_bounds_are_checked_before_decoding() {
    // A PNG whose header claims 20000×20000 (above MAX_IMAGE_SIDE) and one whose RGBA buffer
    // would be 1 GiB (above MAX_DECODED_BYTES): refused from the header, nothing allocated.
    let small = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, image::Rgba([1, 2, 3, 4])));
    let png = encode(&small, image::ImageFormat::Png);
    assert_eq!(&png[12..16], b"IHDR");
    for side in [20_000u32, 16_384] {
        let mut bad = png.clone();
        bad[16..20].copy_from_slice(&side.to_be_bytes());
        bad[20..24].copy_from_slice(&side.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bad[12..29]);
        bad[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let s = message(decode_image(&bad, "claims.png", 8, 3).unwrap_err(), "claims.png");
        assert!(s.contains("cannot decode image") && s.to_lowercase().contains("limit"), "{side}: {s}");
    }
    let big = vec![0u8; MAX_IMAGE_FILE_BYTES as usize + 1];
    let e = decode_image(&big, "big.png", 8, 3).unwrap_err();
    assert!(matches!(e, ImageDataError::TooLarge { .. }), "{e}");
}
