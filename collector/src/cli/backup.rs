//! `backup` and `restore`: thin over [`crate::backup`], printing its summary as one JSON line.

use anyhow::Context as _;

use crate::config::Config;

pub(super) fn backup(config: &Config, out: &std::path::Path) -> anyhow::Result<()> {
    let summary = crate::backup::backup(&config.store, out)
        .with_context(|| format!("backup of {}", config.store.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

pub(super) fn restore(config: &Config, from: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let summary = crate::backup::restore(&config.store, from, force)
        .with_context(|| format!("restore of {}", from.display()))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
