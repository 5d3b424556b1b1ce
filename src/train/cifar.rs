//! CIFAR-10 from its official binary distribution (https://www.cs.toronto.edu/~kriz/cifar.html,
//! "CIFAR-10 binary version"), supplied by the user as a file (math.md §9 pitfall 16): the
//! .tar.gz streamed without extracting, a folder of .bin files or one .bin; sizes are checked
//! before anything is allocated. Not here: download, other CIFAR variants (CIFAR-100's records
//! have two label bytes), `batches.meta.txt` parsing (the class names are `Cifar::CLASSES`).

use std::io::Read;

#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use crate::train::images::{gather_u8_chw, ImageDataError};
use crate::train::trainer::Examples;

// ---------------------------------------------------------------------------------------------
// Constants

/// Image side.
pub const SIDE: usize = 32;
/// Bytes of one image: 3 × 32 × 32.
///
/// Format: `cifar-10-binary.tar.gz` holds `cifar-10-batches-bin/data_batch_1.bin` ..
/// `data_batch_5.bin` (train, 50,000 images), `test_batch.bin` (10,000) and `batches.meta.txt`.
/// Each batch is 10,000 records of 3073 bytes: one label byte (0..9, `Cifar::CLASSES`) and a
/// 32×32 image as 1024 R, 1024 G, 1024 B bytes, each plane row-major, i.e. CHW.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Bytes of one record: label + image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in each official batch file.
pub const RECORDS_PER_BATCH: usize = 10_000;
/// Bytes of each official batch file (30,730,000).
pub const BATCH_BYTES: usize = RECORDS_PER_BATCH * RECORD_BYTES;
/// The train split's files, in concatenation order.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test split's file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the official archive unpacks to.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

// ---------------------------------------------------------------------------------------------
// Data

/// CIFAR-10 images and labels, kept as u8 CHW (150 MB for the train split, not 600 MB of f32);
/// `CifarExamples` is the trainer's view (values v/127.5 − 1, optional flips, optional labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar {
    /// (N, 3, 32, 32) u8, planes R, G, B.
    pub images: Vec<u8>,
    /// (N,) in 0..10.
    pub labels: Vec<u8>,
}

impl Cifar {
    /// Class names by label (`batches.meta.txt`).
    pub const CLASSES: [&'static str; 10] =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image i, (3, 32, 32) u8.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
}

/// Which files make the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// data_batch_1.bin .. data_batch_5.bin, concatenated in that order.
    Train,
    /// test_batch.bin.
    Test,
}

impl Split {
    /// The files of the split, in concatenation order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::Train => &TRAIN_FILES,
            Self::Test => std::slice::from_ref(&TEST_FILE),
        }
    }
}

/// How strictly batch sizes are checked.
///
/// `read_archive` and `load` require every batch to hold exactly `records_per_batch` records
/// (10,000 for the official files; tests make small archives with fewer); a larger file or entry
/// is refused by its size before it is read. Train batches are concatenated in the order
/// data_batch_1 .. data_batch_5, whatever the order in the archive or folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CifarOptions {
    /// Records every batch file must hold (`RECORDS_PER_BATCH` for the official files).
    pub records_per_batch: usize,
}

impl Default for CifarOptions {
    fn default() -> Self {
        Self { records_per_batch: RECORDS_PER_BATCH }
    }
}

impl CifarOptions {
    /// Bytes every batch file must have.
    fn batch_bytes(&self) -> Result<usize, ImageDataError> {
        match self.records_per_batch.checked_mul(RECORD_BYTES) {
            Some(b) if self.records_per_batch > 0 && b <= BATCH_BYTES * 16 => Ok(b),
            _ => Err(ImageDataError::Invalid(format!(
                "records per CIFAR-10 batch must lie in 1..={}, got {}",
                RECORDS_PER_BATCH * 16,
                self.records_per_batch
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses one batch file's bytes: any positive number of 3073-byte records, every label < 10.
/// `source` names the file in errors.
pub fn parse_batch(bytes: &[u8], source: &str) -> Result<Cifar, ImageDataError> {
    let n = check_records(bytes, source)?;
    let mut out = Cifar { images: vec![0; n * IMAGE_BYTES], labels: vec![0; n] };
    parse_into(bytes, source, &mut out.images, &mut out.labels)?;
    Ok(out)
}

/// The record count of a batch of `bytes.len()` bytes, or the size error.
fn check_records(bytes: &[u8], source: &str) -> Result<usize, ImageDataError> {
    let len = bytes.len();
    if len == 0 {
        return Err(ImageDataError::bad(source, "truncated or not a CIFAR-10 batch: 0 bytes (empty)"));
    }
    if !len.is_multiple_of(RECORD_BYTES) {
        return Err(ImageDataError::bad(
            source,
            format!("truncated or not a CIFAR-10 batch: {len} bytes, not a multiple of {RECORD_BYTES}"),
        ));
    }
    Ok(len / RECORD_BYTES)
}

/// Splits records into `images` (n·3072) and `labels` (n,), checking every label.
fn parse_into(bytes: &[u8], source: &str, images: &mut [u8], labels: &mut [u8]) -> Result<(), ImageDataError> {
    let records = bytes.chunks_exact(RECORD_BYTES);
    for (r, ((rec, img), lab)) in records.zip(images.chunks_exact_mut(IMAGE_BYTES)).zip(labels).enumerate() {
        if rec[0] >= 10 {
            return Err(ImageDataError::bad(
                source,
                format!("record {r}: label {} is not a CIFAR-10 class (0..=9)", rec[0]),
            ));
        }
        *lab = rec[0];
        img.copy_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Parses batch `slot` of a split into its place in `out`, requiring exactly
/// `records` records.
fn parse_slot(bytes: &[u8], source: &str, records: usize, slot: usize, out: &mut Cifar) -> Result<(), ImageDataError> {
    let n = check_records(bytes, source)?;
    if n != records {
        return Err(ImageDataError::bad(
            source,
            format!(
                "{n} records ({} bytes), expected {records} records ({} bytes) per CIFAR-10 batch",
                bytes.len(),
                records * RECORD_BYTES
            ),
        ));
    }
    let images = &mut out.images[slot * records * IMAGE_BYTES..(slot + 1) * records * IMAGE_BYTES];
    let labels = &mut out.labels[slot * records..(slot + 1) * records];
    parse_into(bytes, source, images, labels)
}

/// A zeroed set with room for `files` batches of `records` records.
fn alloc(files: usize, records: usize) -> Cifar {
    Cifar { images: vec![0; files * records * IMAGE_BYTES], labels: vec![0; files * records] }
}

/// The size error for a file or entry above one batch, before it is read.
fn too_large(source: String, bytes: u64, limit: usize) -> ImageDataError {
    ImageDataError::TooLarge { source, bytes, limit: limit as u64, what: "a CIFAR-10 batch" }
}

// ---------------------------------------------------------------------------------------------
// The .tar.gz archive

/// Reads `split` from the official `cifar-10-binary.tar.gz` stream, with official batch sizes.
/// `source` names the archive in errors.
pub fn read_archive(reader: impl Read, source: &str, split: Split) -> Result<Cifar, ImageDataError> {
    read_archive_with(reader, source, split, &CifarOptions::default())
}

/// `read_archive` with the batch size of `opts`.
///
/// Entries are matched by file name (any folder prefix; regular files only); other entries are
/// skipped unread. Names come from each entry's own tar header (the official archive's names are
/// short): GNU long-name and pax records are entries like the others, skipped unread, because
/// tar would hold each of them in memory whole, however large. The whole stream is read, so
/// gzip's CRC-32 of the archive is checked (a flipped bit anywhere is an error, not a silently
/// wrong pixel). A batch entry whose tar header declares more than one batch is refused before
/// its data is read; a duplicate batch is an error; the split's absent batches are named.
pub fn read_archive_with(
    reader: impl Read,
    source: &str,
    split: Split,
    opts: &CifarOptions,
) -> Result<Cifar, ImageDataError> {
    let batch_bytes = opts.batch_bytes()?;
    let files = split.files();
    let corrupt = |err: std::io::Error| ImageDataError::Archive { source: source.to_string(), err };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut out = alloc(files.len(), opts.records_per_batch);
    let mut seen = vec![false; files.len()];
    let mut buf = Vec::new();
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = path.rsplit('/').next().unwrap_or(&path);
        let Some(slot) = files.iter().position(|f| *f == name) else { continue };
        let entry_source = format!("{source}: {path}");
        if seen[slot] {
            return Err(ImageDataError::bad(&entry_source, "appears twice in the archive"));
        }
        let size = entry.size();
        if size > batch_bytes as u64 {
            return Err(too_large(entry_source, size, batch_bytes));
        }
        buf.clear();
        buf.reserve(size as usize);
        entry.take(size).read_to_end(&mut buf).map_err(corrupt)?;
        if buf.len() as u64 != size {
            let msg = format!("entry {path} ends after {} of its {size} bytes", buf.len());
            return Err(corrupt(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg)));
        }
        parse_slot(&buf, &entry_source, opts.records_per_batch, slot, &mut out)?;
        seen[slot] = true;
    }
    if seen.iter().any(|&s| !s) {
        let names = files.iter().zip(&seen).filter(|(_, &s)| !s).map(|(f, _)| (*f).to_string()).collect();
        return Err(ImageDataError::Missing { source: source.to_string(), names });
    }
    // Past tar's end-of-archive blocks, to the gzip trailer: its CRC-32 is checked at the end.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Files (native)

/// Loads `split` with official batch sizes from `path`: the `.tar.gz` archive (a name ending in
/// `.gz`/`.tgz`, or gzip content), a folder holding the `.bin` files (either
/// `cifar-10-batches-bin/` itself or its parent), or one `.bin` batch file (read as it is, whatever
/// the split).
#[cfg(not(target_arch = "wasm32"))]
pub fn load(path: &Path, split: Split) -> Result<Cifar, ImageDataError> {
    load_with(path, split, &CifarOptions::default())
}

/// `load` with the batch size of `opts`.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_with(path: &Path, split: Split, opts: &CifarOptions) -> Result<Cifar, ImageDataError> {
    let meta = std::fs::metadata(path).map_err(|e| ImageDataError::io("cannot open", path, e))?;
    if meta.is_dir() {
        return load_dir(path, split, opts);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let archive = if name.ends_with(".gz") || name.ends_with(".tgz") {
        true
    } else if name.ends_with(".bin") {
        false
    } else {
        // A batch starts with a label byte < 10, never with the gzip magic 1f 8b.
        let mut magic = [0u8; 2];
        let mut f = std::fs::File::open(path).map_err(|e| ImageDataError::io("cannot open", path, e))?;
        let got = f.read(&mut magic).map_err(|e| ImageDataError::io("cannot read", path, e))?;
        got == 2 && magic == [0x1f, 0x8b]
    };
    if archive {
        let f = std::fs::File::open(path).map_err(|e| ImageDataError::io("cannot open", path, e))?;
        read_archive_with(std::io::BufReader::new(f), &path.display().to_string(), split, opts)
    } else {
        let batch_bytes = opts.batch_bytes()?;
        let mut out = alloc(1, opts.records_per_batch);
        let bytes = read_bounded(path, batch_bytes)?;
        parse_slot(&bytes, &path.display().to_string(), opts.records_per_batch, 0, &mut out)?;
        Ok(out)
    }
}

/// The split's batches from a folder (`dir/cifar-10-batches-bin/` when it exists, else `dir`).
#[cfg(not(target_arch = "wasm32"))]
fn load_dir(dir: &Path, split: Split, opts: &CifarOptions) -> Result<Cifar, ImageDataError> {
    let batch_bytes = opts.batch_bytes()?;
    let nested = dir.join(ARCHIVE_DIR);
    let dir = if nested.is_dir() { nested } else { dir.to_path_buf() };
    let files = split.files();
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let names: Vec<String> =
        files.iter().zip(&paths).filter(|(_, p)| !p.is_file()).map(|(f, _)| (*f).to_string()).collect();
    if !names.is_empty() {
        return Err(ImageDataError::Missing { source: dir.display().to_string(), names });
    }
    let mut out = alloc(files.len(), opts.records_per_batch);
    for (slot, p) in paths.iter().enumerate() {
        let bytes = read_bounded(p, batch_bytes)?;
        parse_slot(&bytes, &p.display().to_string(), opts.records_per_batch, slot, &mut out)?;
    }
    Ok(out)
}

/// A file's bytes, refused by its size before reading when above `limit`.
#[cfg(not(target_arch = "wasm32"))]
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, ImageDataError> {
    let f = std::fs::File::open(path).map_err(|e| ImageDataError::io("cannot open", path, e))?;
    let len = f.metadata().map_err(|e| ImageDataError::io("cannot read", path, e))?.len();
    if len > limit as u64 {
        return Err(too_large(path.display().to_string(), len, limit));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // One byte past the bound, so a file that grew since `metadata` is still refused.
    f.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| ImageDataError::io("cannot read", path, e))?;
    if bytes.len() > limit {
        return Err(too_large(path.display().to_string(), bytes.len() as u64, limit));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// The trainer's view

/// CIFAR-10 as training examples: rows of 3072 values v/127.5 − 1 (CHW), each mirrored
/// left-right when `flip` is on and `images::flip_at(seed, step, position)` says so, and the
/// labels written when `class_conditional` is on (else the label buffer is left as it is).
#[derive(Clone, Debug)]
pub struct CifarExamples {
    data: Cifar,
    flip: bool,
    class_conditional: bool,
}

impl CifarExamples {
    /// Wraps `data`.
    pub fn new(data: Cifar, flip: bool, class_conditional: bool) -> Self {
        Self { data, flip, class_conditional }
    }

    /// The images and labels.
    pub fn data(&self) -> &Cifar {
        &self.data
    }

    /// Whether examples are mirrored at random.
    pub fn flip(&self) -> bool {
        self.flip
    }

    /// Whether `gather` writes labels.
    pub fn class_conditional(&self) -> bool {
        self.class_conditional
    }
}

impl Examples for CifarExamples {
    fn len(&self) -> usize {
        self.data.len()
    }
    fn row_len(&self) -> usize {
        IMAGE_BYTES
    }
    fn gather(&self, idx: &[u32], seed: u64, step: u64, out: &mut [f32], labels: &mut [u32]) {
        let flip = self.flip.then_some((seed, step));
        gather_u8_chw(&self.data.images, 3, SIDE, idx, flip, out);
        if self.class_conditional {
            for (l, &i) in labels.iter_mut().zip(idx) {
                *l = u32::from(self.data.labels[i as usize]);
            }
        }
    }
}
