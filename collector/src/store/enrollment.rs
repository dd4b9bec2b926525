//! Rows of enrollment tokens (only their SHA-256 is stored) and of the enrollment history:
//! every enrollment, renewal, refusal and revocation, queryable with
//! `posguard-collector enrollments`.

use serde::Serialize;

/// A one-time enrollment token as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token's 32 random bytes; the token itself is never stored.
    pub hash: [u8; 32],
    /// The device the token may enroll.
    pub device_id: String,
    /// When it was created (Unix ms).
    pub created_ms: u64,
    /// When it stops being accepted (Unix ms).
    pub expires_ms: u64,
    /// When it was used (Unix ms), if it was.
    pub used_ms: Option<u64>,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the secret, but nothing needs to see it in logs either.
        f.debug_struct("TokenRow")
            .field("device_id", &self.device_id)
            .field("expires_ms", &self.expires_ms)
            .field("used_ms", &self.used_ms)
            .finish_non_exhaustive()
    }
}

/// What an enrollment-history entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollKind {
    /// `POST /v1/enroll` (token + CSR).
    Enroll,
    /// `POST /v1/renew` (mTLS + CSR).
    Renew,
    /// `ca revoke`.
    Revoke,
    /// `ca sign-csr` (the offline path).
    Offline,
    /// `device decommission`.
    Decommission,
}

impl EnrollKind {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Offline => "offline",
            Self::Decommission => "decommission",
        }
    }
}

/// One entry of the enrollment history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRow {
    /// Row id (increasing; ignored on insert).
    pub id: i64,
    /// When (collector wall time, Unix ms).
    pub at_ms: u64,
    /// `enroll`, `renew`, `revoke`, `offline` or `decommission`.
    pub kind: String,
    /// The device (the token's or the client certificate's), if known.
    pub device_id: Option<String>,
    /// `issued`, `refused` or `revoked`.
    pub outcome: String,
    /// The refusal code (see docs/collector.md), for refusals.
    pub reason: Option<String>,
    /// Serial (hex) of the certificate issued or revoked.
    pub serial: Option<String>,
    /// notAfter of the certificate issued (Unix seconds).
    pub not_after_unix: Option<u64>,
    /// The remote address of the request.
    pub peer: Option<String>,
}
