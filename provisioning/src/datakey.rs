//! The data key: drawn from the TPM's RNG and sealed to the TPM (`datakey.sealed`, 0600), before
//! the token is sent. A blob from an earlier run is kept only if this TPM unseals it.

use anyhow::{Context as _, anyhow};
use posguard_hal::SecureElement;

use crate::files::write_file;
use crate::init::InitPlan;

/// Seals a fresh data key, or keeps the one sealed by an earlier run if this TPM unseals it.
pub fn seal(plan: &InitPlan, se: &dyn SecureElement) -> anyhow::Result<((), String)> {
    let path = plan.state_dir.join("datakey.sealed");
    if path.exists() && !plan.force {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let blob = posguard_hal::SealedBlob::from_bytes(bytes);
        se.unseal(&blob).map_err(|e| {
            anyhow!(
                "{} was sealed by another TPM or before the TPM was cleared ({e}); move it away \
                 (the agent's state it protects cannot be read on this TPM) and run init again",
                path.display()
            )
        })?;
        return Ok(((), format!("{} (already sealed; kept)", path.display())));
    }
    let key = se.random(32)?;
    let blob = se.seal(&key)?;
    write_file(&path, blob.as_bytes(), 0o600, None)?;
    Ok((
        (),
        format!(
            "{} ({} bytes, sealed blob only)",
            path.display(),
            blob.as_bytes().len()
        ),
    ))
}
