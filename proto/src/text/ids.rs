//! Identifiers: clerk ids (in events) and device ids (in certificates and checkpoints).

use serde::Deserialize;

use super::{TextError, check_chars, check_digit_runs, is_id_byte, validated_string};

/// A clerk's login name: `[A-Za-z0-9._-]{1,64}`, never a run of 13 or more digits.
///
/// The digit rule keeps card numbers out even of this field (a card swiped into the name field is
/// refused, not recorded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ClerkId(String);

impl ClerkId {
    /// Longest clerk id in bytes.
    pub const MAX_LEN: usize = 64;

    fn check(text: &str) -> Result<(), TextError> {
        check_chars(text, Self::MAX_LEN, is_id_byte)?;
        check_digit_runs(text)
    }
}
validated_string!(ClerkId);

/// A terminal's device id, e.g. `term-0001`: `[A-Za-z0-9._-]{1,64}`.
///
/// The same string appears in the device certificate (`urn:posguard:device:<id>`), in every
/// journal-key certificate and checkpoint, and seeds the genesis hash of the device's journal.
/// Unlike event text it may hold long digit runs (hardware serial numbers do); it never enters an
/// event body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// Longest device id in bytes.
    pub const MAX_LEN: usize = 64;

    fn check(text: &str) -> Result<(), TextError> {
        check_chars(text, Self::MAX_LEN, is_id_byte)
    }
}
validated_string!(DeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clerk_id_accepts_the_alphabet() {
        assert!(ClerkId::new("anna.m_01-x").is_ok());
        assert!(ClerkId::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn clerk_id_refuses_bad_input() {
        assert_eq!(ClerkId::new(""), Err(TextError::Empty));
        assert_eq!(
            ClerkId::new("a".repeat(65)),
            Err(TextError::TooLong { len: 65, max: 64 })
        );
        assert_eq!(ClerkId::new("anna m"), Err(TextError::BadChar { at: 4 }));
        assert_eq!(ClerkId::new("ännа"), Err(TextError::BadChar { at: 0 }));
        assert_eq!(ClerkId::new("4111111111111111"), Err(TextError::DigitRun));
        assert_eq!(
            ClerkId::new("4111-1111-1111-1111"),
            Err(TextError::DigitRun)
        );
    }

    #[test]
    fn clerk_id_validated_on_deserialize() {
        let bytes = postcard::to_stdvec("4111111111111111").unwrap();
        assert!(postcard::from_bytes::<ClerkId>(&bytes).is_err());
        let bytes = postcard::to_stdvec("bob").unwrap();
        assert_eq!(
            postcard::from_bytes::<ClerkId>(&bytes).unwrap().as_str(),
            "bob"
        );
    }

    #[test]
    fn device_id_allows_long_serials() {
        assert!(DeviceId::new("term-4111111111111111").is_ok());
        assert_eq!(DeviceId::new("term 1"), Err(TextError::BadChar { at: 4 }));
    }
}
