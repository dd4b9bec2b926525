//! The device identity key at its persistent handle: opening, creating, staging a replacement
//! beside it (provisioning `--force`), committing that replacement once its certificate is
//! issued, signing, and evicting. Only a key posguard created (`objects::made_from` its
//! template) is ever used or evicted; anything else at the handle is reported with a free
//! handle, and evicted only when the technician names its handle (`evict_foreign`).

use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{
    Digest, HashScheme, HashcheckTicket, Public, Signature, SignatureScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::TpmState;
use super::objects::{
    ForeignPlace, PASSWORD, hex, identity_template, made_from, spki, srk_template,
};
use crate::{ForeignEviction, HalError, IdentityKey, KeyMode, KeyOrigin, der};

impl TpmState {
    /// posguard's identity key at the configured handle, or `None` if the handle is free. An
    /// object posguard did not create there is [`HalError::Foreign`]: only its public area was
    /// read, which needs no authorisation.
    fn stored_identity(&mut self) -> Result<Option<(KeyHandle, Public)>, HalError> {
        if !self.handle_exists(self.identity_handle)? {
            return Ok(None);
        }
        let (key, public) = self.open_persistent(self.identity_handle)?;
        if !made_from(&public, &identity_template()?) {
            return Err(self.foreign(ForeignPlace::Identity, &public));
        }
        Ok(Some((key, public)))
    }

    /// Creates a new identity key under the storage root key and loads it (transient).
    fn new_identity(&mut self) -> Result<(KeyHandle, Public), HalError> {
        let srk = self.srk()?;
        let template = identity_template()?;
        let created = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.create(srk, template, None, None, None, None)
            })
            .map_err(HalError::tpm("create device identity key"))?;
        let public = created.out_public.clone();
        let loaded = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.load(srk, created.out_private, created.out_public)
            })
            .map_err(HalError::tpm("load device identity key"))?;
        Ok((loaded, public))
    }

    pub(crate) fn ensure_identity_key(&mut self, mode: KeyMode) -> Result<IdentityKey, HalError> {
        let location = hex(self.identity_handle);
        // Checked in every mode, Replace included: --force never replaces a foreign object.
        let stored = self.stored_identity()?;
        match (mode, stored) {
            (KeyMode::Replace, _) => {
                self.discard_staged();
                let (key, public) = self.new_identity()?;
                self.staged = Some((key, public.clone()));
                Ok(IdentityKey {
                    spki_der: spki(&public)?,
                    origin: KeyOrigin::Staged,
                    location,
                })
            }
            (_, Some((key, public))) => {
                self.identity = Some(key);
                Ok(IdentityKey {
                    spki_der: spki(&public)?,
                    origin: KeyOrigin::Opened,
                    location,
                })
            }
            (KeyMode::OpenExisting, None) => Err(HalError::NoIdentityKey { location }),
            (KeyMode::OpenOrCreate, None) => {
                let (loaded, public) = self.new_identity()?;
                let persisted = self.persist(
                    loaded.into(),
                    self.identity_handle,
                    "persist device identity key",
                );
                self.flush(loaded.into());
                self.identity = Some(KeyHandle::from(persisted?));
                Ok(IdentityKey {
                    spki_der: spki(&public)?,
                    origin: KeyOrigin::Created,
                    location,
                })
            }
        }
    }

    /// Flushes a staged key that will not be committed.
    pub(crate) fn discard_staged(&mut self) {
        if let Some((key, _)) = self.staged.take() {
            self.flush(key.into());
        }
    }

    pub(crate) fn commit_identity_key(&mut self) -> Result<IdentityKey, HalError> {
        let Some((staged, public)) = self.staged.take() else {
            return Err(HalError::Unexpected {
                operation: "commit identity key",
                detail: "no new identity key was staged in this session".to_owned(),
            });
        };
        match self.replace_stored(staged) {
            Ok(replaced) => Ok(IdentityKey {
                spki_der: spki(&public)?,
                origin: if replaced {
                    KeyOrigin::Replaced
                } else {
                    KeyOrigin::Created
                },
                location: hex(self.identity_handle),
            }),
            Err(e) => {
                // Still staged: a retry can finish the commit.
                self.staged = Some((staged, public));
                Err(e)
            }
        }
    }

    /// Evicts posguard's stored key (checked again: the TPM may have changed since staging)
    /// and persists `staged` in its place. Returns whether an old key was replaced.
    fn replace_stored(&mut self, staged: KeyHandle) -> Result<bool, HalError> {
        let handle = self.identity_handle;
        let old = self.stored_identity()?;
        if let Some((old_key, _)) = old {
            self.identity = None;
            self.evict(old_key, handle, "evict the previous device identity key")?;
        }
        let persisted = self.persist(staged.into(), handle, "persist device identity key")?;
        self.flush(staged.into());
        self.identity = Some(KeyHandle::from(persisted));
        Ok(old.is_some())
    }

    /// The key that signs: a staged one if there is one, else the stored one (opened, never
    /// created).
    fn identity(&mut self) -> Result<KeyHandle, HalError> {
        if let Some((key, _)) = &self.staged {
            return Ok(*key);
        }
        match self.identity {
            Some(k) => Ok(k),
            None => {
                self.ensure_identity_key(KeyMode::OpenExisting)?;
                self.identity.ok_or_else(|| HalError::NoIdentityKey {
                    location: hex(self.identity_handle),
                })
            }
        }
    }

    pub(crate) fn identity_public_key(&mut self) -> Result<Vec<u8>, HalError> {
        let key = self.identity()?;
        let (public, _, _) = self
            .ctx
            .read_public(key)
            .map_err(HalError::tpm("read identity public key"))?;
        spki(&public)
    }

    pub(crate) fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<Vec<u8>, HalError> {
        let key = self.identity()?;
        let digest = Digest::try_from(digest.to_vec()).map_err(HalError::tpm("sign"))?;
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: tss_esapi::constants::tss::TPM2_ST_HASHCHECK,
            hierarchy: tss_esapi::constants::tss::TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(HalError::tpm("sign"))?;
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let signature = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| ctx.sign(key, digest, scheme, validation))
            .map_err(HalError::tpm("sign"))?;
        match signature {
            Signature::EcDsa(sig) => {
                der::ecdsa_signature_der(sig.signature_r().value(), sig.signature_s().value())
                    .ok_or_else(|| HalError::Unexpected {
                        operation: "sign",
                        detail: "signature values do not fit P-256".to_owned(),
                    })
            }
            other => Err(HalError::Unexpected {
                operation: "sign",
                detail: format!("expected an ECDSA signature, got {:?}", other.algorithm()),
            }),
        }
    }

    /// Evicts posguard's identity key if it is there (decommissioning). An object posguard did
    /// not create there is left alone and reported.
    pub(crate) fn evict_identity_key(&mut self) -> Result<(), HalError> {
        self.discard_staged();
        self.identity = None;
        if let Some((key, _)) = self.stored_identity()? {
            self.evict(key, self.identity_handle, "evict device identity key")?;
        }
        Ok(())
    }

    /// The technician's named eviction of an object posguard did not create, at the identity
    /// or storage root key handle only.
    pub(crate) fn evict_foreign(&mut self, handle: u32) -> Result<ForeignEviction, HalError> {
        let template = if handle == self.counter_index {
            return self.undefine_foreign_counter();
        } else if handle == self.identity_handle {
            identity_template()?
        } else if handle == self.srk_handle {
            srk_template()?
        } else {
            return Err(HalError::EvictRefused {
                handle: hex(handle),
                reason: format!(
                    "posguard evicts only at the handles it is configured to use (identity key \
                     {}, storage root key {}, counter {}); name one of those, or give posguard \
                     another one with --identity-handle / --srk-handle / --counter-index",
                    hex(self.identity_handle),
                    hex(self.srk_handle),
                    hex(self.counter_index)
                ),
            });
        };
        if !self.handle_exists(handle)? {
            return Ok(ForeignEviction::Absent);
        }
        let (key, public) = self.open_persistent(handle)?;
        if made_from(&public, &template) {
            return Ok(ForeignEviction::Ours);
        }
        let what = super::objects::describe(&public);
        self.evict(key, handle, "evict a foreign object")?;
        if handle == self.srk_handle {
            self.srk = None;
        } else {
            self.identity = None;
        }
        tracing::warn!(handle = %hex(handle), object = %what,
            "evicted a TPM object posguard did not create, as the technician named it");
        Ok(ForeignEviction::Evicted(what))
    }
}
