//! One-time enrollment tokens: 256 random bits shown once as 64 hex digits, stored only as
//! SHA-256, bound to one device id, expiring, single use. TTLs are written `30m`, `24h`, `7d`.

use std::time::Duration;

use ring::digest::{SHA256, digest};
use ring::rand::SecureRandom as _;
use subtle::ConstantTimeEq as _;

use crate::store::{Store, StoreError, TokenRow};

/// The longest TTL a token may have.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// The store refused.
    #[error("store")]
    Store(#[from] StoreError),
}

/// A freshly created token: the only time its text exists.
pub struct NewToken {
    /// The token (64 hex digits): print it once, never log it.
    pub token: String,
    /// What was stored.
    pub row: TokenRow,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &"<redacted>")
            .field("row", &self.row)
            .finish()
    }
}

/// The stored hash of a presented token; `None` if it is not 64 hex digits.
pub fn hash_text(text: &str) -> Option<[u8; 32]> {
    let raw = crate::clock::unhex(text.trim())?;
    if raw.len() != 32 {
        return None;
    }
    <[u8; 32]>::try_from(digest(&SHA256, &raw).as_ref()).ok()
}

/// Constant-time equality of two hashes (the store looks tokens up by hash; this keeps the
/// final comparison free of timing differences whatever the store does).
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Parses `30m`, `24h`, `7d`, `90s` (one number, one unit; 1 s to [`MAX_TTL`]).
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text.get(..text.len().checked_sub(1)?)?.parse().ok()?;
    let secs = number.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    })?;
    let ttl = Duration::from_secs(secs);
    (secs > 0 && ttl <= MAX_TTL).then_some(ttl)
}

/// Creates and stores a token for `device_id`, valid for `ttl` from `now_ms`.
pub fn create(
    store: &mut dyn Store,
    device_id: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<NewToken, TokenError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| TokenError::Random)?;
    let token = crate::clock::hex(&raw);
    let hash = hash_text(&token).ok_or(TokenError::Random)?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let row = TokenRow {
        hash,
        device_id: device_id.to_owned(),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(ttl_ms),
        used_ms: None,
    };
    store.transaction(&mut |tx| tx.put_enroll_token(&row))?;
    Ok(NewToken { token, row })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("90s"), Some(Duration::from_secs(90)));
        for bad in [
            "",
            "d",
            "0m",
            "7",
            "7w",
            "-1h",
            "31d",
            "99999999999999999999d",
            "1.5h",
        ] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }

    #[test]
    fn token_hashes() {
        let t = "ab".repeat(32);
        let h = hash_text(&t).unwrap();
        assert!(hashes_equal(&h, &hash_text(&format!(" {t}\n")).unwrap()));
        assert!(!hashes_equal(&h, &hash_text(&"ac".repeat(32)).unwrap()));
        assert_eq!(hash_text("abcd"), None);
        assert_eq!(hash_text(&"zz".repeat(32)), None);
    }
}
