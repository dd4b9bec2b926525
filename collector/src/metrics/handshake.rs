//! TLS handshakes refused because of the client certificate, by reason: counted by the client
//! verifier ([`crate::revocation::ReportingVerifier`]) as it refuses, every reason present
//! from the start (a dashboard tells "none" from "not reported").

use std::sync::atomic::{AtomicU64, Ordering};

use rustls::CertificateError;

/// The `reason` label values, in the order of [`HandshakeRefusals`]' counters.
pub const REASONS: [&str; 8] = [
    "revoked",
    "unknown_ca",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "bad_encoding",
    "wrong_purpose",
    "other",
];

/// Counters of refused handshakes.
#[derive(Debug, Default)]
pub struct HandshakeRefusals([AtomicU64; REASONS.len()]);

/// The label of a verifier's refusal.
pub fn reason(e: &rustls::Error) -> &'static str {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Revoked => "revoked",
            C::UnknownIssuer => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::BadSignature => "bad_signature",
            C::BadEncoding => "bad_encoding",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "wrong_purpose",
            _ => "other",
        },
        _ => "other",
    }
}

impl HandshakeRefusals {
    /// Counts a refusal.
    pub fn refused(&self, e: &rustls::Error) {
        let r = reason(e);
        let i = REASONS
            .iter()
            .position(|x| *x == r)
            .unwrap_or(REASONS.len() - 1);
        if let Some(c) = self.0.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (reason, count) for every reason.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
    }
}
