//! TOTP (RFC 6238): HMAC-SHA1, 6 digits, 30-second steps, one step of drift either way, and a
//! time step once accepted is never accepted again.
//!
//! Seeds are 160 bits from the caller's random source, shown to the clerk once as base32
//! (RFC 4648, no padding) inside an `otpauth://` URI. There are no backup codes.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use posguard_proto::text::ClerkId;
use ring::hmac;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Seed length in bytes (160 bits, RFC 4226 §4).
pub const SEED_LEN: usize = 20;
/// Longest seed accepted when decoding (512 bits).
const MAX_SEED_LEN: usize = 64;
/// Length of a time step in seconds.
pub const STEP_SECS: u64 = 30;
/// Digits in a code.
pub const DIGITS: u32 = 6;

/// A clerk's TOTP seed; zeroized on drop, never printed.
#[derive(Clone)]
pub struct TotpSeed(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed(<redacted>)")
    }
}

/// Why a seed was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// Not base32 (RFC 4648 alphabet).
    #[error("seed is not base32")]
    NotBase32,
    /// Shorter than 160 bits or longer than 512.
    #[error("seed is {len} bytes; 20 to 64 are allowed")]
    BadLength {
        /// Decoded length in bytes.
        len: usize,
    },
}

impl TotpSeed {
    /// A new seed from 20 bytes of the caller's cryptographic random source.
    pub fn from_random(bytes: [u8; SEED_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        TotpSeed(Zeroizing::new(bytes.to_vec()))
    }

    /// Decodes a base32 seed; case, spaces and trailing `=` are ignored.
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        // Capacity for the whole input: pushing never reallocates, so no unzeroized copy is left.
        let mut clean = Zeroizing::new(String::with_capacity(text.len()));
        for c in text.chars().filter(|c| *c != ' ') {
            clean.push(c.to_ascii_uppercase());
        }
        while clean.ends_with('=') {
            clean.pop();
        }
        let bytes = Zeroizing::new(
            BASE32_NOPAD
                .decode(clean.as_bytes())
                .map_err(|_| TotpError::NotBase32)?,
        );
        if !(SEED_LEN..=MAX_SEED_LEN).contains(&bytes.len()) {
            return Err(TotpError::BadLength { len: bytes.len() });
        }
        Ok(TotpSeed(bytes))
    }

    /// The seed as base32 without padding, for the enrollment QR code and storage.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }
}

/// The outcome of checking a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotpDecision {
    /// The code matches `step`, newer than any step accepted before: store `step` as the
    /// clerk's last accepted step.
    Accepted {
        /// The matched time step (Unix time / 30 s).
        step: u64,
    },
    /// The code matches a step that is not newer than the last accepted one: audit a replay.
    Replayed {
        /// The matched time step (for the `MfaReplayed` event; never the code).
        step: u64,
    },
    /// The code matches no step in the window.
    Wrong,
}

/// HOTP (RFC 4226) value of `counter` with `digits` digits.
fn hotp(seed: &TotpSeed, counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &seed.0);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // A SHA-1 tag has 20 bytes and the offset is at most 15, so the slice always exists.
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let chunk: [u8; 4] = mac
        .get(offset..offset.saturating_add(4))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 4]);
    let value = u32::from_be_bytes(chunk) & 0x7fff_ffff;
    value % 10u32.pow(digits)
}

fn code_for_step(seed: &TotpSeed, step: u64, digits: u32) -> Zeroizing<String> {
    let width = usize::try_from(digits).unwrap_or(6);
    Zeroizing::new(format!("{:0width$}", hotp(seed, step, digits)))
}

/// The time step holding `unix_secs`.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The 6-digit code for the step holding `unix_secs` (for enrollment confirmation and tests).
pub fn code_at(seed: &TotpSeed, unix_secs: u64) -> Zeroizing<String> {
    code_for_step(seed, step_at(unix_secs), DIGITS)
}

/// Checks a 6-digit `code` at `unix_secs` against the steps one before, at and one after, each
/// compared in constant time; a match not newer than `last_accepted_step` is a replay.
pub fn verify(
    seed: &TotpSeed,
    code: &str,
    unix_secs: u64,
    last_accepted_step: Option<u64>,
) -> TotpDecision {
    verify_digits(seed, code, unix_secs, last_accepted_step, DIGITS)
}

fn verify_digits(
    seed: &TotpSeed,
    code: &str,
    unix_secs: u64,
    last_accepted_step: Option<u64>,
    digits: u32,
) -> TotpDecision {
    let well_formed = usize::try_from(digits).is_ok_and(|d| code.len() == d)
        && code.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return TotpDecision::Wrong;
    }
    let now = step_at(unix_secs);
    let candidates = [now.checked_sub(1), Some(now), now.checked_add(1)];
    let mut newest_fresh: Option<u64> = None;
    let mut any_match: Option<u64> = None;
    // Every candidate is computed and compared; no early exit on a match.
    for step in candidates.into_iter().flatten() {
        let expected = code_for_step(seed, step, digits);
        let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if matches {
            any_match = Some(step);
            if last_accepted_step.is_none_or(|last| step > last) {
                newest_fresh = Some(step);
            }
        }
    }
    match (newest_fresh, any_match) {
        (Some(step), _) => TotpDecision::Accepted { step },
        (None, Some(step)) => TotpDecision::Replayed { step },
        (None, None) => TotpDecision::Wrong,
    }
}

/// The `otpauth://` URI an authenticator app enrolls from (shown once, as a QR code).
pub fn otpauth_uri(clerk: &ClerkId, seed: &TotpSeed) -> Zeroizing<String> {
    // A ClerkId is `[A-Za-z0-9._-]` and base32 is `[A-Z2-7]`: nothing needs percent-encoding.
    Zeroizing::new(format!(
        "otpauth://totp/posguard:{clerk}?secret={}&issuer=posguard&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        seed.to_base32().as_str()
    ))
}

#[cfg(test)]
#[path = "totp_tests.rs"]
mod tests;
