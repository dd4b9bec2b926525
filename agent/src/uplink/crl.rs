//! The fleet CRL as the agent applies it to the collector's certificate, so that operations
//! can stop every terminal trusting a stolen collector key without rotating the fleet CA
//! (docs/runbook.md, "Collector key compromise").
//!
//! The CRL is signed by the fleet CA, so it can come from anywhere, the collector included:
//! a CRL is taken only if one of the `fleet_ca` certificates signed it, and only if its CRL
//! number is higher than the one the agent holds (newest wins, so a compromised server can
//! withhold a newer CRL but never bring back an older one). The agent keeps it at
//! `uplink.crl` (in its state directory), reads it for every new connection, and asks the
//! collector for the current one (`GET /v1/crl`) after each new connection and every
//! [`REFRESH`].

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

use super::UplinkError;

/// How often the agent asks the collector for the current CRL on a long-lived connection.
pub const REFRESH: Duration = Duration::from_secs(600);

/// Largest CRL accepted (a fleet CRL lists serials of 16 bytes: some ten thousand fit).
pub const MAX_BYTES: usize = 512 * 1024;

/// A CRL checked to be signed by the fleet CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCrl {
    /// The CRL (DER), as rustls takes it.
    pub der: Vec<u8>,
    /// Its CRL number (0 if it has none).
    pub number: u64,
}

/// Why a CRL was not taken.
fn bad(what: &str, reason: impl std::fmt::Display) -> UplinkError {
    UplinkError::Config(format!("{what}: {reason}"))
}

/// Parses `bytes` (PEM or DER) and checks that one of `fleet_ca` signed it.
pub fn verify(
    bytes: &[u8],
    fleet_ca: &[CertificateDer<'_>],
    what: &str,
) -> Result<FleetCrl, UplinkError> {
    if bytes.len() > MAX_BYTES {
        return Err(bad(what, format!("larger than {MAX_BYTES} bytes")));
    }
    let der = if bytes.starts_with(b"-----") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).map_err(|e| bad(what, e))?;
        if pem.label != "X509 CRL" {
            return Err(bad(what, format!("a PEM {:?}, not an X509 CRL", pem.label)));
        }
        pem.contents
    } else {
        bytes.to_vec()
    };
    let (rest, crl) = CertificateRevocationList::from_der(&der).map_err(|e| bad(what, e))?;
    if !rest.is_empty() {
        return Err(bad(what, "trailing bytes after the CRL"));
    }
    let signed = fleet_ca.iter().any(|ca| {
        x509_parser::parse_x509_certificate(ca.as_ref())
            .is_ok_and(|(_, ca)| crl.verify_signature(ca.public_key()).is_ok())
    });
    if !signed {
        return Err(bad(what, "not signed by the fleet CA (uplink.fleet_ca)"));
    }
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    Ok(FleetCrl { der, number })
}

/// The CRL at `path`, if there is one. A file that is there but not a fleet CRL is an error:
/// silently trusting a revoked collector would be worse than not connecting.
pub fn load(path: &Path, fleet_ca: &[CertificateDer<'_>]) -> Result<Option<FleetCrl>, UplinkError> {
    match std::fs::read(path) {
        Ok(bytes) => verify(&bytes, fleet_ca, &format!("uplink.crl {}", path.display())).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(&format!("uplink.crl {}", path.display()), e)),
    }
}

/// Takes `offered` (from the collector) if it is a fleet CRL newer than `current`, writing it
/// atomically to `path`. `Ok(Some(number))` when installed, `Ok(None)` when not newer.
pub fn offer(
    path: &Path,
    current: Option<u64>,
    offered: &[u8],
    fleet_ca: &[CertificateDer<'_>],
) -> Result<Option<u64>, UplinkError> {
    let crl = verify(offered, fleet_ca, "the collector's CRL")?;
    if current.is_some_and(|n| crl.number <= n) {
        return Ok(None);
    }
    install(path, &crl.der)?;
    Ok(Some(crl.number))
}

/// Asks the collector on `conn` for the current CRL and takes it if it is newer than the one
/// at `path`. `Ok(Some(number))` when a newer CRL was installed (the caller reconnects, so that
/// the collector's own certificate is checked against it).
pub(super) async fn refresh(
    conn: &mut super::http::Connection,
    path: &Path,
    fleet_ca_path: &Path,
    timeout: Duration,
) -> Result<Option<u64>, UplinkError> {
    let fleet_ca = super::tls::read_certs(fleet_ca_path)?;
    // A damaged file is replaced by any valid CRL the collector offers.
    let current = load(path, &fleet_ca).ok().flatten().map(|c| c.number);
    let answer = conn.get("/v1/crl", timeout).await?;
    if answer.status != 200 {
        return Err(UplinkError::Refused {
            status: answer.status,
            code: answer.error_code.unwrap_or_default(),
        });
    }
    offer(path, current, &answer.body, &fleet_ca)
}

fn install(path: &Path, der: &[u8]) -> Result<(), UplinkError> {
    let tmp = path.with_extension("crl.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(der)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| bad(&format!("writing uplink.crl {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, IsCa, Issuer, KeyIdMethod, KeyPair,
        RevokedCertParams, SerialNumber,
    };

    use super::*;

    fn ca() -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = p.self_signed(&key).unwrap();
        let der = cert.der().clone();
        (Issuer::new(p, key), der)
    }

    fn crl(issuer: &Issuer<'_, KeyPair>, number: u64, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    #[test]
    fn newest_fleet_crl_wins_and_others_are_refused() {
        let (issuer, ca_der) = ca();
        let (stranger, _) = ca();
        let fleet = [ca_der];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.crl");
        assert_eq!(load(&path, &fleet).unwrap(), None, "absent: no CRL yet");

        let two = crl(&issuer, 2, &[7]);
        assert_eq!(offer(&path, None, two.as_bytes(), &fleet).unwrap(), Some(2));
        assert_eq!(load(&path, &fleet).unwrap().unwrap().number, 2);
        // Older or equal: ignored, the file keeps number 2.
        let one = crl(&issuer, 1, &[]);
        assert_eq!(offer(&path, Some(2), one.as_bytes(), &fleet).unwrap(), None);
        assert_eq!(offer(&path, Some(2), two.as_bytes(), &fleet).unwrap(), None);
        assert_eq!(load(&path, &fleet).unwrap().unwrap().number, 2);
        // Signed by someone else: refused whatever its number.
        let forged = crl(&stranger, 99, &[]);
        let e = offer(&path, Some(2), forged.as_bytes(), &fleet).unwrap_err();
        assert!(e.to_string().contains("not signed by the fleet CA"), "{e}");
        assert!(offer(&path, Some(2), b"garbage", &fleet).is_err());
        let three = crl(&issuer, 3, &[7, 8]);
        assert_eq!(
            offer(&path, Some(2), three.as_bytes(), &fleet).unwrap(),
            Some(3)
        );
        assert_eq!(load(&path, &fleet).unwrap().unwrap().number, 3);

        // A damaged file on disk is an error, not "no CRL".
        std::fs::write(
            &path,
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        assert!(load(&path, &fleet).is_err());
        std::fs::write(&path, forged).unwrap();
        assert!(load(&path, &fleet).is_err());
    }
}
