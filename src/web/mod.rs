//! The browser entry point (Trunk builds `src/main.rs` for wasm32, which calls `start`); the
//! page logic lives here and in `web/`, the math stays in the shared core. Pages are chosen by
//! the URL of `index.html` (on `start`).

mod app;
mod dom;
mod draw;
mod image;
mod preview;
mod quality;
mod runtime;
mod selftest;
mod store;
mod toy;

pub use selftest::self_test;

/// Starts the page's work on the event loop and returns at once. Pages, by URL:
/// - default: the toy demo (`app`): two 2-D models side by side trained on the same data;
/// - `?embed&dataset=moons&loss=cdl&autoplay`: one model in a compact layout for iframes (the
///   `<cdl-demo>` element of `web/cdl-demo.js` builds that URL);
/// - `?mode=image`: image mode (`image`): a UNet on 32×32 images, built-in or CIFAR-10 files;
/// - `?selftest`: every registry kernel against the CPU reference (`selftest`).
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        let result = if dom::flag("selftest") || dom::param("selftest").is_some() {
            dom::add_body_class("selftest");
            dom::set_hidden("selftest", false);
            selftest::run().await
        } else if dom::param("mode").as_deref() == Some("image") {
            image::run().await
        } else {
            app::run(dom::param("embed").is_some()).await
        };
        if let Err(e) = result {
            dom::set_text("status", &format!("error: {e}"));
            dom::set_text("message", &format!("error: {e}"));
            dom::set_hidden("message", false);
            dom::set_body_data("status", "error");
            crate::gpu::log(&format!("cdl: error: {e}"));
        }
    });
}
