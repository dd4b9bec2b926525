//! Damaging store files for the damage sweep (`tests/store_damage.rs`): which file, where,
//! and how. Test helpers: they panic on any I/O error, which fails the test that called them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::missing_panics_doc
)]

use std::path::{Path, PathBuf};

/// The `<name>.tampered-*` entries beside `store`.
pub fn asides(store: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.tampered-", store.file_name().unwrap().to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// Flip the byte at this offset (clamped to the file).
    Flip(u64),
    /// Flip the byte at this fraction (per mille) of the file.
    FlipAt(u64),
    /// Cut the file to this fraction (per mille).
    Truncate(u64),
    /// Zero the whole file.
    ZeroAll,
    /// Zero 4 KiB from the middle.
    ZeroMiddle,
}

pub fn damage(file: &Path, how: Damage, case: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    let len = bytes.len() as u64;
    let at = |x: u64| usize::try_from(x.min(len.saturating_sub(1))).unwrap();
    match how {
        Damage::Flip(offset) if len > 0 => bytes[at(offset)] ^= 0x5A ^ (case as u8 | 1),
        Damage::FlipAt(permille) if len > 0 => {
            bytes[at(len * permille / 1000)] ^= 0xA5 ^ (case as u8 & 0x3E)
        }
        Damage::Truncate(permille) => bytes.truncate(at(len * permille / 1000)),
        Damage::ZeroAll => bytes.iter_mut().for_each(|b| *b = 0),
        Damage::ZeroMiddle => {
            let from = at(len / 2);
            let to = (from + 4096).min(bytes.len());
            bytes[from..to].iter_mut().for_each(|b| *b = 0);
        }
        _ => {}
    }
    std::fs::write(file, bytes).unwrap();
}

pub fn damages(points: u64) -> Vec<Damage> {
    let mut out = vec![
        Damage::Flip(0),
        Damage::Flip(1),
        Damage::Flip(9),
        Damage::Flip(30),
    ];
    out.extend((1..=points).map(|k| Damage::FlipAt(1000 * k / (points + 1))));
    out.push(Damage::Flip(u64::MAX));
    out.extend([
        Damage::Truncate(0),
        Damage::Truncate(500),
        Damage::Truncate(999),
        Damage::ZeroAll,
        Damage::ZeroMiddle,
    ]);
    out
}

/// The store file a target names, now (sled's snapshot file changes its name).
pub fn target_file(store: &Path, name: &str) -> Option<PathBuf> {
    if store.is_file() {
        return Some(store.to_path_buf());
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(store)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            f == name || (name == "snap.*" && f.starts_with("snap."))
        })
        .collect();
    names.sort();
    names.pop()
}
