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

use crate::enroll::{Refusal, Refused};
use crate::peer::DEVICE_URI_PREFIX;

/// The CSR's public key, checked to be P-256.
pub type CsrKey = rcgen::PublicKey;

/// Longest piece of a CSR quoted back in a refusal (the CSR comes from outside).
const QUOTE_MAX: usize = 80;

fn quote(text: &str) -> String {
    let mut q: String = text.chars().take(QUOTE_MAX).collect();
    if q.len() < text.len() {
        q.push('…');
    }
    q.escape_debug().to_string()
}

fn bad_csr(detail: String) -> Refused {
    Refused::new(Refusal::BadCsr, detail)
}

/// Checks `pem` for `device_id`; the key to certify on success.
pub fn check(pem: &str, device_id: &str) -> Result<CsrKey, Refused> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        bad_csr("not a PEM `CERTIFICATE REQUEST` (make it with `posguard-provision csr`)".into())
    })?;
    let (rest, parsed) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| bad_csr(format!("the CSR does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(bad_csr("trailing bytes after the CSR".into()));
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
        return Err(Refused::new(
            Refusal::UnsupportedKey,
            "the key must be ECDSA P-256 (the TPM-held device identity key)".into(),
        ));
    }
    let params = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => Refused::new(
            Refusal::BadCsrSignature,
            "the CSR's self-signature does not verify (was it edited after signing?)".into(),
        ),
        e => bad_csr(format!(
            "the CSR asks for something the CA does not handle: {e}"
        )),
    })?;
    check_identity(&params, device_id)?;
    Ok(params.public_key)
}

/// The usual short name of a subject attribute (`O`, `OU`, …), for messages.
fn dn_name(kind: &DnType) -> String {
    match kind {
        DnType::CommonName => "CN".into(),
        DnType::CountryName => "C".into(),
        DnType::LocalityName => "L".into(),
        DnType::StateOrProvinceName => "ST".into(),
        DnType::OrganizationName => "O".into(),
        DnType::OrganizationalUnitName => "OU".into(),
        other => format!("{other:?}"),
    }
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::DnsName(n) => format!("DNS:{}", quote(n.as_str())),
        SanType::URI(u) => format!("URI:{}", quote(u.as_str())),
        SanType::Rfc822Name(m) => format!("email:{}", quote(m.as_str())),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        other => format!("{other:?}").chars().take(QUOTE_MAX).collect(),
    }
}

/// A device CSR names the device and nothing else: subject at most one `CN=<id>`, SANs at most
/// one URI `urn:posguard:device:<id>`, at least one of the two. Another device's id is
/// `wrong_device_id` (wrong token or wrong terminal); anything else is `bad_csr`, saying what
/// to remove (the CSR was not made by `posguard-provision csr`).
fn check_identity(csr: &CertificateSigningRequestParams, device_id: &str) -> Result<(), Refused> {
    const ONLY: &str = "a device CSR names only CN=<device id> and the URI SAN \
                        urn:posguard:device:<device id>";
    let mut cn = false;
    for (kind, value) in csr.params.distinguished_name.iter() {
        let text = match value {
            DnValue::Utf8String(s) => s.as_str(),
            DnValue::PrintableString(s) => s.as_str(),
            DnValue::Ia5String(s) => s.as_str(),
            _ => {
                return Err(bad_csr(format!(
                    "subject attribute {} is not a UTF8, printable or IA5 string; {ONLY}",
                    dn_name(kind)
                )));
            }
        };
        if *kind != DnType::CommonName {
            return Err(bad_csr(format!(
                "extra subject attribute {}={}; {ONLY}",
                dn_name(kind),
                quote(text)
            )));
        }
        if cn {
            return Err(bad_csr(format!("more than one CN; {ONLY}")));
        }
        if text != device_id {
            return Err(Refused::new(
                Refusal::WrongDeviceId,
                format!(
                    "the CSR names device {}, expected {}",
                    quote(text),
                    quote(device_id)
                ),
            ));
        }
        cn = true;
    }
    let want = format!("{DEVICE_URI_PREFIX}{device_id}");
    let mut uri = false;
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(u) if u.as_str() == want && uri => {
                return Err(bad_csr(format!("the device URI SAN twice; {ONLY}")));
            }
            SanType::URI(u) if u.as_str() == want => uri = true,
            SanType::URI(u) if u.as_str().starts_with(DEVICE_URI_PREFIX) => {
                return Err(Refused::new(
                    Refusal::WrongDeviceId,
                    format!(
                        "the CSR's URI SAN names {}, expected {}",
                        quote(u.as_str()),
                        quote(&want)
                    ),
                ));
            }
            other => {
                return Err(bad_csr(format!(
                    "extra subject alternative name {}; {ONLY}",
                    san_text(other)
                )));
            }
        }
    }
    if cn || uri {
        Ok(())
    } else {
        Err(bad_csr(format!("the CSR names no device; {ONLY}")))
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

    fn code(r: Result<CsrKey, Refused>) -> Result<(), Refusal> {
        r.map(|_| ()).map_err(|r| r.refusal)
    }

    fn detail(r: Result<CsrKey, Refused>) -> String {
        r.err().and_then(|r| r.detail).unwrap_or_default()
    }

    #[test]
    fn identity_rules() {
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let uri = "urn:posguard:device:t1";
        assert!(check(&csr(p256, Some("t1"), &[uri]), "t1").is_ok());
        assert!(check(&csr(p256, None, &[uri]), "t1").is_ok());
        assert!(check(&csr(p256, Some("t1"), &[]), "t1").is_ok());
        let wrong = Err(Refusal::WrongDeviceId);
        assert_eq!(code(check(&csr(p256, Some("t2"), &[uri]), "t1")), wrong);
        let two = [uri, "urn:posguard:device:t2"];
        assert_eq!(code(check(&csr(p256, Some("t1"), &two), "t1")), wrong);
        let bad = Err(Refusal::BadCsr);
        let none = check(&csr(p256, None, &[]), "t1");
        assert!(detail(check(&csr(p256, None, &[]), "t1")).contains("names no device"));
        assert_eq!(code(none), bad);
        let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
        assert_eq!(
            code(check(&csr(p384, Some("t1"), &[uri]), "t1")),
            Err(Refusal::UnsupportedKey)
        );
        assert_eq!(code(check("junk", "t1")), bad);
    }

    #[test]
    fn extra_subject_attributes_and_sans_are_bad_csr_and_named() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let uri = rcgen::string::Ia5String::try_from("urn:posguard:device:t1").unwrap();
        let make = |extra_dn: Option<(DnType, &str)>, extra_san: Option<SanType>| {
            let mut p = CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "t1");
            if let Some((k, v)) = extra_dn {
                p.distinguished_name.push(k, v);
            }
            p.subject_alt_names = vec![SanType::URI(uri.clone())];
            p.subject_alt_names.extend(extra_san);
            p.serialize_request(&key).unwrap().pem().unwrap()
        };
        let cases = [
            (
                make(Some((DnType::OrganizationName, "Acme")), None),
                "O=Acme",
            ),
            (
                make(Some((DnType::OrganizationalUnitName, "tills")), None),
                "OU=tills",
            ),
            (
                make(
                    None,
                    Some(SanType::DnsName("till.example".try_into().unwrap())),
                ),
                "DNS:till.example",
            ),
            (
                make(None, Some(SanType::IpAddress([10, 0, 0, 1].into()))),
                "IP:10.0.0.1",
            ),
            (
                make(
                    None,
                    Some(SanType::URI("https://evil.example".try_into().unwrap())),
                ),
                "URI:https://evil.example",
            ),
        ];
        for (pem, named) in cases {
            let got = check(&pem, "t1");
            let d = detail(check(&pem, "t1"));
            assert_eq!(code(got), Err(Refusal::BadCsr), "{named}");
            assert!(d.contains(named), "{named}: {d}");
            assert!(d.contains("names only CN=<device id>"), "{d}");
        }
    }
}
