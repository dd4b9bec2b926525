//! Sealed data objects: a keyed-hash object holding the secret, created under the storage root
//! key. Only this TPM can load it again; its integrity is checked by the TPM on load, so a
//! changed byte is refused there.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::Tss2ResponseCodeKind as Kind;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, KeyedHashScheme, Private, Public, PublicBuilder, PublicKeyedHashParameters,
    SensitiveData,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use super::TpmState;
use crate::blob::{BlobKind, put_field, take_field};
use crate::{HalError, MAX_SEALED_SECRET, SealedBlob};

const PASSWORD: Option<AuthSession> = Some(AuthSession::Password);

/// Whether a failed load is the TPM's state (a resource warning) or the connection, not the blob.
fn says_nothing_about_the_blob(e: &tss_esapi::Error) -> bool {
    match e {
        tss_esapi::Error::Tss2Error(rc) => matches!(
            rc.kind(),
            None | Some(
                Kind::ContextGap
                    | Kind::ObjectMemory
                    | Kind::SessionMemory
                    | Kind::Memory
                    | Kind::SessionHandles
                    | Kind::ObjectHandles
                    | Kind::Locality
                    | Kind::Yielded
                    | Kind::Canceled
                    | Kind::Testing
                    | Kind::Retry
                    | Kind::NvRate
                    | Kind::NvUnavailable
                    | Kind::Lockout
            )
        ),
        tss_esapi::Error::WrapperError(_) => true,
    }
}

fn sealed_template() -> Result<Public, HalError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .build()
        .map_err(HalError::tpm("build sealed object template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(Digest::default())
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(HalError::tpm("build sealed object template"))
}

impl TpmState {
    pub(crate) fn seal(&mut self, secret: &[u8]) -> Result<SealedBlob, HalError> {
        if secret.is_empty() || secret.len() > MAX_SEALED_SECRET {
            return Err(HalError::SecretSize {
                len: secret.len(),
                max: MAX_SEALED_SECRET,
            });
        }
        let srk = self.srk()?;
        let data = SensitiveData::try_from(secret.to_vec()).map_err(HalError::tpm("seal"))?;
        let template = sealed_template()?;
        let created = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.create(srk, template, None, Some(data), None, None)
            })
            .map_err(HalError::tpm("seal"))?;
        let public = created
            .out_public
            .marshall()
            .map_err(HalError::tpm("seal"))?;
        let mut out = SealedBlob::header(BlobKind::Tpm);
        put_field(&mut out, &public)?;
        put_field(&mut out, created.out_private.value())?;
        Ok(SealedBlob::from_bytes(out))
    }

    pub(crate) fn unseal(&mut self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, HalError> {
        let mut payload = blob.payload(BlobKind::Tpm)?;
        let public_bytes = take_field(&mut payload)?;
        let private_bytes = take_field(&mut payload)?;
        if !payload.is_empty() {
            return Err(HalError::blob("trailing bytes after the sealed object"));
        }
        let public = Public::unmarshall(public_bytes)
            .map_err(|e| HalError::blob(format!("public area does not parse: {e}")))?;
        if !matches!(public, Public::KeyedHash { .. }) {
            return Err(HalError::blob("public area is not a sealed data object"));
        }
        let private = Private::try_from(private_bytes.to_vec())
            .map_err(|e| HalError::blob(format!("private area does not parse: {e}")))?;
        let srk = self.srk()?;
        let loaded = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| ctx.load(srk, private, public))
            .map_err(|e| {
                // A TPM that is short of resources or busy ("out of memory for object
                // contexts", retry, …) says nothing about the blob: calling that tampering
                // would make the agent move a good data key aside. Any other refusal is the
                // blob's (integrity, binding, size…).
                if !says_nothing_about_the_blob(&e) {
                    HalError::blob(format!(
                        "the TPM refused to load it (tampered, or sealed by another TPM): {e}"
                    ))
                } else {
                    HalError::Tpm {
                        operation: "load a sealed object",
                        source: e,
                    }
                }
            })?;
        let result = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| ctx.unseal(loaded.into()))
            .map_err(HalError::tpm("unseal"));
        self.flush(loaded.into());
        Ok(Zeroizing::new(result?.value().to_vec()))
    }
}
