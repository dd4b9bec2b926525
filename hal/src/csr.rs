//! rcgen glue: the device identity key as the subject key of a certificate signing request.

use std::sync::Arc;

use crate::{HalError, SecureElement, der, sha256};

/// An rcgen signing key backed by a [`SecureElement`]'s identity key (ECDSA P-256 SHA-256).
#[derive(Debug, Clone)]
pub struct IdentityCsrKey {
    element: Arc<dyn SecureElement>,
    point: Vec<u8>,
}

impl IdentityCsrKey {
    /// Wraps the identity key of `element` (which must exist).
    pub fn new(element: Arc<dyn SecureElement>) -> Result<Self, HalError> {
        let spki = element.identity_public_key()?;
        let point = der::p256_point_from_spki(&spki)
            .ok_or_else(|| HalError::Unexpected {
                operation: "CSR key",
                detail: "identity key is not a P-256 key".to_owned(),
            })?
            .to_vec();
        Ok(IdentityCsrKey { element, point })
    }
}

impl rcgen::PublicKeyData for IdentityCsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for IdentityCsrKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.element.sign_digest(&sha256(msg)).map_err(|e| {
            tracing::error!(error = %e, "secure element refused to sign a CSR");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A PEM CSR for `device_id`: subject CN = device id, URI SAN `urn:posguard:device:<id>`.
pub fn device_csr_pem(
    element: Arc<dyn SecureElement>,
    device_id: &str,
) -> Result<String, HalError> {
    let key = IdentityCsrKey::new(element)?;
    let fail = |e: rcgen::Error| HalError::Unexpected {
        operation: "CSR",
        detail: e.to_string(),
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device_id);
    let uri = rcgen::string::Ia5String::try_from(format!("urn:posguard:device:{device_id}"))
        .map_err(fail)?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    params
        .serialize_request(&key)
        .map_err(fail)?
        .pem()
        .map_err(fail)
}
