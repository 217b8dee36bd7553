//! The kev binaries as processes, to be killed like a crashed pod.

use std::path::PathBuf;

/// The path of a binary of this workspace, built by `cargo test --workspace` (the producer
/// package's own integration tests make cargo build it before any test runs).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}
