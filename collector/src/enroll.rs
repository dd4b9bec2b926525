//! Enrollment (`POST /v1/enroll`: one-time token + CSR) and renewal (`POST /v1/renew`: the
//! device's current certificate over mTLS + CSR). Each runs inside one store transaction: the
//! token is looked up, checked and marked used in the same transaction that records the
//! outcome, so a token can never yield two certificates. Every outcome, issued or refused, is
//! recorded in the enrollment history; refusals also raise an `enrollment_refused` alert.
//! A retry with a used token and the same key is issued again ([`retry`]).
//! [`token`]: creating, hashing and checking tokens.

pub mod retry;
pub mod token;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::alerts::{AlertKind, NewAlert};
use crate::pki::csr;
use crate::pki::issue::{DeviceCa, Issued};
use crate::store::{EnrollKind, EnrollmentRow, StoreError, StoreTx};

/// Why an enrollment or renewal was refused. The codes are stable (HTTP body and
/// `x-posguard-error`, the enrollment history, docs/collector.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The body is not the expected JSON.
    BadRequest,
    /// No such token (or not 64 hex digits).
    InvalidToken,
    /// The token was used already.
    TokenUsed,
    /// The token has expired.
    TokenExpired,
    /// Not one PEM CSR, or it asks for an extension we do not handle.
    BadCsr,
    /// The CSR's self-signature does not verify.
    BadCsrSignature,
    /// The CSR's key is not ECDSA P-256.
    UnsupportedKey,
    /// The CSR names another device, or anything besides the device.
    WrongDeviceId,
    /// Renewal for a device operations decommissioned (crate::lifecycle).
    Decommissioned,
    /// Signing failed at the collector.
    Internal,
}

impl Refusal {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidToken => "invalid_token",
            Self::TokenUsed => "token_used",
            Self::TokenExpired => "token_expired",
            Self::BadCsr => "bad_csr",
            Self::BadCsrSignature => "bad_csr_signature",
            Self::UnsupportedKey => "unsupported_key",
            Self::WrongDeviceId => "wrong_device_id",
            Self::Decommissioned => "device_decommissioned",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::InvalidToken | Self::TokenUsed | Self::TokenExpired | Self::Decommissioned => 403,
            Self::BadCsr | Self::BadCsrSignature | Self::UnsupportedKey | Self::WrongDeviceId => {
                422
            }
            Self::Internal => 500,
        }
    }
}

/// A refusal and, where the requester can act on it, what is wrong (HTTP body after the code,
/// the log and the `enrollment_refused` alert; never in the stable code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The stable code.
    pub refusal: Refusal,
    /// What is wrong, for a person (built from the CSR: quoted and bounded).
    pub detail: Option<String>,
}

impl Refused {
    /// `refusal` because of `detail`.
    pub fn new(refusal: Refusal, detail: String) -> Self {
        Self {
            refusal,
            detail: Some(detail),
        }
    }

    /// `code: detail`, or the code alone.
    pub fn text(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.refusal.code()),
            None => self.refusal.code().to_owned(),
        }
    }
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Self {
            refusal,
            detail: None,
        }
    }
}

/// The enrollment history's `reason` of a certificate issued again for a retry with a used
/// token and the same key (docs/collector.md).
pub const REISSUED: &str = "retry_same_key";

/// The outcome of an enrollment or renewal.
pub type Outcome = Result<Issued, Refused>;

#[derive(Deserialize)]
struct EnrollBody {
    token: String,
    csr_pem: String,
}

#[derive(Deserialize)]
struct RenewBody {
    csr_pem: String,
}

/// What a request asks, and who asks.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The JSON body.
    pub body: &'a [u8],
    /// Collector wall time, Unix ms.
    pub now_ms: u64,
    /// The remote address (recorded).
    pub peer: &'a str,
}

fn now_of(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Checks `csr_pem` for `device_id` as enrollment does and signs it (also `ca sign-csr`).
pub(crate) fn sign(ca: &DeviceCa, device_id: &str, csr_pem: &str, now_ms: u64) -> Outcome {
    let key = csr::check(csr_pem, device_id)?;
    issue(ca, device_id, &key, now_ms)
}

fn issue(ca: &DeviceCa, device_id: &str, key: &csr::CsrKey, now_ms: u64) -> Outcome {
    ca.issue(device_id, key, now_of(now_ms)).map_err(|e| {
        tracing::error!(device = device_id, error = %e, "signing a device certificate failed");
        Refusal::Internal.into()
    })
}

/// `POST /v1/enroll`, inside one transaction. `Err` only for store failures (rolled back).
pub fn enroll(
    tx: &mut dyn StoreTx,
    ca: &DeviceCa,
    req: Request<'_>,
) -> Result<Outcome, StoreError> {
    let mut device = None;
    let mut retry = false;
    let outcome = decide_enroll(tx, ca, req, &mut device, &mut retry)?;
    // The history says when a certificate came from a retry with the spent token.
    let note = retry.then_some(REISSUED);
    record(tx, EnrollKind::Enroll, device, &outcome, req, note)?;
    Ok(outcome)
}

fn decide_enroll(
    tx: &mut dyn StoreTx,
    ca: &DeviceCa,
    req: Request<'_>,
    device: &mut Option<String>,
    retry: &mut bool,
) -> Result<Outcome, StoreError> {
    let Ok(body) = serde_json::from_slice::<EnrollBody>(req.body) else {
        return Ok(Err(Refusal::BadRequest.into()));
    };
    let Some(hash) = token::hash_text(&body.token) else {
        return Ok(Err(Refusal::InvalidToken.into()));
    };
    let Some(row) = tx.enroll_token(&hash)? else {
        return Ok(Err(Refusal::InvalidToken.into()));
    };
    if !token::hashes_equal(&row.hash, &hash) {
        return Ok(Err(Refusal::InvalidToken.into()));
    }
    *device = Some(row.device_id.clone());
    let expired = req.now_ms >= row.expires_ms;
    if let Some(used_ms) = row.used_ms {
        // A retry from the same key, while the token is still valid, gets a certificate for
        // that key again; anything else about a used token is `token_used` (a bad CSR
        // included: nothing about the first enrollment is revealed).
        let Ok(key) = csr::check(&body.csr_pem, &row.device_id) else {
            return Ok(Err(Refusal::TokenUsed.into()));
        };
        let key_hash = retry::key_hash(&key);
        if expired || !retry::may_reissue(tx, &hash, &row.device_id, used_ms, &key_hash)? {
            return Ok(Err(Refusal::TokenUsed.into()));
        }
        *retry = true;
        return Ok(issue(ca, &row.device_id, &key, req.now_ms));
    }
    if expired {
        return Ok(Err(Refusal::TokenExpired.into()));
    }
    // A refused CSR leaves the token unused: the technician can fix the CSR and retry.
    let key = match csr::check(&body.csr_pem, &row.device_id) {
        Ok(k) => k,
        Err(r) => return Ok(Err(r)),
    };
    let issued = match issue(ca, &row.device_id, &key, req.now_ms) {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    if !tx.mark_token_used(&hash, req.now_ms)? {
        return Ok(Err(Refusal::TokenUsed.into()));
    }
    tx.put_token_key(&hash, &retry::key_hash(&key), req.now_ms)?;
    // A decommissioned or re-keyed device starts a new chain generation (lifecycle.rs).
    crate::lifecycle::on_issued(tx, &row.device_id, &issued, req.now_ms)?;
    Ok(Ok(issued))
}

/// `POST /v1/renew` by `device_id` (from its verified client certificate), inside one
/// transaction. The new key may be the same key (a TPM-held key is kept across renewals).
pub fn renew(
    tx: &mut dyn StoreTx,
    ca: &DeviceCa,
    device_id: &str,
    req: Request<'_>,
) -> Result<Outcome, StoreError> {
    let decommissioned = crate::lifecycle::current(tx, device_id, req.now_ms)?.state
        == crate::store::LifeState::Decommissioned;
    let outcome = match serde_json::from_slice::<RenewBody>(req.body) {
        // A decommissioned terminal whose certificate is still valid (one not recorded here,
        // so not revoked by the decommission) must not keep itself alive by renewing.
        Ok(_) if decommissioned => Err(Refused::new(
            Refusal::Decommissioned,
            "the device was decommissioned at the collector; provision it again with a new enrollment token".into(),
        )),
        Ok(body) => sign(ca, device_id, &body.csr_pem, req.now_ms),
        Err(_) => Err(Refusal::BadRequest.into()),
    };
    record(
        tx,
        EnrollKind::Renew,
        Some(device_id.to_owned()),
        &outcome,
        req,
        None,
    )?;
    Ok(outcome)
}

/// Appends the outcome to the enrollment history (a refusal also raises an alert).
pub(crate) fn record(
    tx: &mut dyn StoreTx,
    kind: EnrollKind,
    device_id: Option<String>,
    outcome: &Outcome,
    req: Request<'_>,
    note: Option<&str>,
) -> Result<(), StoreError> {
    let mut row = EnrollmentRow {
        id: 0,
        at_ms: req.now_ms,
        kind: kind.name().to_owned(),
        device_id,
        outcome: "issued".to_owned(),
        reason: None,
        serial: None,
        not_after_unix: None,
        peer: Some(req.peer.to_owned()),
    };
    match outcome {
        Ok(issued) => {
            row.serial = Some(issued.serial.clone());
            row.not_after_unix = Some(issued.not_after_unix);
            row.reason = note.map(str::to_owned);
            tracing::info!(device = ?row.device_id, kind = kind.name(), serial = %issued.serial, "device certificate issued");
        }
        Err(refused) => {
            let refusal = refused.refusal;
            row.outcome = "refused".to_owned();
            row.reason = Some(refusal.code().to_owned());
            let why = refused.detail.as_deref().unwrap_or_default();
            tracing::warn!(device = ?row.device_id, kind = kind.name(), code = refusal.code(), detail = why, peer = req.peer, "certificate request refused");
            tx.put_alert(&NewAlert {
                device_id: row.device_id.clone(),
                kind: AlertKind::EnrollmentRefused,
                severity: posguard_proto::event::Severity::Warning,
                detail: format!(
                    "{} refused: {} (from {})",
                    kind.name(),
                    refused.text(),
                    req.peer
                ),
                at_ms: req.now_ms,
            })?;
        }
    }
    tx.put_enrollment(&row)
}
