//! [`DeviceCa`]: the fleet CA as the server uses it (from `ca_cert` and `ca_key`), signing
//! device certificates: subject CN and URI SAN `urn:posguard:device:<id>`, clientAuth only,
//! random serial, valid `device_cert_days` (never beyond the CA itself).

use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use time::{Duration, OffsetDateTime};

use super::{PkiError, bad, io_err, random_serial, serial_hex};
use crate::peer::DEVICE_URI_PREFIX;

/// A certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The device the certificate names.
    pub device_id: String,
    /// The device certificate (PEM).
    pub certificate_pem: String,
    /// The fleet CA certificate (PEM).
    pub ca_pem: String,
    /// Serial, lower-case hex.
    pub serial: String,
    /// notAfter, Unix seconds.
    pub not_after_unix: u64,
}

impl Issued {
    /// Leaf first, then the CA.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.certificate_pem, self.ca_pem)
    }
}

/// The fleet CA's certificate and key, loaded once.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    ca_pem: String,
    ca_not_after: OffsetDateTime,
    days: u32,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("DeviceCa")
            .field("ca_not_after", &self.ca_not_after)
            .field("days", &self.days)
            .finish_non_exhaustive()
    }
}

impl DeviceCa {
    /// Loads `ca_cert` and `ca_key`, checks that the key belongs to the certificate and that
    /// the certificate is one of the `fleet_ca` roots (else the certificates it issues would not
    /// be accepted by this very server).
    pub fn load(
        ca_cert: &Path,
        ca_key: &Path,
        fleet_ca: &Path,
        days: u32,
    ) -> Result<Self, PkiError> {
        let ca_pem = std::fs::read_to_string(ca_cert).map_err(io_err(ca_cert))?;
        let certs = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(ca_cert, e))?;
        let [ca_der] = certs.as_slice() else {
            return Err(bad(ca_cert, "must hold exactly one certificate"));
        };
        let ca_der = ca_der.to_vec();
        let key_pem = std::fs::read_to_string(ca_key).map_err(io_err(ca_key))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(ca_key, e))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&ca_der).map_err(|e| bad(ca_cert, e))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad(ca_key, "not the key of ca_cert"));
        }
        if !parsed.is_ca() {
            return Err(bad(ca_cert, "not a CA certificate"));
        }
        let ca_not_after = parsed.validity().not_after.to_datetime();
        let roots = CertificateDer::pem_file_iter(fleet_ca)
            .map_err(|e| bad(fleet_ca, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(fleet_ca, e))?;
        if !roots.iter().any(|r| r.as_ref() == ca_der.as_slice()) {
            return Err(bad(ca_cert, "not one of the fleet_ca certificates"));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), key)
            .map_err(|e| bad(ca_cert, e))?;
        Ok(Self {
            issuer,
            ca_der,
            ca_pem: normalise_pem(&ca_pem),
            ca_not_after,
            days,
        })
    }

    /// The rcgen issuer (for the CRL).
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// When the CA certificate expires.
    pub fn ca_not_after(&self) -> OffsetDateTime {
        self.ca_not_after
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Signs a certificate for `device_id` over `key` (checked by [`super::csr::check`]).
    pub fn issue(
        &self,
        device_id: &str,
        key: &impl PublicKeyData,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, device_id);
        let uri = rcgen::string::Ia5String::try_from(format!("{DEVICE_URI_PREFIX}{device_id}"))
            .map_err(|e| PkiError::Invalid(format!("device id: {e}")))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.not_before = now - Duration::minutes(5);
        p.not_after = (now + Duration::days(i64::from(self.days))).min(self.ca_not_after);
        if p.not_after <= now {
            return Err(PkiError::Invalid("the fleet CA has expired".into()));
        }
        let not_after_unix = u64::try_from(p.not_after.unix_timestamp()).unwrap_or(0);
        let cert = p.signed_by(key, &self.issuer)?;
        Ok(Issued {
            device_id: device_id.to_owned(),
            certificate_pem: cert.pem(),
            ca_pem: self.ca_pem.clone(),
            serial: serial_hex(&serial),
            not_after_unix,
        })
    }
}

fn normalise_pem(pem: &str) -> String {
    let trimmed = pem.trim_end();
    format!("{trimmed}\n")
}
