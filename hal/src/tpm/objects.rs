//! The storage root key and the device identity key: their templates, and finding, checking,
//! creating and evicting them at their persistent handles. An object found at a handle is used
//! only if its public area matches what posguard would have created; otherwise it is reported
//! and left alone.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Public,
    PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::TpmState;
use crate::{HalError, IdentityKey, KeyMode, KeyOrigin, der};

const PASSWORD: Option<AuthSession> = Some(AuthSession::Password);

/// The TCG-style ECC P-256 storage root key template.
fn srk_template() -> Result<Public, HalError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(HalError::tpm("build SRK template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(HalError::tpm("build SRK template"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(HalError::tpm("build SRK template"))
}

/// The device identity key: ECC P-256, ECDSA-SHA256, signing only, never leaves the TPM.
fn identity_template() -> Result<Public, HalError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(HalError::tpm("build identity key template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()
            .map_err(HalError::tpm("build identity key template"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(HalError::tpm("build identity key template"))
}

/// What an object's public area says it is, for "different object" messages.
fn describe(public: &Public) -> String {
    let a = public.object_attributes();
    let kind = match public {
        Public::Rsa { .. } => "RSA key".to_owned(),
        Public::Ecc { parameters, .. } => format!("ECC {:?} key", parameters.ecc_curve()),
        Public::KeyedHash { .. } => "keyed-hash object".to_owned(),
        Public::SymCipher { .. } => "symmetric key".to_owned(),
    };
    let mut uses = Vec::new();
    if a.sign_encrypt() {
        uses.push("sign");
    }
    if a.decrypt() {
        uses.push("decrypt");
    }
    if a.restricted() {
        uses.push("restricted");
    }
    format!("{kind}, {}", uses.join("+"))
}

fn is_p256(public: &Public) -> bool {
    matches!(public, Public::Ecc { parameters, .. } if parameters.ecc_curve() == EccCurve::NistP256)
}

fn is_our_srk(public: &Public) -> bool {
    let a = public.object_attributes();
    is_p256(public) && a.restricted() && a.decrypt() && !a.sign_encrypt() && a.fixed_tpm()
}

fn is_our_identity(public: &Public) -> bool {
    let a = public.object_attributes();
    is_p256(public)
        && a.sign_encrypt()
        && !a.decrypt()
        && !a.restricted()
        && a.fixed_tpm()
        && a.fixed_parent()
        && a.sensitive_data_origin()
}

fn spki(public: &Public) -> Result<Vec<u8>, HalError> {
    match public {
        Public::Ecc { unique, .. } => {
            der::p256_spki_from_xy(unique.x().value(), unique.y().value()).ok_or_else(|| {
                HalError::Unexpected {
                    operation: "read public key",
                    detail: "ECC point does not fit P-256".to_owned(),
                }
            })
        }
        other => Err(HalError::Unexpected {
            operation: "read public key",
            detail: format!("identity key is a {}", describe(other)),
        }),
    }
}

fn hex(handle: u32) -> String {
    format!("{handle:#010x}")
}

impl TpmState {
    /// Whether a persistent handle or NV index is in use, asked without touching the object
    /// (probing with ESYS_TR_FromTPMPublic prints TSS errors for absent handles).
    pub(crate) fn handle_exists(&mut self, handle: u32) -> Result<bool, HalError> {
        let (data, _more) = self
            .ctx
            .get_capability(CapabilityType::Handles, handle, 1)
            .map_err(HalError::tpm("list handles"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list
                .into_inner()
                .first()
                .is_some_and(|h| u32::from(*h) == handle),
            _ => false,
        })
    }

    fn persistent(handle: u32) -> Result<PersistentTpmHandle, HalError> {
        PersistentTpmHandle::new(handle).map_err(HalError::tpm("persistent handle"))
    }

    /// Loads the object at a persistent handle into an ESYS handle and reads its public area.
    fn open_persistent(&mut self, handle: u32) -> Result<(KeyHandle, Public), HalError> {
        let object = self
            .ctx
            .tr_from_tpm_public(TpmHandle::Persistent(Self::persistent(handle)?))
            .map_err(HalError::tpm("open persistent object"))?;
        let key = KeyHandle::from(object);
        let (public, _, _) = self
            .ctx
            .read_public(key)
            .map_err(HalError::tpm("read public area"))?;
        Ok((key, public))
    }

    /// Finds the storage root key, creating and persisting it if the handle is free.
    pub(crate) fn srk(&mut self) -> Result<KeyHandle, HalError> {
        if let Some(k) = self.srk {
            return Ok(k);
        }
        let handle = self.srk_handle;
        let key = if self.handle_exists(handle)? {
            let (key, public) = self.open_persistent(handle)?;
            if !is_our_srk(&public) {
                return Err(HalError::Occupied {
                    what: "storage root key",
                    location: hex(handle),
                    found: describe(&public),
                });
            }
            key
        } else {
            let template = srk_template()?;
            let primary = self
                .ctx
                .execute_with_session(PASSWORD, |ctx| {
                    ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
                })
                .map_err(HalError::tpm("create storage root key"))?;
            let persisted = self.persist(
                primary.key_handle.into(),
                handle,
                "persist storage root key",
            );
            self.flush(primary.key_handle.into());
            KeyHandle::from(persisted?)
        };
        self.srk = Some(key);
        Ok(key)
    }

    fn persist(
        &mut self,
        object: ObjectHandle,
        handle: u32,
        operation: &'static str,
    ) -> Result<ObjectHandle, HalError> {
        let persistent = Persistent::Persistent(Self::persistent(handle)?);
        self.ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.evict_control(Provision::Owner, object, persistent)
            })
            .map_err(HalError::tpm(operation))
    }

    pub(crate) fn flush(&mut self, object: ObjectHandle) {
        if let Err(e) = self.ctx.flush_context(object) {
            tracing::warn!(error = %e, "could not flush a transient TPM object");
        }
    }

    pub(crate) fn ensure_identity_key(&mut self, mode: KeyMode) -> Result<IdentityKey, HalError> {
        let handle = self.identity_handle;
        let location = hex(handle);
        let exists = self.handle_exists(handle)?;
        if exists && mode != KeyMode::Replace {
            let (key, public) = self.open_persistent(handle)?;
            if !is_our_identity(&public) {
                return Err(HalError::Occupied {
                    what: "device identity key",
                    location,
                    found: describe(&public),
                });
            }
            self.identity = Some(key);
            return Ok(IdentityKey {
                spki_der: spki(&public)?,
                origin: KeyOrigin::Opened,
                location,
            });
        }
        if !exists && mode == KeyMode::OpenExisting {
            return Err(HalError::NoIdentityKey { location });
        }
        // The parent must be sound before anything is evicted.
        let srk = self.srk()?;
        if exists {
            self.evict_identity_key()?;
        }
        let template = identity_template()?;
        let created = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.create(srk, template, None, None, None, None)
            })
            .map_err(HalError::tpm("create device identity key"))?;
        let loaded = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.load(srk, created.out_private, created.out_public.clone())
            })
            .map_err(HalError::tpm("load device identity key"))?;
        let persisted = self.persist(loaded.into(), handle, "persist device identity key");
        self.flush(loaded.into());
        self.identity = Some(KeyHandle::from(persisted?));
        Ok(IdentityKey {
            spki_der: spki(&created.out_public)?,
            origin: if exists {
                KeyOrigin::Replaced
            } else {
                KeyOrigin::Created
            },
            location,
        })
    }

    /// The identity key handle, opening (never creating) it if needed.
    fn identity(&mut self) -> Result<KeyHandle, HalError> {
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

    /// Evicts the identity key if it is there. Used by `Replace` and by decommissioning.
    pub(crate) fn evict_identity_key(&mut self) -> Result<(), HalError> {
        let handle = self.identity_handle;
        self.identity = None;
        if !self.handle_exists(handle)? {
            return Ok(());
        }
        let (key, _) = self.open_persistent(handle)?;
        let persistent = Persistent::Persistent(Self::persistent(handle)?);
        self.ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.evict_control(Provision::Owner, key.into(), persistent)
            })
            .map_err(HalError::tpm("evict device identity key"))?;
        Ok(())
    }
}
