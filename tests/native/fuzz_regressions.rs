//! Regression tests of what fuzzing and the property tests found in the readers of untrusted
//! bytes (docs/fuzzing.md has the runs): each input is in tests/fuzz-regressions/ as
//! `<target>-<what>.bin` (or inline when it is one line), and each test checks the fixed
//! behaviour plus the whole target contract (`fuzz/src/lib.rs`).

use crate::contract;

use std::path::Path;

use cdl::train::cifar::{self, CifarOptions, Split};
use cdl::train::{checkpoint, data, images};
use contract::{measure, SLACK};

fn input(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(name)).unwrap()
}

/// The image_decode input `file` decoded as `source` with the options it carries: the result and
/// the peak of the call (`measure`), after the whole target contract has passed on it.
fn decode_input(file: &str, source: &str) -> (Result<Vec<u8>, images::ImageDataError>, usize) {
    let bytes = input(file);
    contract::run("image_decode", &bytes);
    let (opts, image) = contract::image_options(&bytes);
    measure(|| images::decode_image_with(image, source, &opts))
}

/// A checkpoint header of 2,000 one-key objects (14 kB) made the JSON tree of the header check
/// cost ~96 bytes per header byte (9.6 GB for a header at the 100 MB limit); the header is now
/// read as a stream and the call holds a few times the input at most.
#[test]
fn checkpoint_header_of_many_small_objects_costs_little_memory() {
    let bytes = input("checkpoint_decode-json-tree.bin");
    let (r, peak) = measure(|| checkpoint::decode(&bytes));
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("tensor \"a\": missing or non-string dtype"), "{msg}");
    assert!(peak <= 4 * bytes.len() + (64 << 10), "peak {peak} bytes for a {}-byte input", bytes.len());
    contract::run("checkpoint_decode", &bytes);
}

/// A tensor entry with a field other than dtype, shape and data_offsets is refused by name, so
/// safetensors, which buffers whole entries to parse them, never sees a hostile one.
#[test]
fn checkpoint_entry_with_an_unknown_field_is_refused_by_name() {
    let junk = format!("[{}0]", "[0],".repeat(10_000));
    let header = format!(r#"{{"w":{{"dtype":"F32","shape":[1],"data_offsets":[0,4],"junk":{junk}}}}}"#);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let (r, peak) = measure(|| checkpoint::decode(&bytes));
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("tensor \"w\": unknown field \"junk\""), "{msg}");
    assert!(peak <= 64 << 10, "peak {peak} bytes");
}

/// GNU long-name and pax records of 8 MiB each (17 kB compressed) were read whole into memory by
/// tar; they are now skipped like any other entry, and the batch after them is still found.
#[test]
fn cifar_archive_skips_long_name_and_pax_records_unread() {
    let bytes = input("cifar_archive-long-name.bin");
    let (split, opts, archive) = contract::archive_options(&bytes);
    assert_eq!((split, opts), (Split::Test, CifarOptions { records_per_batch: 1 }));
    let (r, peak) = measure(|| cifar::read_archive_with(archive, "long.tar.gz", split, &opts));
    let set = r.unwrap();
    assert_eq!(set.labels, [3]);
    assert!(peak <= contract::cifar_archive_bound(split, &opts), "peak {peak} bytes");
    contract::run("cifar_archive", &bytes);
}

/// A gray image converted to RGB was held three times over (decoded, a cropped copy, the
/// conversion): 5 bytes per pixel. The decoded image is now freed as it is converted: 4 bytes per
/// pixel (luma + RGB) at the peak, so 1 GiB for the largest image allowed, not 1.25 GiB.
#[test]
fn image_decode_holds_one_decoded_image_and_its_conversion_at_most() {
    let (r, peak) = decode_input("image_decode-gray-to-rgb-peak.bin", "gray.png");
    assert_eq!(r.unwrap(), vec![0; 3 * 32 * 32]);
    let pixels = 2048 * 2047;
    assert!(peak <= 4 * pixels + SLACK, "peak {peak} bytes, {:.2} per pixel", peak as f64 / pixels as f64);
}

/// Found by `scripts/fuzz` (a libFuzzer slow unit, 10 s): 656 bytes of JPEG declaring 9737×8449
/// gray pixels, which the decoder filled in and which took 1.3 s and 329 MB in release. A JPEG
/// shorter than w·h/2048 bytes cannot be whole and is now refused before decoding.
#[test]
fn image_decode_refuses_a_jpeg_too_short_for_its_pixels() {
    let (r, peak) = decode_input("image_decode-truncated-jpeg-slow.bin", "short.jpg");
    let msg = r.unwrap_err().to_string();
    assert_eq!(msg, "short.jpg: truncated JPEG: 656 bytes cannot hold 9737×8449 pixels (at least 40169 bytes)");
    assert!(peak <= 64 << 10, "peak {peak} bytes");
}

/// A line of a million commas made the csv reader's field table cost ~40 bytes per input byte;
/// lines above `MAX_CSV_LINE_BYTES` are now refused before parsing, with their line number.
#[test]
fn csv_line_above_the_limit_is_refused_before_parsing() {
    let text = format!("x,y\n1,2\n{}\n", ",".repeat(1 << 20));
    let (r, peak) = measure(|| data::parse_csv(&text, "wide.csv"));
    let msg = r.unwrap_err().to_string();
    assert_eq!(msg, "wide.csv: line 3: line of 1048576 bytes, more than the 65536-byte limit");
    assert!(peak <= 64 << 10, "peak {peak} bytes");
    // A quoted field may still span several lines (fields are trimmed).
    let quoted = format!("x,y\n\"1{}\",2\n", "\n".repeat(10));
    assert_eq!(data::parse_csv(&quoted, "q.csv").unwrap().data, [1.0, 2.0]);
    contract::run("csv_points", text.as_bytes());
}

/// A quoted TOML key holding a newline was echoed raw: a two-line error. It is escaped now.
#[test]
fn run_config_unknown_key_with_a_newline_is_one_line() {
    let text = "\"a\\nb\" = 0\n";
    let msg = contract::parse_run_config(text).unwrap_err();
    assert_eq!(msg, "fuzz.toml: unknown key `a\\nb`; did you mean `data`?");
    contract::run("run_config", text.as_bytes());
}
