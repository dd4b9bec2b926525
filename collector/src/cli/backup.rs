//! `backup` and `restore`: thin over [`crate::backup`], printing its summary as one JSON line.

use anyhow::Context as _;

use crate::config::Config;

pub(super) fn backup(config: &Config, out: &std::path::Path) -> anyhow::Result<()> {
    super::require_store(config)?;
    let summary = crate::backup::backup(&config.store, out)
        .with_context(|| format!("backup of {}", config.store.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

pub(super) fn restore(config: &Config, from: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let summary = crate::backup::restore(&config.store, from, force)
        .with_context(|| format!("restore of {}", from.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    if summary.unverified.is_empty() {
        return Ok(());
    }
    let devices: Vec<String> = summary.unverified.iter().map(ToString::to_string).collect();
    Err(PartialRestore(devices.join("; ")).into())
}

/// A restore that installed the store without the devices that do not verify: exit 2, so that
/// a script notices (the store is installed; those devices' rows are only in the backup).
#[derive(Debug, thiserror::Error)]
#[error("restored without devices that do not verify (their rows remain only in the backup): {0}")]
pub struct PartialRestore(pub String);
