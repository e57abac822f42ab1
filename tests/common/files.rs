//! Files the integration tests (tests/it/support/mod.rs) and the cycle benchmark
//! (tests/bench/cycle.rs) both need: the crate root, a recorded fixture, and a
//! temporary directory removed on drop. Both include this file with `#[path]`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The crate root, where `fixtures/` lives.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of `fixtures/{path}`.
pub fn fixture(path: &str) -> String {
    let full = root().join("fixtures").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory, named after the including crate (`it`, `cycle`), the
    /// process, a counter and `tag`; one left by an earlier process of the same id
    /// (one killed before its drop ran) is removed first.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pod-rebalancer-{}-{}-{}-{tag}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
