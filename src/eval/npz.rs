//! Feature statistics as pytorch-fid stores them: an `.npz` (numpy's `np.savez`, a zip of `.npy`
//! arrays) holding `mu` (d,) and `sigma` (d, d) in float64, read and written. Reading is bounded
//! (`MAX_HEADER`, `MAX_ARRAY_BYTES`, entry sizes checked before allocating); every problem is a
//! one-line `EvalError::Format`.

use std::io::{Cursor, Read, Seek, Write};

use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::feature_stats::Moments;
use super::EvalError;

/// Largest `.npy` header read (numpy refuses larger ones by default too).
pub const MAX_HEADER: usize = 10_000;
/// Largest array read: 1 GiB, a float64 covariance of d ≈ 11,500 (FID's is d = 2048, 32 MiB).
pub const MAX_ARRAY_BYTES: u64 = 1 << 30;
/// Deflate expands at most ~1032-fold, so an entry claiming more than this many bytes per
/// compressed byte lies about its size (checked before the header's size is trusted).
const MAX_DEFLATE_RATIO: u64 = 1100;
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// One float array of an `.npz`, widened to f64, row-major (C order).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

// ---------------------------------------------------------------------------------------------
// Statistics (mu, sigma)

/// `m` as pytorch-fid's `.npz` bytes: `mu` (d,) and `sigma` (d, d), float64.
pub fn stats_npz_bytes(m: &Moments) -> Result<Vec<u8>, EvalError> {
    npz_bytes(&[("mu", &[m.dim], &m.mu), ("sigma", &[m.dim, m.dim], &m.sigma)])
}

/// Reads `mu` (d,) and `sigma` (d, d) from an `.npz`; other arrays in the archive are ignored.
pub fn read_stats<R: Read + Seek>(reader: R) -> Result<Moments, EvalError> {
    let mut arrays = read_npz(reader, &["mu", "sigma"])?.into_iter();
    let (Some(mu), Some(sigma)) = (arrays.next(), arrays.next()) else {
        return Err(EvalError::Format("the archive lacks mu or sigma".into()));
    };
    let [d] = mu.shape[..] else {
        return Err(EvalError::Format(format!("mu has shape {}, expected (d,)", shape_text(&mu.shape))));
    };
    if d == 0 || sigma.shape != [d, d] {
        return Err(EvalError::Format(format!(
            "sigma has shape {} for mu of shape ({d},), expected ({d}, {d})",
            shape_text(&sigma.shape)
        )));
    }
    for (what, a) in [("mu", &mu.data), ("sigma", &sigma.data)] {
        if let Some(i) = a.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::Format(format!("{what} holds the non-finite value {} at index {i}", a[i])));
        }
    }
    Ok(Moments { dim: d, mu: mu.data, sigma: sigma.data })
}

/// Writes `m` to `path` as pytorch-fid's `.npz` (atomically: a temporary file, then a rename).
#[cfg(not(target_arch = "wasm32"))]
pub fn save_stats(path: impl AsRef<std::path::Path>, m: &Moments) -> Result<(), EvalError> {
    let bytes = stats_npz_bytes(m)?;
    super::write_file_atomic(path.as_ref(), &bytes)
}

/// Reads `mu` and `sigma` from the `.npz` at `path`; format errors name the file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_stats(path: impl AsRef<std::path::Path>) -> Result<Moments, EvalError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        action: "cannot open",
        path: path.to_path_buf(),
        source,
    })?;
    read_stats(std::io::BufReader::new(file)).map_err(|e| match e {
        EvalError::Format(m) => EvalError::Format(format!("{}: {m}", path.display())),
        other => other,
    })
}

// ---------------------------------------------------------------------------------------------
// Archives of float arrays

/// An `.npz` of float64 arrays, each (name, shape, row-major data), as `np.savez(**arrays)`.
pub fn npz_bytes(arrays: &[(&str, &[usize], &[f64])]) -> Result<Vec<u8>, EvalError> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(true);
    for &(name, shape, data) in arrays {
        let want = shape.iter().product::<usize>();
        if want != data.len() {
            return Err(EvalError::Shape(format!(
                "array {name} of shape {} needs {want} values, got {}",
                shape_text(shape),
                data.len()
            )));
        }
        let bytes = npy_bytes(shape, data)?;
        let io = |e: ZipError| EvalError::Format(format!("cannot write {name}.npy into the .npz: {e}"));
        zip.start_file(format!("{name}.npy"), options).map_err(io)?;
        zip.write_all(&bytes).map_err(|e| io(ZipError::Io(e)))?;
    }
    let out = zip.finish().map_err(|e| EvalError::Format(format!("cannot finish the .npz: {e}")))?;
    Ok(out.into_inner())
}

/// Reads the arrays `names` (without the `.npy` suffix) from an `.npz`, in that order.
///
/// The `.npy` layout is numpy's `numpy.lib.format` (NEP 1): the magic `\x93NUMPY`, a version, the
/// header length, and a Python dict literal with 'descr', 'fortran_order' and 'shape', padded so
/// that the data starts at a multiple of 64. Reading takes versions 1 to 3, float64 and float32
/// (widened) of either byte order, C or Fortran order, stored or deflated entries
/// (`np.savez_compressed`). Refused before the array is allocated: a header over `MAX_HEADER`
/// bytes (numpy's own `max_header_size`), an array over `MAX_ARRAY_BYTES`, a shape whose byte
/// count disagrees with the zip entry's size, or an entry size beyond what its compressed bytes
/// can inflate to.
pub fn read_npz<R: Read + Seek>(reader: R, names: &[&str]) -> Result<Vec<NpyArray>, EvalError> {
    let fmt = EvalError::Format;
    let mut zip = ZipArchive::new(reader).map_err(|e| fmt(format!("not a .npz (zip) archive: {e}")))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let entry = format!("{name}.npy");
        let held: Vec<String> = zip.file_names().take(8).map(String::from).collect();
        let mut file = match zip.by_name(&entry) {
            Ok(f) => f,
            Err(ZipError::FileNotFound) => {
                return Err(fmt(format!("no array '{name}' in the .npz (it holds {})", held.join(", "))));
            }
            Err(e) => return Err(fmt(format!("{entry}: {e}"))),
        };
        let (size, packed) = (file.size(), file.compressed_size());
        if size > packed.saturating_mul(MAX_DEFLATE_RATIO) {
            return Err(fmt(format!("{entry}: claims {size} bytes from {packed} compressed ones")));
        }
        out.push(read_npy(&mut file, size).map_err(|m| fmt(format!("{entry}: {m}")))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// .npy

/// One `.npy` array: version 1.0, '<f8', C order, header padded to 64 bytes, stored (not
/// deflated), as `np.savez` writes.
fn npy_bytes(shape: &[usize], data: &[f64]) -> Result<Vec<u8>, EvalError> {
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {}, }}", shape_text(shape));
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let len = u16::try_from(header.len())
        .map_err(|_| EvalError::Shape(format!("an .npy header for shape {} is too long", shape_text(shape))))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + 8 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    Ok(out)
}

/// Reads one `.npy` array from `r`, an entry of `entry_size` bytes.
fn read_npy(r: &mut impl Read, entry_size: u64) -> Result<NpyArray, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|e| format!("truncated before the .npy header ({e})"))?;
    if &pre[..6] != MAGIC {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = (pre[6], pre[7]);
    let (header_len, prefix) = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| format!("truncated .npy header length ({e})"))?;
            (usize::from(u16::from_le_bytes(b)), 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| format!("truncated .npy header length ({e})"))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        _ => return Err(format!("unsupported .npy version {major}.{minor}")),
    };
    if header_len > MAX_HEADER {
        return Err(format!("an .npy header of {header_len} bytes, more than {MAX_HEADER}"));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(|e| format!("truncated .npy header ({e})"))?;
    let header = std::str::from_utf8(&header).map_err(|_| "the .npy header is not text".to_string())?;
    let h = parse_header(header)?;
    let (size, big_endian) = match h.descr.as_str() {
        "<f8" => (8, false),
        ">f8" => (8, true),
        "<f4" => (4, false),
        ">f4" => (4, true),
        other => return Err(format!("dtype '{other}', expected float64 or float32")),
    };
    let count = h.shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s as u64));
    let bytes = count.and_then(|c| c.checked_mul(size)).filter(|&b| b <= MAX_ARRAY_BYTES).ok_or_else(|| {
        format!("shape {} of {}-byte values exceeds the {MAX_ARRAY_BYTES}-byte limit", shape_text(&h.shape), size)
    })?;
    let held = entry_size.saturating_sub((prefix + header_len) as u64);
    if held != bytes {
        return Err(format!("shape {} needs {bytes} data bytes, the entry holds {held}", shape_text(&h.shape)));
    }
    let mut raw = vec![0u8; bytes as usize];
    r.read_exact(&mut raw).map_err(|e| format!("truncated data: {e}"))?;
    // Reading on to the end lets the zip reader check the entry's CRC.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(|e| format!("corrupt entry: {e}"))?;
    let mut data: Vec<f64> = if size == 8 {
        raw.chunks_exact(8)
            .map(|c| {
                let b: [u8; 8] = c.try_into().unwrap_or_default();
                if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }
            })
            .collect()
    } else {
        raw.chunks_exact(4)
            .map(|c| {
                let b: [u8; 4] = c.try_into().unwrap_or_default();
                f64::from(if big_endian { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) })
            })
            .collect()
    };
    if h.fortran_order && h.shape.len() > 1 {
        let [rows, cols] = h.shape[..] else {
            return Err(format!("Fortran-order arrays of {} dimensions are not supported", h.shape.len()));
        };
        let col_major = data;
        data = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                data[i * cols + j] = col_major[j * rows + i];
            }
        }
    }
    Ok(NpyArray { shape: h.shape, data })
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses numpy's header dict literal, e.g. `{'descr': '<f8', 'fortran_order': False, 'shape':
/// (2048, 2048), }`: string, boolean and integer-tuple values; other keys are skipped.
fn parse_header(text: &str) -> Result<Header, String> {
    let bad = |why: &str| format!("malformed .npy header ({why}): {}", text.trim_end());
    let body = text.trim().strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or_else(|| bad("not a dict"))?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| bad("a key is not a quoted string"))?;
        let after = after.trim_start().strip_prefix(':').ok_or_else(|| bad("no ':' after a key"))?.trim_start();
        let after = if after.starts_with('\'') || after.starts_with('"') {
            let (v, a) = quoted(after).ok_or_else(|| bad("unterminated string"))?;
            if key == "descr" {
                descr = Some(v.to_string());
            }
            a
        } else if let Some(a) = after.strip_prefix('(') {
            let close = a.find(')').ok_or_else(|| bad("unterminated shape tuple"))?;
            let dims: Result<Vec<usize>, _> = a[..close]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_end_matches('L').parse())
                .collect();
            if key == "shape" {
                shape = Some(dims.map_err(|_| bad("a shape entry is not a non-negative integer"))?);
            }
            &a[close + 1..]
        } else if let Some(a) = after.strip_prefix("True") {
            if key == "fortran_order" {
                fortran_order = Some(true);
            }
            a
        } else if let Some(a) = after.strip_prefix("False") {
            if key == "fortran_order" {
                fortran_order = Some(false);
            }
            a
        } else {
            return Err(bad("a value is not a string, a tuple or a boolean"));
        };
        let after = after.trim_start();
        rest = after.strip_prefix(',').unwrap_or(after).trim_start();
        if rest.len() == after.len() && !rest.is_empty() {
            return Err(bad("no ',' between entries"));
        }
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("no 'descr'"))?,
        fortran_order: fortran_order.ok_or_else(|| bad("no 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("no 'shape'"))?,
    })
}

/// A leading '…' or "…" string: (its content, the text after it).
fn quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(q)? + 1;
    Some((&s[1..end], &s[end + 1..]))
}

/// A shape as Python prints a tuple: (), (3,), (3, 4).
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
    }
}
