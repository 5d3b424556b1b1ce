//! Image training data: folders of PNG/JPEG files (`load_folder`; `decode_image` is
//! target-free), the u8 → [−1, 1] gather with random horizontal flips shared with CIFAR-10
//! (`train::cifar`), and `ImageDataError`, the one-line error of both that names the file.
//! Input is bounded before decoding (`MAX_*`). Not here: folder labels (one class), recursion,
//! augmentation other than flips, network access (math.md §9 pitfall 16).

use std::fmt;
use std::io::Cursor;

#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Limits, Pixel};

use crate::diffusion::rng::HostRng;
use crate::text::OneLine;
use crate::train::trainer::Examples;

// ---------------------------------------------------------------------------------------------
// Constants

/// Stream tag (words[1]) of the horizontal flips; words = [step lo, TAG_FLIP, step hi] and the
/// uniform's index is the position in the batch (distinct from `train::data::TAG_*` and the
/// loss's and sampler's tags).
pub const TAG_FLIP: u32 = 0x20;

/// Largest image file read or decoded, in bytes (64 MiB), checked before reading.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// Largest width or height an image file may declare.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest buffer the decoder may allocate for one image, in bytes (256 MiB: 64 Mpx of RGBA8).
pub const MAX_DECODED_BYTES: u64 = 256 << 20;
/// Largest output side `size` (a 4096×4096×3 image is 48 MiB of u8).
pub const MAX_OUTPUT_SIDE: u32 = 4096;
/// File extensions read from a folder (compared case-insensitively); others are skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

// ---------------------------------------------------------------------------------------------
// Errors

/// Everything that can go wrong reading image data (folders, CIFAR-10); `Display` is one line
/// that names the file, archive or archive entry, and the problem.
#[derive(Debug)]
pub enum ImageDataError {
    /// A file-system operation on `path` failed; `action` reads like "cannot open".
    Io { action: &'static str, path: String, err: std::io::Error },
    /// The contents of `source` (a file, or "archive: entry") are wrong; `msg` says how.
    Bad { source: String, msg: String },
    /// `source` is `bytes` long, more than the `limit` for `what`; refused before reading.
    TooLarge { source: String, bytes: u64, limit: u64, what: &'static str },
    /// The gzip or tar stream of `source` is corrupt or truncated.
    Archive { source: String, err: std::io::Error },
    /// Files that `source` must hold but does not (CIFAR-10 batches).
    Missing { source: String, names: Vec<String> },
    /// A folder `source` with no PNG/JPEG file.
    Empty { source: String },
    /// A caller argument out of range (size, channels, records per batch).
    Invalid(String),
}

impl fmt::Display for ImageDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { action, path, err } => write!(f, "{action} {}: {}", OneLine(path), OneLine(&err.to_string())),
            Self::Bad { source, msg } => write!(f, "{}: {}", OneLine(source), OneLine(msg)),
            Self::TooLarge { source, bytes, limit, what } => {
                write!(f, "{}: {bytes} bytes, more than the {limit}-byte limit for {what}", OneLine(source))
            }
            Self::Archive { source, err } => {
                write!(f, "{}: corrupt or truncated archive: {}", OneLine(source), OneLine(&err.to_string()))
            }
            Self::Missing { source, names } => {
                write!(f, "{}: missing {}", OneLine(source), OneLine(&names.join(", ")))
            }
            Self::Empty { source } => {
                write!(f, "{}: no image files (.png, .jpg, .jpeg) in this folder", OneLine(source))
            }
            Self::Invalid(m) => write!(f, "invalid image data argument: {}", OneLine(m)),
        }
    }
}

impl std::error::Error for ImageDataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { err, .. } | Self::Archive { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl ImageDataError {
    /// A content error about `source`.
    pub(crate) fn bad(source: &str, msg: impl Into<String>) -> Self {
        Self::Bad { source: source.to_string(), msg: msg.into() }
    }

    /// A file-system error about `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn io(action: &'static str, path: &Path, err: std::io::Error) -> Self {
        Self::Io { action, path: path.display().to_string(), err }
    }
}

// ---------------------------------------------------------------------------------------------
// Gather (shared with CIFAR-10)

/// Whether the example at `position` of step `step`'s batch is mirrored: uniform `position` of
/// the stream (seed, [step lo, TAG_FLIP, step hi]) below ½. A pure function of (seed, step,
/// position), independent of which example sits there.
pub fn flip_at(seed: u64, step: u64, position: usize) -> bool {
    HostRng::new(seed, [step as u32, TAG_FLIP, (step >> 32) as u32]).uniform_at(position as u64) < 0.5
}

/// A byte as a model value: v/127.5 − 1 in f32 (0 → −1, 255 → 1), the inverse of the export
/// rule clip(x·127.5 + 128, 0, 255) of math.md §7.1 up to rounding.
#[inline]
pub fn to_unit(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// Writes images `idx` of `images` (N, channels, side, side) u8 into `out` (B, channels·side²)
/// as v/127.5 − 1, mirroring every row of the examples `flip_at` picks when `flip` is set.
pub(crate) fn gather_u8_chw(
    images: &[u8],
    channels: usize,
    side: usize,
    idx: &[u32],
    flip: Option<(u64, u64)>,
    out: &mut [f32],
) {
    let n = channels * side * side;
    for (j, &i) in idx.iter().enumerate() {
        let src = &images[i as usize * n..(i as usize + 1) * n];
        let dst = &mut out[j * n..(j + 1) * n];
        let mirror = flip.is_some_and(|(seed, step)| flip_at(seed, step, j));
        if mirror {
            for (d, s) in dst.chunks_exact_mut(side).zip(src.chunks_exact(side)) {
                for (o, &v) in d.iter_mut().zip(s.iter().rev()) {
                    *o = to_unit(v);
                }
            }
        } else {
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = to_unit(v);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding one image

/// How images are brought to the common size.
///
/// The resize rule: an image of w×h is center-cropped to the square of side s = min(w, h), with
/// its top-left corner at ((w − s)/2, (h − s)/2) (integer division, so an odd excess leaves the
/// extra column/row on the right/bottom), converted to 8-bit RGB or luma, then resized to
/// size×size with a triangle (bilinear, area-averaging when shrinking) filter; an image whose crop
/// is already size×size is not resampled. Colour: `channels` 3 gives RGB, 1 gives luma (Rec. 709
/// weights, the `image` crate's); alpha is dropped, not composited; 16-bit images are scaled to 8
/// bits. With `exact` there is no crop, resize or colour conversion: an image must already be
/// size×size and be colour (channels 3) or gray (channels 1), else the error names the file and
/// both sizes (or both colour kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Output side: every image becomes size×size.
    pub size: u32,
    /// 3 (RGB) or 1 (luma).
    pub channels: u32,
    /// Exact mode: no crop, resize or colour conversion; an image of another size, or gray for
    /// channels 3 (colour for channels 1), is an error naming the file. Alpha is still dropped.
    pub exact: bool,
}

impl FolderOptions {
    /// Center-crop and resize to size×size, converting to `channels`.
    pub fn resize(size: u32, channels: u32) -> Self {
        Self { size, channels, exact: false }
    }

    /// Refuses a size or channel count no image set can have.
    pub fn validate(&self) -> Result<(), ImageDataError> {
        if self.size == 0 || self.size > MAX_OUTPUT_SIDE {
            return Err(ImageDataError::Invalid(format!(
                "image size must lie in 1..={MAX_OUTPUT_SIDE}, got {}",
                self.size
            )));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(ImageDataError::Invalid(format!("channels must be 1 or 3, got {}", self.channels)));
        }
        Ok(())
    }

    /// Bytes of one output image: channels·size².
    pub fn image_bytes(&self) -> usize {
        self.channels as usize * self.size as usize * self.size as usize
    }
}

/// Decodes one PNG or JPEG (format from the content, not the name) into size×size u8 CHW
/// (channels, size, size), center-cropped and resized as `FolderOptions` states. `source` names
/// the image in errors.
pub fn decode_image(bytes: &[u8], source: &str, size: u32, channels: u32) -> Result<Vec<u8>, ImageDataError> {
    decode_image_with(bytes, source, &FolderOptions::resize(size, channels))
}

/// `decode_image` with every option (exact mode included).
pub fn decode_image_with(bytes: &[u8], source: &str, opts: &FolderOptions) -> Result<Vec<u8>, ImageDataError> {
    opts.validate()?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(ImageDataError::TooLarge {
            source: source.to_string(),
            bytes: bytes.len() as u64,
            limit: MAX_IMAGE_FILE_BYTES,
            what: "an image file",
        });
    }
    let img = decode_bounded(bytes, source)?;
    let (w, h) = (img.width(), img.height());
    let size = opts.size;
    let color = opts.channels == 3;
    if opts.exact {
        if (w, h) != (size, size) {
            return Err(ImageDataError::bad(source, format!("image is {w}×{h}, expected {size}×{size}")));
        }
        if img.color().has_color() != color {
            let kind = |c: bool| if c { "colour" } else { "grayscale" };
            return Err(ImageDataError::bad(
                source,
                format!("image is {}, expected {}", kind(img.color().has_color()), kind(color)),
            ));
        }
    }
    // The decoded image is converted whole and freed (`into_*`: no copy when it already is 8-bit
    // RGB or luma), then cropped as a view: at the peak one decoded image and its conversion are
    // held, never also a cropped copy. Per-pixel conversion and cropping commute.
    let s = w.min(h);
    let (x, y) = ((w - s) / 2, (h - s) / 2);
    let hwc =
        if color { crop_resize(img.into_rgb8(), x, y, s, size) } else { crop_resize(img.into_luma8(), x, y, s, size) };
    Ok(hwc_to_chw(&hwc, opts.channels as usize))
}

/// The s×s square of `img` at (x, y), resized to size×size (not resampled when s = size), as
/// interleaved (H, W, C) bytes.
fn crop_resize<P: Pixel<Subpixel = u8> + 'static>(
    img: ImageBuffer<P, Vec<u8>>,
    x: u32,
    y: u32,
    s: u32,
    size: u32,
) -> Vec<u8> {
    if img.dimensions() == (s, s) {
        return if s == size {
            img.into_raw()
        } else {
            image::imageops::resize(&img, size, size, FilterType::Triangle).into_raw()
        };
    }
    let view = image::imageops::crop_imm(&img, x, y, s, s);
    if s == size {
        view.to_image().into_raw()
    } else {
        image::imageops::resize(&*view, size, size, FilterType::Triangle).into_raw()
    }
}

/// Reads the header, checks the bounds, then decodes. Only PNG and JPEG are accepted.
///
/// Bounds, checked before decoding: a file of at most `MAX_IMAGE_FILE_BYTES`; width and height
/// at most `MAX_IMAGE_SIDE`; the decoder's output buffer at most `MAX_DECODED_BYTES` (the
/// `image` crate's `Limits`, checked against the header before the pixel buffer is allocated).
/// The decoded image is freed as it is converted to 8 bits, so one call holds at most about
/// 4 × `MAX_DECODED_BYTES` (luma converted to RGB) plus the output. A JPEG shorter than its
/// declared pixels need (w·h/2048 bytes) is refused as truncated before decoding.
fn decode_bounded(bytes: &[u8], source: &str) -> Result<DynamicImage, ImageDataError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageDataError::bad(source, format!("cannot read image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png) => {}
        Some(ImageFormat::Jpeg) => check_jpeg_length(bytes, source)?,
        _ => return Err(ImageDataError::bad(source, "not a PNG or JPEG image")),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = reader;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| ImageDataError::bad(source, format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageDataError::bad(source, "image has no pixels"));
    }
    Ok(img)
}

/// Pixels one byte of JPEG can hold at most: its entropy-coded data spends at least one bit on
/// each 8×8 block of its largest component, which spans at least a quarter of the image
/// (sampling factors are 1..=4), so a w×h JPEG has at least w·h/2048 bytes.
const JPEG_PIXELS_PER_BYTE: u64 = 2048;

/// Refuses a JPEG too short for the pixels its header declares. The decoder fills the blocks
/// missing from a truncated file, so without this a few hundred bytes declaring 8,000² pixels
/// would be decoded, converted and resized for seconds.
fn check_jpeg_length(bytes: &[u8], source: &str) -> Result<(), ImageDataError> {
    // A header that cannot be read is left to the decoder, which names the problem.
    let Ok((w, h)) = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg).into_dimensions() else {
        return Ok(());
    };
    let need = u64::from(w) * u64::from(h) / JPEG_PIXELS_PER_BYTE;
    if (bytes.len() as u64) < need {
        let msg = format!("truncated JPEG: {} bytes cannot hold {w}×{h} pixels (at least {need} bytes)", bytes.len());
        return Err(ImageDataError::bad(source, msg));
    }
    Ok(())
}

/// (H, W, C) interleaved → (C, H, W) planes.
fn hwc_to_chw(hwc: &[u8], channels: usize) -> Vec<u8> {
    let px = hwc.len() / channels;
    let mut chw = vec![0u8; hwc.len()];
    for (p, pixel) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in pixel.iter().enumerate() {
            chw[c * px + p] = v;
        }
    }
    chw
}

// ---------------------------------------------------------------------------------------------
// Image sets

/// Decoded images, all size×size with `channels` channels, as u8 CHW; unlabelled.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Side of every image.
    pub size: u32,
    /// 1 or 3.
    pub channels: u32,
    /// (N, channels, size, size) u8.
    pub images: Vec<u8>,
    /// One name per image (the file name for folders), in order.
    pub names: Vec<String>,
    /// Mirror examples at random in `gather` (see `flip_at`).
    pub flip: bool,
}

impl ImageSet {
    /// An empty set of size×size images with `channels` channels, flips off.
    pub fn new(size: u32, channels: u32) -> Self {
        Self { size, channels, images: Vec::new(), names: Vec::new(), flip: false }
    }

    /// Bytes of one image: channels·size².
    pub fn image_bytes(&self) -> usize {
        self.channels as usize * self.size as usize * self.size as usize
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len().checked_div(self.image_bytes()).unwrap_or(0)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image i, (channels, size, size) u8.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }

    /// Decodes `bytes` (see `decode_image_with`) and appends it under `name`.
    pub fn push_encoded(&mut self, bytes: &[u8], name: &str, exact: bool) -> Result<(), ImageDataError> {
        let opts = FolderOptions { size: self.size, channels: self.channels, exact };
        let img = decode_image_with(bytes, name, &opts)?;
        self.images.extend_from_slice(&img);
        self.names.push(name.to_string());
        Ok(())
    }
}

impl Examples for ImageSet {
    fn len(&self) -> usize {
        ImageSet::len(self)
    }
    fn row_len(&self) -> usize {
        self.image_bytes()
    }
    /// Labels are left as they are (an image folder is one class).
    fn gather(&self, idx: &[u32], seed: u64, step: u64, out: &mut [f32], _labels: &mut [u32]) {
        let flip = self.flip.then_some((seed, step));
        gather_u8_chw(&self.images, self.channels as usize, self.size as usize, idx, flip, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Folders (native)

/// Every PNG/JPEG file directly in `dir` (not in sub-directories), sorted by file name,
/// center-cropped and resized to size×size with `channels` 1 or 3. Files whose extension is not
/// png/jpg/jpeg (any case) and hidden files (name starting with '.') are skipped; an undecodable
/// image is an error naming it; a folder without images is an error. Flips are off.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_folder(dir: &Path, size: u32, channels: u32) -> Result<ImageSet, ImageDataError> {
    load_folder_with(dir, &FolderOptions::resize(size, channels))
}

/// `load_folder` with every option (exact mode included).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_folder_with(dir: &Path, opts: &FolderOptions) -> Result<ImageSet, ImageDataError> {
    use std::io::Read;

    opts.validate()?;
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(ImageDataError::Empty { source: dir.display().to_string() });
    }
    let mut set = ImageSet::new(opts.size, opts.channels);
    set.images.reserve(files.len().saturating_mul(opts.image_bytes()));
    let mut bytes = Vec::new();
    for path in files {
        let source = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|e| ImageDataError::io("cannot open", &path, e))?;
        let len = file.metadata().map_err(|e| ImageDataError::io("cannot read", &path, e))?.len();
        if len > MAX_IMAGE_FILE_BYTES {
            return Err(ImageDataError::TooLarge {
                source,
                bytes: len,
                limit: MAX_IMAGE_FILE_BYTES,
                what: "an image file",
            });
        }
        bytes.clear();
        // One byte past the bound, so a file that grew since `metadata` is still refused.
        file.take(MAX_IMAGE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageDataError::io("cannot read", &path, e))?;
        let name = path.file_name().map_or_else(|| source.clone(), |n| n.to_string_lossy().into_owned());
        let img = decode_image_with(&bytes, &source, opts)?;
        set.images.extend_from_slice(&img);
        set.names.push(name);
    }
    Ok(set)
}

/// The image files of `dir`, sorted by file name.
#[cfg(not(target_arch = "wasm32"))]
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, ImageDataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ImageDataError::io("cannot read folder", dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ImageDataError::io("cannot read folder", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        if !ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks; directories named like images are skipped.
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}
