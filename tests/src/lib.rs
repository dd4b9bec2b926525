//! posguard-e2e: whole-system tests. The tests under `tests/` start the real binaries of this
//! workspace (built by `cargo build --workspace --bins`, which `scripts/test.sh` runs first), a
//! real software TPM through the `posguard-hal` test harness, and a real collector.
//!
//! This library holds what those tests share: finding the binaries.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
///
/// # Panics
/// If the binary has not been built: run `cargo build --workspace --bins` first.
#[allow(clippy::expect_used, clippy::panic)]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    if !path.exists() {
        panic!(
            "{} is not built; run `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// A `Command` for a workspace binary with a clean, quiet environment.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("RUST_LOG");
    c
}
