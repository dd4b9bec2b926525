//! Finds an example driver of this package (`target/<profile>/examples/<name>`, next to the
//! running test's `deps/` directory) and builds it on demand.
//!
//! Cargo builds examples only when they are among the selected targets: a plain `cargo test`
//! does, but `cargo test --test cache` (or any run where the examples were never built, or were
//! built before the agent library last changed) would otherwise find no driver or a stale one.
//! The build runs the same cargo that runs the tests (`CARGO`), into the same target directory
//! and profile; cargo has released its build lock by the time tests run, and it takes the lock
//! again for this build, so test binaries that need it at the same time wait for each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// One build at a time within a test process; the result is remembered per driver.
static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The path of the example `name`, built first if it is missing or older than the agent library
/// (`env_override`, when set, names a driver to use as it is).
///
/// # Panics
/// If the build fails: the message carries cargo's output and the command to run by hand.
pub fn driver(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == name)
        || (path.is_file() && !older_than_library(profile_dir, &path))
    {
        return path;
    }
    build(name, profile_dir);
    assert!(
        path.is_file(),
        "cargo built the example {name} but {} is missing; build it with \
         `cargo build -p posguard-agent --examples` or point {env_override} at it",
        path.display()
    );
    built.push(name.to_owned());
    path
}

/// Whether the newest `libposguard_agent-*.rlib` of the profile is newer than the driver.
fn older_than_library(profile_dir: &Path, driver: &Path) -> bool {
    let modified = |p: &Path| -> Option<SystemTime> { std::fs::metadata(p).ok()?.modified().ok() };
    let newest_lib = std::fs::read_dir(profile_dir.join("deps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libposguard_agent-") && name.ends_with(".rlib")
        })
        .filter_map(|e| modified(&e.path()))
        .max();
    matches!((newest_lib, modified(driver)), (Some(lib), Some(drv)) if lib > drv)
}

/// `cargo build -p posguard-agent --example NAME` into this test's target directory and profile.
fn build(name: &str, profile_dir: &Path) {
    let target_dir = profile_dir
        .parent()
        .expect("target/<profile> has a parent directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    println!("building the example {name} ({profile} profile) for this test");
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "posguard-agent",
            "--example",
            name,
        ])
        .arg("--profile")
        .arg(profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(
        out.status.success(),
        "building the example {name} failed ({}); build it with \
         `cargo build -p posguard-agent --examples`:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
