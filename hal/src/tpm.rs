//! The TPM 2.0 backend. [`TpmElement`] is a cheap handle; the ESYS context lives on one worker
//! thread (`worker`) that runs jobs one at a time, so no two threads ever touch the context.
//! The TPM rules live beside it:
//! - `objects`: templates, recognising posguard's own objects, the storage root key;
//! - `identity`: the device identity key at its persistent handle (staged replacement included);
//! - `seal`: sealed data objects under the storage root key;
//! - `nv`: the monotonic counter in an NV counter index.

mod identity;
mod nv;
mod objects;
mod seal;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::{
    Backend, BackendInfo, ForeignEviction, HalError, IdentityKey, KeyMode, SealedBlob,
    SecureElement, SecureElementConfig,
};
pub(crate) use worker::TpmState;
use worker::Worker;

/// How long opening the TPM may take before we give up and say so (a TCTI that accepts a
/// connection but never answers would otherwise hang the agent's start).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request to TPM2_GetRandom per call; TPMs answer at most a digest's worth.
const RANDOM_CHUNK: usize = 32;

/// A TPM 2.0 reached through a TCTI.
#[derive(Debug)]
pub struct TpmElement {
    worker: Worker,
    /// Whether a replacement identity key may be loaded in the TPM (`KeyMode::Replace` without
    /// a commit yet): flushed on drop, before the process can exit, since a TPM without a
    /// resource manager in front (swtpm, `/dev/tpm0`) would keep it and run out of slots.
    staged: AtomicBool,
    tcti: String,
    description: String,
}

impl TpmElement {
    /// Connects to the TPM at `config.tcti` and checks that it answers. Fails within
    /// [`OPEN_TIMEOUT`] with [`HalError::Unreachable`] if nothing does.
    pub fn open(config: &SecureElementConfig) -> Result<Self, HalError> {
        if config.backend != Backend::Tpm {
            return Err(HalError::Unexpected {
                operation: "open",
                detail: "configuration is not for the TPM backend".to_owned(),
            });
        }
        config.validate().map_err(|detail| HalError::BadTcti {
            tcti: config.tcti.clone(),
            detail,
        })?;
        let worker = Worker::spawn(config, OPEN_TIMEOUT)?;
        let description = worker.call(|s| Ok(s.describe()))?;
        tracing::info!(tcti = %config.tcti, tpm = %description, "TPM opened");
        Ok(TpmElement {
            worker,
            staged: AtomicBool::new(false),
            tcti: config.tcti.clone(),
            description,
        })
    }
}

impl Drop for TpmElement {
    fn drop(&mut self) {
        if self.staged.load(Ordering::SeqCst) {
            let _ = self.worker.call(|s| {
                s.discard_staged();
                Ok(())
            });
        }
    }
}

impl SecureElement for TpmElement {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: Backend::Tpm,
            location: self.tcti.clone(),
            description: self.description.clone(),
        }
    }

    fn ensure_identity_key(&self, mode: KeyMode) -> Result<IdentityKey, HalError> {
        if mode == KeyMode::Replace {
            self.staged.store(true, Ordering::SeqCst);
        }
        self.worker.call(move |s| s.ensure_identity_key(mode))
    }

    fn commit_identity_key(&self) -> Result<IdentityKey, HalError> {
        let key = self.worker.call(|s| s.commit_identity_key())?;
        self.staged.store(false, Ordering::SeqCst);
        Ok(key)
    }

    fn evict_foreign(&self, handle: u32) -> Result<ForeignEviction, HalError> {
        self.worker.call(move |s| s.evict_foreign(handle))
    }

    fn identity_public_key(&self) -> Result<Vec<u8>, HalError> {
        self.worker.call(|s| s.identity_public_key())
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, HalError> {
        let digest = *digest;
        self.worker.call(move |s| s.sign_digest(&digest))
    }

    fn seal(&self, secret: &[u8]) -> Result<SealedBlob, HalError> {
        let secret = Zeroizing::new(secret.to_vec());
        self.worker.call(move |s| s.seal(&secret))
    }

    fn unseal(&self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, HalError> {
        let blob = blob.clone();
        self.worker.call(move |s| s.unseal(&blob))
    }

    fn counter_create(&self) -> Result<u64, HalError> {
        self.worker.call(|s| s.counter_create())
    }

    fn counter_read(&self) -> Result<u64, HalError> {
        self.worker.call(|s| s.counter_read())
    }

    fn counter_increment(&self) -> Result<u64, HalError> {
        self.worker.call(|s| s.counter_increment())
    }

    fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, HalError> {
        self.worker.call(move |s| {
            let mut out = Zeroizing::new(Vec::with_capacity(len));
            while out.len() < len {
                let want = RANDOM_CHUNK.min(len.saturating_sub(out.len()));
                let chunk = s
                    .ctx
                    .get_random(want)
                    .map_err(HalError::tpm("get random"))?;
                if chunk.value().is_empty() {
                    return Err(HalError::Unexpected {
                        operation: "get random",
                        detail: "the TPM returned no bytes".to_owned(),
                    });
                }
                out.extend_from_slice(chunk.value());
            }
            out.truncate(len);
            Ok(out)
        })
    }

    fn in_lockout(&self) -> Result<bool, HalError> {
        self.worker.call(|s| {
            use tss_esapi::constants::{CapabilityType, PropertyTag};
            use tss_esapi::structures::CapabilityData;
            let (data, _) = s
                .ctx
                .get_capability(
                    CapabilityType::TpmProperties,
                    tss_esapi::constants::tss::TPM2_PT_PERMANENT,
                    1,
                )
                .map_err(HalError::tpm("read TPM properties"))?;
            let permanent = match data {
                CapabilityData::TpmProperties(list) => {
                    list.find(PropertyTag::Permanent).map(|p| p.value())
                }
                _ => None,
            };
            // TPMA_PERMANENT bit 9: inLockout.
            Ok(permanent.is_some_and(|v| v & (1 << 9) != 0))
        })
    }

    fn destroy(&self) -> Result<(), HalError> {
        self.worker.call(|s| {
            s.evict_identity_key()?;
            s.counter_delete()
        })
    }
}
