//! Bytes in and out of the page: user files (size checked before reading), downloads, files
//! shipped with the page (fetch) and browser storage (IndexedDB): saved weights and the
//! kernel-variant choices measured on this adapter.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::dom;
use crate::gpu::Gpu;
use crate::ops::tune;

/// Largest weights file the page reads: a full checkpoint (weights, EMA, Adam moments) is
/// 0.5 MB for the default MLP, 27 MB for the compact UNet and 108 MB for the small one.
pub const MAX_WEIGHTS_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
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

// ---------------------------------------------------------------------------------------------
// Browser storage: IndexedDB (raw bytes, no base64, quota in the hundreds of MB where
// localStorage stops at about 5 MB, too little for a UNet checkpoint).

/// Database and object store of saved weights (and, under `kernel-variants/…` keys, the
/// kernel-variant choices).
const DB_NAME: &str = "cdl";
const DB_STORE: &str = "weights";

/// The result of an IndexedDB request once it succeeds, or its error as text.
async fn request(req: &web_sys::IdbRequest) -> Result<JsValue, String> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let r = req.clone();
        let ok = Closure::once_into_js(move |_: web_sys::Event| {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = req.clone();
        let fail = Closure::once_into_js(move |_: web_sys::Event| {
            let msg = r.error().ok().flatten().map_or_else(|| "unknown error".to_string(), |e| e.message());
            let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(&msg));
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(fail.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(|e| dom::js_error(&e))
}

/// The weights database, created on first use.
async fn database() -> Result<web_sys::IdbDatabase, String> {
    let unavailable = || "browser storage (IndexedDB) is not available on this page".to_string();
    let factory = dom::window().and_then(|w| w.indexed_db().ok().flatten()).ok_or_else(unavailable)?;
    let open = factory.open_with_u32(DB_NAME, 1).map_err(|e| dom::js_error(&e))?;
    let r = open.clone();
    let upgrade = Closure::once_into_js(move |_: web_sys::Event| {
        if let Some(db) = r.result().ok().and_then(|v| v.dyn_into::<web_sys::IdbDatabase>().ok()) {
            if !db.object_store_names().contains(DB_STORE) {
                let _ = db.create_object_store(DB_STORE);
            }
        }
    });
    open.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
    let db = request(&open).await.map_err(|e| format!("cannot open browser storage: {e}"))?;
    db.dyn_into().map_err(|_| unavailable())
}

fn object_store(
    db: &web_sys::IdbDatabase,
    mode: web_sys::IdbTransactionMode,
) -> Result<web_sys::IdbObjectStore, String> {
    let tx = db.transaction_with_str_and_mode(DB_STORE, mode).map_err(|e| dom::js_error(&e))?;
    tx.object_store(DB_STORE).map_err(|e| dom::js_error(&e))
}

/// Stores `bytes` under `key` in browser storage (quota errors come back as text).
pub async fn store(key: &str, bytes: &[u8]) -> Result<(), String> {
    let db = database().await?;
    let store = object_store(&db, web_sys::IdbTransactionMode::Readwrite)?;
    let req =
        store.put_with_key(&js_sys::Uint8Array::from(bytes), &JsValue::from_str(key)).map_err(|e| dom::js_error(&e))?;
    request(&req).await.map(|_| ()).map_err(|e| {
        format!("could not save to browser storage ({e}): {:.1} MB may exceed its quota", bytes.len() as f64 / 1e6)
    })
}

/// The bytes stored under `key`, None when nothing is stored.
pub async fn load(key: &str) -> Result<Option<Vec<u8>>, String> {
    let db = database().await?;
    let store = object_store(&db, web_sys::IdbTransactionMode::Readonly)?;
    let req = store.get(&JsValue::from_str(key)).map_err(|e| dom::js_error(&e))?;
    let v = request(&req).await.map_err(|e| format!("could not read browser storage: {e}"))?;
    if v.is_undefined() {
        return Ok(None);
    }
    let bytes =
        v.dyn_into::<js_sys::Uint8Array>().map_err(|_| format!("browser storage entry {key:?} is not bytes"))?;
    Ok(Some(bytes.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// The kernel-variant choices measured on this adapter (`ops::tune`), kept in the same store as
// the weights under one key per adapter and driver, so a second visit starts with them.

/// What the page's kernel-variant cache did: choices read at start-up, saves, and the warning
/// of an entry that could not be used.
#[derive(Clone, Debug, Default)]
pub struct VariantCache {
    pub loaded: usize,
    pub saves: usize,
    pub warning: Option<String>,
}

thread_local! {
    static VARIANT_CACHE: std::cell::RefCell<VariantCache> = std::cell::RefCell::default();
}

pub fn variant_cache() -> VariantCache {
    VARIANT_CACHE.with(|c| c.borrow().clone())
}

/// The storage key of `gpu`'s adapter's choices.
fn variants_key(gpu: &Gpu) -> String {
    format!("kernel-variants/{}", tune::adapter_key(gpu))
}

/// Gives `gpu` the choices saved for its adapter. Nothing saved is no news; an entry that cannot
/// be used (another schema, corrupt) is ignored with one console warning and replaced by the
/// next save; storage that cannot be opened leaves the page to measure afresh.
pub async fn load_variants(gpu: &Gpu) {
    let text = match load(&variants_key(gpu)).await {
        Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|e| e.to_string()),
        Ok(None) => return,
        Err(e) => Err(e),
    };
    match text.and_then(|t| tune::read_cache(&t, gpu)) {
        Ok(choices) => {
            let n = choices.len();
            tune::apply_cache(gpu, choices);
            VARIANT_CACHE.with(|c| c.borrow_mut().loaded = n);
        }
        Err(e) => {
            let msg = format!("ignoring the saved kernel-variant choices: {e}");
            web_sys::console::warn_1(&JsValue::from_str(&msg));
            VARIANT_CACHE.with(|c| c.borrow_mut().warning = Some(msg));
        }
    }
}

/// Saves `gpu`'s choices for its adapter when some were measured since the last save; a
/// failure is one console warning (the cache only saves time).
pub async fn save_variants(gpu: &Gpu) {
    if !gpu.take_new_choices() {
        return;
    }
    match store(&variants_key(gpu), tune::cache_text(gpu, Vec::new()).as_bytes()).await {
        Ok(()) => VARIANT_CACHE.with(|c| c.borrow_mut().saves += 1),
        Err(e) => web_sys::console::warn_1(&JsValue::from_str(&format!("cannot save the kernel-variant choices: {e}"))),
    }
}
