//! The storage root key and the device identity key: their templates, how posguard recognises
//! an object it created (the whole public area but the key itself equals its template), and the
//! storage root key at its persistent handle. An object found at a handle is used only if it is
//! recognised; otherwise it is reported with a free handle to use instead, and left alone: it
//! is never authorised against, so its dictionary-attack counter never moves. The identity key
//! itself is in `identity`.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, EccPoint, EccScheme, HashScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, SymmetricDefinitionObject,
};

use super::TpmState;
use crate::{HalError, der};

pub(super) const PASSWORD: Option<AuthSession> = Some(AuthSession::Password);

/// The TCG-style ECC P-256 storage root key template.
pub(super) fn srk_template() -> Result<Public, HalError> {
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
pub(super) fn identity_template() -> Result<Public, HalError> {
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

/// What an object's public area says it is, for "not ours" messages.
pub(super) fn describe(public: &Public) -> String {
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
    let da = if a.no_da() {
        "noDA"
    } else {
        "dictionary-attack protected"
    };
    format!("{kind}, {}, {da}", uses.join("+"))
}

/// Whether `found` is what `template` makes: attributes (noDA included, so a failed
/// authorisation on it never counts towards lockout), name algorithm, auth policy and
/// parameters all equal. Only the key itself (`unique`) differs between two such objects.
pub(super) fn made_from(found: &Public, template: &Public) -> bool {
    match (found, template) {
        (
            Public::Ecc {
                object_attributes: a,
                name_hashing_algorithm: n,
                auth_policy: p,
                parameters: q,
                ..
            },
            Public::Ecc {
                object_attributes: ta,
                name_hashing_algorithm: tn,
                auth_policy: tp,
                parameters: tq,
                ..
            },
        ) => a == ta && n == tn && p == tp && q == tq,
        _ => false,
    }
}

pub(super) fn spki(public: &Public) -> Result<Vec<u8>, HalError> {
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

pub(super) fn hex(handle: u32) -> String {
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
    pub(super) fn open_persistent(&mut self, handle: u32) -> Result<(KeyHandle, Public), HalError> {
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
            if !made_from(&public, &srk_template()?) {
                return Err(self.foreign(ForeignPlace::Srk, &public));
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

    pub(super) fn persist(
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

    /// Evicts the persistent object `key` at `handle` (owner authorisation, which is not
    /// dictionary-attack protected).
    pub(super) fn evict(
        &mut self,
        key: KeyHandle,
        handle: u32,
        operation: &'static str,
    ) -> Result<(), HalError> {
        let persistent = Persistent::Persistent(Self::persistent(handle)?);
        self.ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.evict_control(Provision::Owner, key.into(), persistent)
            })
            .map_err(HalError::tpm(operation))?;
        Ok(())
    }

    /// The handles in use of the type of `first` (persistent objects, NV indexes), for
    /// suggesting a free one. Bounded: a TPM holds a few dozen of each at most.
    fn handles_in_use(&mut self, first: u32) -> Result<Vec<u32>, HalError> {
        let mut used = Vec::new();
        let mut next = first;
        for _ in 0..16 {
            let (data, more) = self
                .ctx
                .get_capability(CapabilityType::Handles, next, 64)
                .map_err(HalError::tpm("list handles"))?;
            let CapabilityData::Handles(list) = data else {
                break;
            };
            let handles: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
            match handles.last() {
                Some(&last) if more => {
                    used.extend(handles);
                    next = last.saturating_add(1);
                }
                _ => {
                    used.extend(handles);
                    break;
                }
            }
        }
        Ok(used)
    }

    /// The first free handle of the same type after `start` (within 256), as hex.
    fn free_handle_after(&mut self, start: u32) -> String {
        let kind = start & 0xFF00_0000;
        let used = self.handles_in_use(kind).unwrap_or_default();
        let taken = [self.srk_handle, self.identity_handle, self.counter_index];
        (start.saturating_add(1)..start.saturating_add(256))
            .find(|h| !used.contains(h) && !taken.contains(h) && *h & 0xFF00_0000 == kind)
            .map(hex)
            .unwrap_or_else(|| {
                "HANDLE (a free one: `tpm2_getcap handles-persistent` or `handles-nv-index` \
                 lists those in use)"
                    .to_owned()
            })
    }

    /// The error for an object posguard did not create at one of its handles.
    pub(super) fn foreign(&mut self, place: ForeignPlace, public: &Public) -> HalError {
        self.foreign_described(place, describe(public))
    }

    /// [`TpmState::foreign`] with the description made by the caller (NV indexes).
    pub(super) fn foreign_described(&mut self, place: ForeignPlace, found: String) -> HalError {
        let (what, handle, option, key) = match place {
            ForeignPlace::Srk => (
                "storage root key",
                self.srk_handle,
                "--srk-handle",
                "srk_handle",
            ),
            ForeignPlace::Identity => (
                "device identity key",
                self.identity_handle,
                "--identity-handle",
                "identity_handle",
            ),
            ForeignPlace::Counter => (
                "monotonic counter",
                self.counter_index,
                "--counter-index",
                "counter_index",
            ),
        };
        HalError::Foreign {
            what,
            handle: hex(handle),
            found,
            option,
            key,
            free: self.free_handle_after(handle),
        }
    }
}

/// Which of posguard's persistent handles an object was found at.
#[derive(Debug, Clone, Copy)]
pub(super) enum ForeignPlace {
    Srk,
    Identity,
    Counter,
}
