//! Bytes in and out of the page: user files (size checked before reading), downloads, files
//! shipped with the page (fetch) and browser storage (localStorage, base64).

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::dom;

/// Largest weights file the page reads (the default MLP's full checkpoint is ~0.5 MB).
pub const MAX_WEIGHTS_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
/// Largest CSV file the page reads.
pub const MAX_CSV_BYTES: f64 = 16.0 * 1024.0 * 1024.0;
/// Most points a CSV upload may hold.
pub const MAX_CSV_POINTS: usize = 200_000;

/// The first file chosen in <input type=file id=`id`>, with its name and size.
pub fn chosen_file(id: &str) -> Option<web_sys::File> {
    dom::get::<web_sys::HtmlInputElement>(id)?.files()?.get(0)
}

/// Clears a file input so choosing the same file again fires `change`.
pub fn clear_file(id: &str) {
    dom::set_value(id, "");
}

/// Reads `file` after checking its size against `limit` bytes (before any allocation).
pub async fn read_file(file: &web_sys::File, limit: f64, what: &str) -> Result<Vec<u8>, String> {
    let size = file.size();
    if size > limit {
        return Err(format!(
            "{}: {} is {:.1} MB, over the {:.0} MB limit for {what}",
            file.name(),
            what,
            size / 1e6,
            limit / 1e6
        ));
    }
    let buf =
        JsFuture::from(file.array_buffer()).await.map_err(|e| format!("{}: {}", file.name(), dom::js_error(&e)))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Fetches a file shipped with the page (relative URL), bounded by `limit` bytes.
pub async fn fetch_bytes(url: &str, limit: f64) -> Result<Vec<u8>, String> {
    let w = dom::window().ok_or("no window")?;
    let resp = JsFuture::from(w.fetch_with_str(url)).await.map_err(|e| format!("{url}: {}", dom::js_error(&e)))?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| format!("{url}: not a response"))?;
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|e| dom::js_error(&e))?)
        .await
        .map_err(|e| format!("{url}: {}", dom::js_error(&e)))?;
    let bytes = js_sys::Uint8Array::new(&buf);
    if f64::from(bytes.length()) > limit {
        return Err(format!("{url}: {} bytes, over the limit", bytes.length()));
    }
    Ok(bytes.to_vec())
}

/// Offers `bytes` as a download named `name`.
pub fn download(name: &str, bytes: &[u8]) -> Result<(), String> {
    let doc = dom::document().ok_or("no document")?;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("application/octet-stream");
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).map_err(|e| dom::js_error(&e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| dom::js_error(&e))?;
    let a: web_sys::HtmlAnchorElement =
        doc.create_element("a").map_err(|e| dom::js_error(&e))?.dyn_into().map_err(|_| "not an anchor")?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The download has started from the URL; release it after the click is handled.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(w) = dom::window() {
        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 1000);
    }
    Ok(())
}

fn local_storage() -> Result<web_sys::Storage, String> {
    dom::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .ok_or_else(|| "browser storage (localStorage) is not available on this page".to_string())
}

/// Stores `bytes` under `key` (base64 in localStorage; quota errors come back as text).
pub fn store(key: &str, bytes: &[u8]) -> Result<(), String> {
    local_storage()?.set_item(key, &base64_encode(bytes)).map_err(|e| {
        format!(
            "could not save to browser storage ({}): {} KB may exceed its quota",
            dom::js_error(&e),
            bytes.len() / 1024
        )
    })
}

/// The bytes stored under `key`, None when nothing is stored.
pub fn load(key: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(text) = local_storage()?.get_item(key).map_err(|e| dom::js_error(&e))? else {
        return Ok(None);
    };
    base64_decode(&text).map(Some).ok_or_else(|| format!("browser storage entry {key:?} is corrupt (not base64)"))
}

// ---------------------------------------------------------------------------------------------
// Base64 (RFC 4648, with padding)

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { B64[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    let mut table = [u8::MAX; 256];
    for (i, &b) in B64.iter().enumerate() {
        table[b as usize] = i as u8;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &ch in text {
        let v = table[ch as usize];
        if v == u8::MAX {
            return None;
        }
        let v = u32::from(v);
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
