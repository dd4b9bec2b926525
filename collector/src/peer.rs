//! The device behind a verified client certificate: its id (URI SAN
//! `urn:posguard:device:<id>`), its identity key (the certificate's P-256 SPKI, which is the
//! TPM-held DIK) and its expiry. Never taken from a request body.

use posguard_proto::keys::DikPublicKey;
use posguard_proto::text::DeviceId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ingest::Peer;

/// The URI prefix of device names in certificates.
pub const DEVICE_URI_PREFIX: &str = "urn:posguard:device:";

/// Why a client certificate names no usable device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Not parseable X.509.
    #[error("client certificate cannot be parsed")]
    Parse,
    /// No (or more than one) `urn:posguard:device:` URI SAN, or an invalid id.
    #[error("client certificate names no single valid device id")]
    NoDeviceId,
    /// The key is not an uncompressed P-256 key.
    #[error("client certificate key is not P-256")]
    NotP256,
}

/// Reads the peer from the DER of its (already verified) end-entity certificate.
pub fn peer_from_cert(der: &[u8]) -> Result<Peer, PeerError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| PeerError::Parse)?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX)
            {
                ids.push(id.to_owned());
            }
        }
    }
    let [id] = ids.as_slice() else {
        return Err(PeerError::NoDeviceId);
    };
    let device_id = DeviceId::new(id.as_str()).map_err(|_| PeerError::NoDeviceId)?;
    let dik =
        DikPublicKey::from_der_or_point(cert.public_key().raw).map_err(|_| PeerError::NotP256)?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(Peer {
        device_id,
        dik,
        cert_not_after_unix: not_after,
    })
}

/// Who is on the other end of a connection, as far as TLS could tell.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No client certificate (allowed for `POST /v1/enroll` only).
    Anonymous,
    /// A verified client certificate naming a device.
    Device(Peer),
    /// A verified client certificate that names no usable device.
    Unusable(PeerError),
}

impl Auth {
    /// From the verified end-entity certificate, if the client sent one.
    pub fn from_cert(der: Option<&[u8]>) -> Self {
        match der.map(peer_from_cert) {
            None => Self::Anonymous,
            Some(Ok(peer)) => Self::Device(peer),
            Some(Err(e)) => Self::Unusable(e),
        }
    }
}
