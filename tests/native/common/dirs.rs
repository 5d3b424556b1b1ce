//! Scratch directories of the test process. All the test modules share one process and run in
//! parallel, so every call gets a directory of its own (a counter), whatever name it asks for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A new empty directory under the system temp dir, `name` saying what it is for; left in place
/// (for a look after a failure) unless the test removes it.
pub fn scratch(name: &str) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cdl-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A `scratch` directory removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        Self(scratch(name))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
