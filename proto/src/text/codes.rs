//! Short machine codes and currency codes.

use serde::Deserialize;

use super::{TextError, check_chars, check_digit_runs, is_id_byte, validated_string};

/// A short machine-readable code (a POS action code, an agent version, a config key):
/// `[A-Za-z0-9._-]{1,32}`, never a run of 13 or more digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ShortCode(String);

impl ShortCode {
    /// Longest code in bytes.
    pub const MAX_LEN: usize = 32;

    fn check(text: &str) -> Result<(), TextError> {
        check_chars(text, Self::MAX_LEN, is_id_byte)?;
        check_digit_runs(text)
    }
}
validated_string!(ShortCode);

/// An ISO 4217 alphabetic currency code: three upper-case ASCII letters (`EUR`, `USD`).
///
/// Only the shape is checked, not membership in the ISO list, so that a new currency needs no
/// new agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

impl Currency {
    fn check(text: &str) -> Result<(), TextError> {
        check_chars(text, 3, |b| b.is_ascii_uppercase())?;
        if text.len() != 3 {
            return Err(TextError::BadChar { at: text.len() });
        }
        Ok(())
    }
}
validated_string!(Currency);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_code_rules() {
        assert!(ShortCode::new("0.1.0").is_ok());
        assert!(ShortCode::new("auth.lockout_after").is_ok());
        assert_eq!(ShortCode::new("a b"), Err(TextError::BadChar { at: 1 }));
        assert_eq!(
            ShortCode::new("x".repeat(33)),
            Err(TextError::TooLong { len: 33, max: 32 })
        );
        assert_eq!(
            ShortCode::new("c-4111111111111111"),
            Err(TextError::DigitRun)
        );
    }

    #[test]
    fn currency_rules() {
        assert!(Currency::new("EUR").is_ok());
        assert_eq!(Currency::new("eur"), Err(TextError::BadChar { at: 0 }));
        assert_eq!(Currency::new("EU"), Err(TextError::BadChar { at: 2 }));
        assert_eq!(
            Currency::new("EURO"),
            Err(TextError::TooLong { len: 4, max: 3 })
        );
        assert_eq!(Currency::new(""), Err(TextError::Empty));
    }
}
