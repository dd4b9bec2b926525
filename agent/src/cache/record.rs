//! Record ids and the stored layout of a record.
//!
//! Stored value: `format (1) ‖ key version (u32 BE) ‖ expires unix ms (u64 BE) ‖ sealed`, where
//! `sealed` is the data key's `nonce ‖ ciphertext ‖ tag`. The header is plain (the purge reads
//! expiry without a key) but authenticated: the AAD is
//! `"posguard/cache" ‖ 0 ‖ tree ‖ 0 ‖ id ‖ 0 ‖ header`, so a value copied under another id or
//! tree, or with a changed expiry or key version, does not open.

/// The layout version of stored values.
const FORMAT: u8 = 1;
/// Header bytes before the sealed body.
pub(crate) const HEADER_LEN: usize = 1 + 4 + 8;
/// Nonce and tag added by AES-256-GCM.
pub(crate) const SEAL_OVERHEAD: usize = 12 + 16;
/// The sled tree holding records.
pub(crate) const TREE: &str = "records";

/// Why a record id is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIdError {
    /// Empty or longer than 128 bytes.
    #[error("must be 1 to 128 bytes long, not {0}")]
    Length(usize),
    /// A byte outside printable ASCII (`!` to `~`; no spaces or control characters).
    #[error("must be printable ASCII without spaces (byte {0} is not)")]
    Byte(usize),
}

/// A record id: 1–128 bytes of printable ASCII without spaces. Ids are stored in the clear
/// (they are the database keys) and are NOT secret: never put card or personal data in them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(String);

impl RecordId {
    /// Longest id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, RecordIdError> {
        let id = id.into();
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(RecordIdError::Length(id.len()));
        }
        if let Some(pos) = id.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(RecordIdError::Byte(pos));
        }
        Ok(RecordId(id))
    }

    /// Reads an id back from a database key.
    pub(crate) fn from_key(key: &[u8]) -> Result<Self, RecordIdError> {
        let text = std::str::from_utf8(key).map_err(|e| RecordIdError::Byte(e.valid_up_to()))?;
        Self::new(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The plain, authenticated header of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) key_version: u32,
    pub(crate) expires_unix_ms: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (format, rest) = out.split_at_mut(1);
        let (version, expires) = rest.split_at_mut(4);
        format.copy_from_slice(&[FORMAT]);
        version.copy_from_slice(&self.key_version.to_be_bytes());
        expires.copy_from_slice(&self.expires_unix_ms.to_be_bytes());
        out
    }

    /// Splits a stored value into its header and sealed body.
    pub(crate) fn decode(stored: &[u8]) -> Option<(Header, &[u8], &[u8])> {
        let (header, body) = stored.split_at_checked(HEADER_LEN)?;
        let (format, rest) = header.split_first()?;
        if *format != FORMAT {
            return None;
        }
        let (version, expires) = rest.split_first_chunk::<4>()?;
        let expires: [u8; 8] = expires.try_into().ok()?;
        Some((
            Header {
                key_version: u32::from_be_bytes(*version),
                expires_unix_ms: u64::from_be_bytes(expires),
            },
            header,
            body,
        ))
    }
}

/// The AAD of a record: binds tree, id and header (key version, expiry).
pub(crate) fn aad(id: &RecordId, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32usize.saturating_add(id.0.len()));
    out.extend_from_slice(b"posguard/cache\0");
    out.extend_from_slice(TREE.as_bytes());
    out.push(0);
    out.extend_from_slice(id.0.as_bytes());
    out.push(0);
    out.extend_from_slice(header);
    out
}

/// The plaintext size of a stored value (for `list`).
pub(crate) fn plain_size(stored_len: usize) -> u64 {
    let size = stored_len.saturating_sub(HEADER_LEN.saturating_add(SEAL_OVERHEAD));
    u64::try_from(size).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_printable_ascii_of_bounded_length() {
        assert!(RecordId::new("sale-2024-0001/a:b").is_ok());
        assert_eq!(RecordId::new(""), Err(RecordIdError::Length(0)));
        assert_eq!(
            RecordId::new("x".repeat(129)),
            Err(RecordIdError::Length(129))
        );
        assert!(RecordId::new("x".repeat(128)).is_ok());
        assert_eq!(RecordId::new("a b"), Err(RecordIdError::Byte(1)));
        assert_eq!(RecordId::new("a\n"), Err(RecordIdError::Byte(1)));
        assert_eq!(RecordId::new("é"), Err(RecordIdError::Byte(0)));
        assert!(RecordId::from_key(&[0xff]).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_short_or_unknown() {
        let h = Header {
            key_version: 7,
            expires_unix_ms: 1_700_000_000_000,
        };
        let mut stored = h.encode().to_vec();
        stored.extend_from_slice(b"body");
        let (back, raw, body) = Header::decode(&stored).unwrap();
        assert_eq!((back, raw, body), (h, &h.encode()[..], &b"body"[..]));
        assert!(Header::decode(&stored[..5]).is_none());
        stored[0] = 9;
        assert!(Header::decode(&stored).is_none());
    }
}
