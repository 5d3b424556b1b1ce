//! `cdl`: the native runner, and (built for wasm32 by Trunk) the browser page's entry point.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    cdl::web::start();
}
