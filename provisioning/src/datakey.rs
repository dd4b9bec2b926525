//! The data key: drawn from the TPM's RNG and sealed to the TPM (`datakey.sealed`, 0600), before
//! the token is sent. A blob from an earlier run is kept only if this TPM unseals it.

use anyhow::{Context as _, anyhow};
use posguard_hal::SecureElement;

use crate::files::write_file;
use crate::init::InitPlan;

/// Seals a fresh data key, or keeps the one sealed by an earlier run if this TPM unseals it.
pub fn seal(plan: &InitPlan, se: &dyn SecureElement) -> anyhow::Result<((), String)> {
    let path = plan.state_dir.join("datakey.sealed");
    if path.exists() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let blob = posguard_hal::SealedBlob::from_bytes(bytes);
        match se.unseal(&blob) {
            // Kept even under --force: it encrypts the clerks' TOTP seeds and the cache, which a
            // new one would make unreadable.
            Ok(_) => {
                return Ok((
                    (),
                    format!(
                        "{} (already sealed and unseals on this TPM; kept)",
                        path.display()
                    ),
                ));
            }
            Err(e) if !plan.force => {
                return Err(anyhow!(
                    "{} was sealed by another TPM or before the TPM was cleared ({e}); move it \
                     away (the agent's state it protects cannot be read on this TPM) and run init \
                     again",
                    path.display()
                ));
            }
            // --force: a blob this TPM cannot unseal protects nothing readable; seal a new one.
            Err(e) => {
                tracing::warn!(error = %e, "the sealed data key does not unseal; sealing a new one")
            }
        }
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
