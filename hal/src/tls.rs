//! rustls glue: the device identity key as a TLS 1.3 client key. rustls hands us the handshake
//! transcript to sign; we hash it and ask the secure element to sign the digest. The call is
//! synchronous and, on a discrete TPM, slow (tens of ms): run handshakes off latency-sensitive
//! threads.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::sign::{Signer, SingleCertAndKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::{HalError, SecureElement, sha256};

/// A rustls [`SigningKey`] whose private half lives in a [`SecureElement`].
#[derive(Debug, Clone)]
pub struct IdentitySigningKey {
    element: Arc<dyn SecureElement>,
    spki: Vec<u8>,
}

impl IdentitySigningKey {
    /// Wraps the identity key of `element` (which must exist).
    pub fn new(element: Arc<dyn SecureElement>) -> Result<Self, HalError> {
        let spki = element.identity_public_key()?;
        Ok(IdentitySigningKey { element, spki })
    }
}

impl SigningKey for IdentitySigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(IdentitySigner(self.element.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct IdentitySigner(Arc<dyn SecureElement>);

impl Signer for IdentitySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign_digest(&sha256(message))
            .map_err(|e| rustls::Error::General(format!("secure element signature failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// A client-certificate resolver presenting `chain` (leaf first) with the identity key.
pub fn client_cert_resolver(
    element: Arc<dyn SecureElement>,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<dyn ResolvesClientCert>, HalError> {
    let key = IdentitySigningKey::new(element)?;
    let certified = CertifiedKey::new(chain, Arc::new(key));
    Ok(Arc::new(SingleCertAndKey::from(certified)))
}
