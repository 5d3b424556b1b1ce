//! Small DOM helpers: elements by id, text, attributes, listeners, timers, the URL's query and
//! the page clock. Every helper is a no-op (or `None`) when the element is missing, so a page
//! without some control (the embed layout) still runs.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

pub fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

pub fn document() -> Option<web_sys::Document> {
    window()?.document()
}

pub fn element(id: &str) -> Option<web_sys::Element> {
    document()?.get_element_by_id(id)
}

/// The element `id` as the HTML type `T` (canvas, input, select, ...).
pub fn get<T: JsCast>(id: &str) -> Option<T> {
    element(id)?.dyn_into::<T>().ok()
}

pub fn set_text(id: &str, text: &str) {
    if let Some(el) = element(id) {
        el.set_text_content(Some(text));
    }
}

pub fn set_attr(id: &str, name: &str, value: &str) {
    if let Some(el) = element(id) {
        let _ = el.set_attribute(name, value);
    }
}

/// Attribute `name` of element `id`.
pub fn attr(id: &str, name: &str) -> Option<String> {
    element(id)?.get_attribute(name)
}

pub fn remove_attr(id: &str, name: &str) {
    if let Some(el) = element(id) {
        let _ = el.remove_attribute(name);
    }
}

/// Shows or hides an element (the `hidden` attribute).
pub fn set_hidden(id: &str, hidden: bool) {
    if let Some(el) = get::<web_sys::HtmlElement>(id) {
        el.set_hidden(hidden);
    }
}

/// Enables or disables a button (a disabled one says why in its `title`).
pub fn set_disabled(id: &str, disabled: bool) {
    if let Some(el) = get::<web_sys::HtmlButtonElement>(id) {
        el.set_disabled(disabled);
    }
}

/// `data-<name>` on <body>: states for tests, screenshots and CSS.
pub fn set_body_data(name: &str, value: &str) {
    if let Some(body) = document().and_then(|d| d.body()) {
        let _ = body.set_attribute(&format!("data-{name}"), value);
    }
}

pub fn add_body_class(class: &str) {
    if let Some(body) = document().and_then(|d| d.body()) {
        let _ = body.class_list().add_1(class);
    }
}

/// The value of an <input> or <select>.
pub fn value(id: &str) -> Option<String> {
    let el = element(id)?;
    if let Some(i) = el.dyn_ref::<web_sys::HtmlInputElement>() {
        return Some(i.value());
    }
    el.dyn_ref::<web_sys::HtmlSelectElement>().map(|s| s.value())
}

pub fn set_value(id: &str, v: &str) {
    let Some(el) = element(id) else { return };
    if let Some(i) = el.dyn_ref::<web_sys::HtmlInputElement>() {
        i.set_value(v);
    } else if let Some(s) = el.dyn_ref::<web_sys::HtmlSelectElement>() {
        s.set_value(v);
    }
}

/// `text` in element `id` as a success (class "ok") or a failure (class "error").
pub fn set_message(id: &str, text: &str, error: bool) {
    set_text(id, text);
    set_attr(id, "class", if error { "error" } else { "ok" });
}

/// The outcome of an action in element `id`: the success message or the error.
pub fn show_result(id: &str, r: &Result<String, String>) {
    match r {
        Ok(msg) => set_message(id, msg, false),
        Err(e) => set_message(id, e, true),
    }
}

/// An error line in element `id` (empty: cleared), marked `data-kind="error"` for tests and CSS.
pub fn set_error(id: &str, text: &str) {
    set_text(id, text);
    set_attr(id, "data-kind", if text.is_empty() { "" } else { "error" });
}

/// Whether checkbox `id` is ticked (None without it).
pub fn checked(id: &str) -> Option<bool> {
    get::<web_sys::HtmlInputElement>(id).map(|i| i.checked())
}

pub fn set_checked(id: &str, on: bool) {
    if let Some(i) = get::<web_sys::HtmlInputElement>(id) {
        i.set_checked(on);
    }
}

/// Calls `f` on every `event` of element `id`, for the life of the page.
pub fn on(id: &str, event: &str, f: impl FnMut(web_sys::Event) + 'static) {
    let Some(el) = element(id) else { return };
    let cb = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    let _ = el.add_event_listener_with_callback(event, cb.as_ref().unchecked_ref());
    cb.forget();
}

/// Milliseconds since the page started (`performance.now()`; `Instant` panics on wasm).
pub fn now_ms() -> f64 {
    window().and_then(|w| w.performance()).map_or(0.0, |p| p.now())
}

/// Resolves after `ms` milliseconds (0: at the next turn of the event loop), so a long task
/// yields to input handling and painting between chunks.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The page URL's query parameters.
pub fn query() -> Option<web_sys::UrlSearchParams> {
    let search = window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()
}

/// A query parameter: `Some("")` for a bare flag (`?embed`), None when absent.
pub fn param(name: &str) -> Option<String> {
    query()?.get(name)
}

/// The `precond` parameter when it names a preconditioning (`Precond::parse`: "edm" or "eps").
pub fn precond_param() -> Option<String> {
    param("precond").filter(|v| crate::model::Precond::parse(v).is_ok())
}

/// A flag parameter: present and not "0" / "false".
pub fn flag(name: &str) -> bool {
    param(name).is_some_and(|v| v != "0" && v != "false")
}

/// A 2-D context of canvas `id`.
pub fn context2d(id: &str) -> Option<(web_sys::HtmlCanvasElement, web_sys::CanvasRenderingContext2d)> {
    let canvas: web_sys::HtmlCanvasElement = get(id)?;
    let ctx = canvas.get_context("2d").ok()??.dyn_into::<web_sys::CanvasRenderingContext2d>().ok()?;
    Some((canvas, ctx))
}

/// A JS error value's message.
pub fn js_error(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
