//! The contract of every reader of untrusted bytes, shared by the fuzz targets (`fuzz/`) and the
//! property tests (`tests/native/prop_parsers.rs`; tests/native/main.rs includes this file): each
//! input gets a value or one error whose text is one line; no panic; one call allocates at most
//! the reader's bound.
//!
//! One function per target (`checkpoint_decode`, `csv_points`, ...) runs the reader on the raw
//! input and panics when the contract breaks; the fuzz targets and the property tests call the
//! same functions. `CountingAlloc` (installed here as the global allocator) wraps the system
//! allocator and keeps, per thread, the live bytes and their peak; `measure` returns the peak of
//! one call above what was live before it. The bounds are the ones `docs/fuzzing.md` states.

// A global allocator is an `unsafe impl`; this wrapper only forwards to `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Display;

use cdl::train::checkpoint;
use cdl::train::cifar::{self, CifarOptions, Split, RECORD_BYTES};
use cdl::train::data;
use cdl::train::images::{self, FolderOptions, MAX_DECODED_BYTES};

/// The run-config parser lives in the `cdl` binary, not the library: its file is compiled here.
#[allow(dead_code)]
#[path = "../../src/cli/train.rs"]
mod train;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// Counting allocator

/// `System`, counting the live bytes of each thread and their peak.
pub struct CountingAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (memory freed by another thread than the
    /// one that allocated it makes this drift; the readers are single-threaded).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Highest `LIVE` since the last `measure` began.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: never panic inside the allocator, even while a thread is being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the new block arriving before the old one leaves: what a copying
            // realloc holds at its peak.
            count(new_size as isize);
            count(-(layout.size() as isize));
        }
        p
    }
}

/// Runs `f` and returns its result with the peak number of bytes it held live at once (on this
/// thread, above what was live when it started). Needs `CountingAlloc` as the global allocator.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - start).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// The contract

/// Panics unless `r` is a value or an error whose text is one non-empty line.
pub fn assert_one_line<T, E: Display>(reader: &str, r: &Result<T, E>) {
    if let Err(e) = r {
        let msg = e.to_string();
        assert!(!msg.trim().is_empty(), "{reader}: empty error message");
        assert!(!msg.contains(['\n', '\r']), "{reader}: error message is not one line: {msg:?}");
    }
}

/// Panics when one call of `reader` held more than `bound` bytes at its peak.
pub fn assert_within(reader: &str, peak: usize, bound: usize, input_len: usize) {
    assert!(
        peak <= bound,
        "{reader}: peak allocation {peak} bytes exceeds the bound {bound} bytes (input {input_len} bytes)"
    );
}

// ---------------------------------------------------------------------------------------------
// Bounds, per reader (bytes held live at once during one call)

/// Fixed allowance of every call: decoder state, tables, small buffers, the error message.
pub const SLACK: usize = 1 << 20;

/// `checkpoint::decode`: the header is read as a stream (no JSON tree), then safetensors parses
/// it (buffering each entry: 32 bytes per shape dimension of 2 input bytes, doubled as the buffer
/// grows) and the tensors are copied out: 48 bytes per input byte at most (a long shape).
pub fn checkpoint_bound(input_len: usize) -> usize {
    48 * input_len + SLACK
}

/// `data::parse_csv*`: the points (f32, in a growing vector) and one record of at most
/// `MAX_CSV_LINE_BYTES` per line.
pub fn csv_bound(input_len: usize) -> usize {
    8 * input_len + 64 * data::MAX_CSV_LINE_BYTES + SLACK
}

/// `cifar::parse_batch`: the images and labels, the size of the input.
pub fn cifar_batch_bound(input_len: usize) -> usize {
    input_len + SLACK
}

/// `cifar::read_archive_with`: the split's batches (allocated up front) plus one batch being
/// read, whatever the archive holds; gzip's window and tar's headers fit in `SLACK`.
pub fn cifar_archive_bound(split: Split, opts: &CifarOptions) -> usize {
    (split.files().len() + 1) * opts.records_per_batch * RECORD_BYTES + SLACK
}

/// `images::decode_image_with`: the decoder's buffer (at most `MAX_DECODED_BYTES`, and at most
/// 8 bytes per declared pixel) and its 8-bit conversion (at most 3 bytes per byte: luma to RGB),
/// or a progressive JPEG decoder's coefficients; then the output.
pub fn image_bound(declared_pixels: u64, opts: &FolderOptions) -> usize {
    let decoded = declared_pixels.saturating_mul(8).min(MAX_DECODED_BYTES) as usize;
    4 * decoded + 4 * opts.image_bytes() + SLACK
}

/// `train::apply_config`: the TOML table (a tree node of ~800 bytes per inline table `{a=1},`)
/// and its JSON copy: 256 bytes per input byte at most; at most `MAX_CONFIG_BYTES` of text,
/// checked before reading.
pub fn run_config_bound(input_len: usize) -> usize {
    256 * input_len + SLACK
}

// ---------------------------------------------------------------------------------------------
// Targets: raw input in, contract checked

/// Runs `read`, checks the contract and returns the result.
fn checked<T, E: Display>(
    reader: &str,
    input_len: usize,
    bound: usize,
    read: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let (r, peak) = measure(read);
    assert_one_line(reader, &r);
    assert_within(reader, peak, bound, input_len);
    r
}

/// `checkpoint::decode` on the input; a checkpoint it accepts encodes and decodes to itself.
pub fn checkpoint_decode(input: &[u8]) {
    let r = checked("checkpoint::decode", input.len(), checkpoint_bound(input.len()), || checkpoint::decode(input));
    if let Ok(ck) = r {
        let again = checkpoint::encode(&ck).and_then(|b| checkpoint::decode(&b));
        let again = again.unwrap_or_else(|e| panic!("a decoded checkpoint does not encode and decode again: {e}"));
        assert_eq!(bits(&again), bits(&ck), "a decoded checkpoint changes through encode and decode");
    }
}

/// A checkpoint as comparable values: f32 by bit pattern (NaN included).
fn bits(ck: &checkpoint::Checkpoint) -> impl PartialEq + std::fmt::Debug {
    let tensors: Vec<(String, Vec<usize>, Vec<u32>)> = ck
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect();
    (ck.arch.clone(), ck.model_config.clone(), ck.step, ck.extra.clone(), ck.format_version(), tensors)
}

/// Row limit of the `csv_points` target: small, so that the limit's error is reached.
pub const CSV_MAX_POINTS: usize = 64;

/// `data::parse_csv_limited` on the input as text (invalid UTF-8 replaced: the UTF-8 check is
/// `read_csv`'s); accepted points are 2-D, finite and within the row limit.
pub fn csv_points(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let r = checked("data::parse_csv_limited", text.len(), csv_bound(text.len()), || {
        data::parse_csv_limited(&text, "fuzz.csv", CSV_MAX_POINTS)
    });
    if let Ok(p) = r {
        assert_eq!(p.dim, 2);
        assert!(!p.is_empty() && p.len() <= CSV_MAX_POINTS && p.data.len() == 2 * p.len());
        assert!(p.data.iter().all(|v| v.is_finite()), "non-finite point accepted");
    }
}

/// `cifar::parse_batch` on the input; an accepted batch holds one label < 10 and one image per
/// 3073 bytes.
pub fn cifar_batch(input: &[u8]) {
    let r = checked("cifar::parse_batch", input.len(), cifar_batch_bound(input.len()), || {
        cifar::parse_batch(input, "fuzz.bin")
    });
    if let Ok(c) = r {
        assert_eq!(c.len() * RECORD_BYTES, input.len());
        assert_eq!(c.images.len(), c.len() * cifar::IMAGE_BYTES);
        assert!(c.labels.iter().all(|&l| l < 10));
    }
}

/// The options byte of `cifar_archive`: bit 0 the split (test when set), bit 1 the records per
/// batch (2 when set, else 1). An empty input is the train split, 1 record.
pub fn archive_options(input: &[u8]) -> (Split, CifarOptions, &[u8]) {
    let (&b, rest) = input.split_first().unwrap_or((&0, input));
    let split = if b & 1 == 1 { Split::Test } else { Split::Train };
    (split, CifarOptions { records_per_batch: 1 + usize::from((b >> 1) & 1) }, rest)
}

/// `cifar::read_archive_with` on the input after its options byte; an accepted archive gives
/// every batch of the split.
pub fn cifar_archive(input: &[u8]) {
    let (split, opts, archive) = archive_options(input);
    let r = checked("cifar::read_archive_with", input.len(), cifar_archive_bound(split, &opts), || {
        cifar::read_archive_with(archive, "fuzz.tar.gz", split, &opts)
    });
    if let Ok(c) = r {
        assert_eq!(c.len(), split.files().len() * opts.records_per_batch);
        assert!(c.labels.iter().all(|&l| l < 10));
    }
}

/// The options byte of `image_decode`: bits 0-4 the output size minus 1 (1..=32), bit 5 the
/// channels (3 when set, else 1), bit 6 exact mode. An empty input is size 1, luma.
pub fn image_options(input: &[u8]) -> (FolderOptions, &[u8]) {
    let (&b, rest) = input.split_first().unwrap_or((&0, input));
    let opts =
        FolderOptions { size: 1 + u32::from(b & 31), channels: if b & 32 != 0 { 3 } else { 1 }, exact: b & 64 != 0 };
    (opts, rest)
}

/// Pixels the image header declares (0 when the header cannot be read).
fn declared_pixels(bytes: &[u8]) -> u64 {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .map_or(0, |(w, h)| u64::from(w) * u64::from(h))
}

/// `images::decode_image_with` on the input after its options byte; an accepted image has the
/// output size.
pub fn image_decode(input: &[u8]) {
    let (opts, bytes) = image_options(input);
    let bound = image_bound(declared_pixels(bytes), &opts);
    let r = checked("images::decode_image_with", input.len(), bound, || {
        images::decode_image_with(bytes, "fuzz.img", &opts)
    });
    if let Ok(img) = r {
        assert_eq!(img.len(), opts.image_bytes());
    }
}

/// `train::apply_config` on `text` over the default arguments, as `cdl train --config` with no
/// other flag.
pub fn parse_run_config(text: &str) -> Result<(), String> {
    let mut base = train::TrainArgs::defaults();
    base.config = Some("fuzz.toml".into());
    train::apply_config(base, text, "fuzz.toml", None).map(drop)
}

/// The target function called `target`.
pub fn run(target: &str, input: &[u8]) {
    match target {
        "checkpoint_decode" => checkpoint_decode(input),
        "csv_points" => csv_points(input),
        "cifar_batch" => cifar_batch(input),
        "cifar_archive" => cifar_archive(input),
        "image_decode" => image_decode(input),
        "run_config" => run_config(input),
        _ => panic!("no fuzz target {target}"),
    }
}

/// `train::apply_config` on the input as text (at most `MAX_CONFIG_BYTES`, as `resolve` reads);
/// an accepted config, written as `cdl train` writes config.toml, reads back to the same run.
pub fn run_config(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if text.len() as u64 > train::MAX_CONFIG_BYTES {
        return;
    }
    let mut base = train::TrainArgs::defaults();
    base.config = Some("fuzz.toml".into());
    let r = checked("train::apply_config", text.len(), run_config_bound(text.len()), || {
        train::apply_config(base.clone(), &text, "fuzz.toml", None)
    });
    if let Ok(args) = r {
        let written = toml::to_string(&args).unwrap_or_else(|e| panic!("an accepted config cannot be written: {e}"));
        let again = train::apply_config(base, &written, "config.toml", None)
            .unwrap_or_else(|e| panic!("a written config does not read back: {e}\n{written}"));
        let json = |a: &train::TrainArgs| serde_json::to_value(a).ok();
        assert_eq!(json(&again), json(&args), "a config changes when written and read back");
    }
}
