//! Bounded, printable free text that cannot hold a card number.

use serde::Deserialize;

use super::{TextError, check_chars, check_digit_runs, validated_string};

/// Free text allowed in an audit event: 1 to 256 bytes of printable ASCII (space to `~`), with no
/// run of 13 or more digits, even when the digits are split by spaces or dashes.
///
/// ASCII only, on purpose: Unicode offers invisible and look-alike characters (zero-width
/// spaces, full-width digits) that would let a card number through the digit rule.
///
/// Beware that a Unix time in milliseconds has 13 digits: write times as ISO 8601
/// (`2025-11-23T10:00:00Z`), whose punctuation breaks the run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SafeText(String);

impl SafeText {
    /// Longest text in bytes.
    pub const MAX_LEN: usize = 256;

    fn check(text: &str) -> Result<(), TextError> {
        check_chars(text, Self::MAX_LEN, |b| (0x20..=0x7e).contains(&b))?;
        check_digit_runs(text)
    }
}
validated_string!(SafeText);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_text() {
        assert!(SafeText::new("refund for receipt 2025-000123, damaged box").is_ok());
        assert!(SafeText::new("/var/lib/posguard/quarantine/2025-11-23T10-00-00Z").is_ok());
        assert!(SafeText::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn refuses_card_numbers_in_every_spelling() {
        for pan in [
            "4111111111111111",
            "card 4111 1111 1111 1111 ok",
            "4111-1111-1111-1111",
            "4111 - 1111 - 1111 - 1111",
            "3782 822463 10005",
        ] {
            assert_eq!(SafeText::new(pan), Err(TextError::DigitRun), "{pan}");
        }
    }

    #[test]
    fn refuses_control_and_non_ascii() {
        assert_eq!(SafeText::new("a\nb"), Err(TextError::BadChar { at: 1 }));
        assert_eq!(
            SafeText::new("a\u{200b}b"),
            Err(TextError::BadChar { at: 1 })
        );
        assert_eq!(SafeText::new("４１１１"), Err(TextError::BadChar { at: 0 }));
        assert_eq!(SafeText::new(""), Err(TextError::Empty));
        assert_eq!(
            SafeText::new("x".repeat(257)),
            Err(TextError::TooLong { len: 257, max: 256 })
        );
    }

    #[test]
    fn validated_on_deserialize() {
        let bytes = postcard::to_stdvec("pan 4111 1111 1111 1111").unwrap();
        assert!(postcard::from_bytes::<SafeText>(&bytes).is_err());
    }
}
