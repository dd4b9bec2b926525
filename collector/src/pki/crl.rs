//! The fleet CA's CRL: issued empty by `ca init`, reissued by `ca revoke` with the serials it
//! already lists plus the new ones and a higher CRL number. The file is replaced atomically
//! (write, sync, rename), so the server's CRL watcher never reads half a file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevokedCertParams, SerialNumber,
    SigningKey,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

use super::issue::DeviceCa;
use super::{PkiError, bad, io_err, serial_hex};

/// How long a CRL is declared valid (`nextUpdate`). The server does not enforce it; it only
/// tells other relying parties when to look again.
pub const CRL_VALID_DAYS: i64 = 365;

/// A revoked serial (DER INTEGER content bytes, minimal) and when it was revoked.
pub type Revoked = (Vec<u8>, OffsetDateTime);

/// A CRL listing `revoked`, signed by `issuer`, as PEM.
pub fn signed_pem(
    issuer: &Issuer<'_, impl SigningKey>,
    revoked: &[Revoked],
    number: u64,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(CRL_VALID_DAYS),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: *at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.pem()?)
}

fn crl_der(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, PkiError> {
    if bytes.starts_with(b"-----") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).map_err(|e| bad(path, e))?;
        Ok(pem.contents)
    } else {
        Ok(bytes.to_vec())
    }
}

/// The serials a CRL file lists and its CRL number, after checking that `ca` signed it.
pub fn read(path: &Path, ca: &DeviceCa) -> Result<(Vec<Revoked>, u64), PkiError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let der = crl_der(path, &bytes)?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| bad(path, e))?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.ca_der())
        .map_err(|e| bad(path, format!("CA certificate: {e}")))?;
    crl.verify_signature(ca_cert.public_key())
        .map_err(|_| bad(path, "not signed by the configured ca_cert/ca_key"))?;
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .filter_map(|r| {
            let serial = super::parse_serial(&serial_hex(r.raw_serial()))?;
            Some((serial, r.revocation_date.to_datetime()))
        })
        .collect();
    Ok((revoked, number))
}

/// Adds `serials` to the CRL at `path` (reissued, number + 1). Returns the serials (hex) that
/// were not listed before.
pub fn revoke(
    path: &Path,
    ca: &DeviceCa,
    serials: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<Vec<String>, PkiError> {
    let (mut revoked, number) = read(path, ca)?;
    let mut added = Vec::new();
    for s in serials {
        if !revoked.iter().any(|(r, _)| r == s) {
            revoked.push((s.clone(), now));
            added.push(serial_hex(s));
        }
    }
    let next = number
        .checked_add(1)
        .ok_or_else(|| bad(path, "CRL number exhausted"))?;
    let pem = signed_pem(ca.issuer(), &revoked, next, now)?;
    replace(path, pem.as_bytes())?;
    Ok(added)
}

/// Replaces `path` atomically with `bytes` (mode 0644).
fn replace(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = std::path::PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
