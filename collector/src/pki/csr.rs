//! Checks of a device's CSR, before anything is signed: PEM of one `CERTIFICATE REQUEST`, an
//! uncompressed ECDSA P-256 key, a valid self-signature, and an identity that names exactly the
//! expected device (subject CN and/or URI SAN `urn:posguard:device:<id>`, nothing else). The
//! certificate is then built from scratch: nothing else the CSR asks for is copied.

use rcgen::{CertificateSigningRequestParams, DnType, DnValue, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer as _;

use crate::enroll::Refusal;
use crate::peer::DEVICE_URI_PREFIX;

/// The CSR's public key, checked to be P-256.
pub type CsrKey = rcgen::PublicKey;

/// Checks `pem` for `device_id`; the key to certify on success.
pub fn check(pem: &str, device_id: &str) -> Result<CsrKey, Refusal> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| Refusal::BadCsr)?;
    let (rest, parsed) =
        X509CertificationRequest::from_der(der.as_ref()).map_err(|_| Refusal::BadCsr)?;
    if !rest.is_empty() {
        return Err(Refusal::BadCsr);
    }
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let point = &spki.subject_public_key.data;
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
        || curve != Some(OID_EC_P256)
        || point.len() != 65
        || point.first() != Some(&0x04)
    {
        return Err(Refusal::UnsupportedKey);
    }
    let params = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => Refusal::BadCsrSignature,
        _ => Refusal::BadCsr,
    })?;
    check_identity(&params, device_id)?;
    Ok(params.public_key)
}

fn check_identity(csr: &CertificateSigningRequestParams, device_id: &str) -> Result<(), Refusal> {
    let mut named = false;
    for (kind, value) in csr.params.distinguished_name.iter() {
        let text = match value {
            DnValue::Utf8String(s) => s.as_str(),
            DnValue::PrintableString(s) => s.as_str(),
            DnValue::Ia5String(s) => s.as_str(),
            _ => return Err(Refusal::WrongDeviceId),
        };
        if *kind != DnType::CommonName || text != device_id {
            return Err(Refusal::WrongDeviceId);
        }
        named = true;
    }
    let want = format!("{DEVICE_URI_PREFIX}{device_id}");
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(uri) if uri.as_str() == want => named = true,
            _ => return Err(Refusal::WrongDeviceId),
        }
    }
    if named {
        Ok(())
    } else {
        Err(Refusal::WrongDeviceId)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn csr(alg: &'static rcgen::SignatureAlgorithm, cn: Option<&str>, sans: &[&str]) -> String {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI((*s).try_into().unwrap()))
            .collect();
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn identity_rules() {
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let uri = "urn:posguard:device:t1";
        assert!(check(&csr(p256, Some("t1"), &[uri]), "t1").is_ok());
        assert!(check(&csr(p256, None, &[uri]), "t1").is_ok());
        assert!(check(&csr(p256, Some("t1"), &[]), "t1").is_ok());
        let wrong = Err(Refusal::WrongDeviceId);
        assert_eq!(check(&csr(p256, None, &[]), "t1").map(|_| ()), wrong);
        assert_eq!(
            check(&csr(p256, Some("t2"), &[uri]), "t1").map(|_| ()),
            wrong
        );
        let two = [uri, "urn:posguard:device:t2"];
        assert_eq!(check(&csr(p256, Some("t1"), &two), "t1").map(|_| ()), wrong);
        let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
        assert_eq!(
            check(&csr(p384, Some("t1"), &[uri]), "t1").map(|_| ()),
            Err(Refusal::UnsupportedKey)
        );
        assert_eq!(check("junk", "t1").map(|_| ()), Err(Refusal::BadCsr));
    }
}
