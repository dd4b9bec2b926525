//! Automatic certificate renewal. Once a set share of the certificate's lifetime has passed
//! (2/3 by default), the agent asks the collector for a new certificate over the same mTLS
//! channel, with a fresh CSR signed by the TPM-held key. The new chain is checked (it must be for
//! this key, and newer) and written atomically beside the old one; the next connection uses it.
//! A failed renewal changes nothing on disk and is retried with backoff: the terminal keeps
//! its working identity until the old certificate expires.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::UplinkError;

/// Validity of the leaf certificate in a PEM chain: (not_before, not_after) in unix seconds.
pub(crate) fn validity(pem: &[u8]) -> Option<(u64, u64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let v = cert.validity();
    Some((
        u64::try_from(v.not_before.timestamp()).ok()?,
        u64::try_from(v.not_after.timestamp()).ok()?,
    ))
}

/// The leaf's SubjectPublicKeyInfo (DER).
fn leaf_spki(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// Whether `fraction` of the lifetime `(not_before, not_after)` has passed at `now`.
pub(crate) fn due(not_before: u64, not_after: u64, now: u64, fraction: f64) -> bool {
    let life = not_after.saturating_sub(not_before) as f64;
    now as f64 >= not_before as f64 + life * fraction.clamp(0.0, 1.0)
}

/// When the next renewal attempt may happen, with its own backoff.
#[derive(Debug)]
pub(super) struct RenewSchedule {
    next_try: Instant,
    failures: u32,
}

impl RenewSchedule {
    pub(super) fn new() -> Self {
        RenewSchedule {
            next_try: Instant::now(),
            failures: 0,
        }
    }

    pub(super) fn ready(&self) -> bool {
        Instant::now() >= self.next_try
    }

    pub(super) fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let secs = 30u64.saturating_mul(1u64 << self.failures.min(7)).min(3600);
        self.next_try = Instant::now() + Duration::from_secs(secs);
    }

    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.next_try = Instant::now() + Duration::from_secs(60);
    }

    pub(super) fn later(&mut self) {
        self.next_try = Instant::now() + Duration::from_secs(60);
    }
}

/// Checks the collector's answer and installs the new chain atomically.
pub(super) fn install(
    path: &Path,
    new_chain_pem: &str,
    our_spki: &[u8],
    old_not_after: u64,
) -> Result<u64, UplinkError> {
    let bytes = new_chain_pem.as_bytes();
    if leaf_spki(bytes).as_deref() != Some(our_spki) {
        return Err(UplinkError::Config(
            "the renewed certificate is not for this terminal's key".to_owned(),
        ));
    }
    let (_, not_after) = validity(bytes)
        .ok_or_else(|| UplinkError::Config("the renewed certificate does not parse".to_owned()))?;
    if not_after < old_not_after {
        return Err(UplinkError::Config(
            "the renewed certificate expires before the current one".to_owned(),
        ));
    }
    let tmp = path.with_extension("renew.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        UplinkError::Config(format!(
            "installing the renewed certificate at {}: {e}",
            path.display()
        ))
    })?;
    Ok(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_the_fraction() {
        assert!(!due(0, 90, 59, 2.0 / 3.0));
        assert!(due(0, 90, 60, 2.0 / 3.0));
        assert!(due(100, 100, 100, 0.5));
        assert!(due(0, 90, 0, 0.0));
    }
}
