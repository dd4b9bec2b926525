//! Validated text for events and signed structures: every string that can enter an audit record
//! goes through one of these types, so free text cannot carry a card number or control
//! characters, and identifiers have one spelling.
//!
//! Each type checks its rules in `new` / `TryFrom` and again on deserialization
//! (`#[serde(try_from = "String")]`), so a value of the type is valid wherever it came from.
//! Error messages never repeat the refused text: it may be the very card number being kept out.

mod codes;
mod ids;
mod safe_text;

pub use codes::{Currency, ShortCode};
pub use ids::{ClerkId, DeviceId};
pub use safe_text::SafeText;

/// Why a string was refused by one of the validated text types.
///
/// The refused text itself is never part of the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// The text is empty.
    #[error("text is empty")]
    Empty,
    /// The text is longer than the type allows (in bytes).
    #[error("text is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length of the refused text in bytes.
        len: usize,
        /// Largest length the type accepts.
        max: usize,
    },
    /// The text holds a character outside the type's alphabet (byte offset given).
    #[error("character at byte {at} is not allowed here")]
    BadChar {
        /// Byte offset of the first refused character.
        at: usize,
    },
    /// The text holds a run of 13 or more digits (possibly split by spaces or dashes): it could be
    /// a card number.
    #[error("text holds a run of {MAX_DIGIT_RUN_PLUS_ONE} or more digits (a possible card number)")]
    DigitRun,
}

/// Longest run of digits allowed in event text. A payment card number (PAN) has 13 to 19 digits.
pub const MAX_DIGIT_RUN: usize = 12;
const MAX_DIGIT_RUN_PLUS_ONE: usize = MAX_DIGIT_RUN + 1;

/// Refuses text holding more than [`MAX_DIGIT_RUN`] ASCII digits in a row, where spaces and dashes
/// between digits do not end the run ("4111 1111-1111 1111" is one run of 16).
pub(crate) fn check_digit_runs(text: &str) -> Result<(), TextError> {
    let mut run: usize = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            run = run.saturating_add(1);
            if run > MAX_DIGIT_RUN {
                return Err(TextError::DigitRun);
            }
        } else if c != ' ' && c != '-' {
            run = 0;
        }
    }
    Ok(())
}

/// Checks length bounds and that every byte satisfies `allowed`.
pub(crate) fn check_chars(
    text: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > max {
        return Err(TextError::TooLong {
            len: text.len(),
            max,
        });
    }
    match text.bytes().position(|b| !allowed(b)) {
        Some(at) => Err(TextError::BadChar { at }),
        None => Ok(()),
    }
}

/// The identifier alphabet shared by clerk ids, device ids and short codes: `[A-Za-z0-9._-]`.
pub(crate) fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// Implements `Display`, `AsRef<str>`, `Serialize` (as a string), `TryFrom<String>`,
/// `TryFrom<&str>` and `FromStr` for a validated string newtype with a `fn check(&str)`.
macro_rules! validated_string {
    ($ty:ident) => {
        impl $ty {
            /// Validates `text` and wraps it.
            pub fn new(text: impl Into<String>) -> Result<Self, $crate::text::TextError> {
                let text = text.into();
                Self::check(&text)?;
                Ok(Self(text))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::text::TextError;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = $crate::text::TextError;
            fn try_from(text: &str) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl ::core::str::FromStr for $ty {
            type Err = $crate::text::TextError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::new(text)
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}
pub(crate) use validated_string;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_counted_across_spaces_and_dashes() {
        assert_eq!(
            check_digit_runs("4111 1111 1111 1111"),
            Err(TextError::DigitRun)
        );
        assert_eq!(
            check_digit_runs("4111-1111-1111-1111"),
            Err(TextError::DigitRun)
        );
        assert_eq!(check_digit_runs("4111111111111"), Err(TextError::DigitRun));
        assert_eq!(
            check_digit_runs("1 2 3 4 5 6 7 8 9 0 1 2 3"),
            Err(TextError::DigitRun)
        );
    }

    #[test]
    fn twelve_digits_and_broken_runs_pass() {
        assert_eq!(check_digit_runs("411111111111"), Ok(()));
        assert_eq!(check_digit_runs("receipt 123456/7890123"), Ok(()));
        assert_eq!(check_digit_runs("2025-11-23T10:00:00Z"), Ok(()));
    }

    #[test]
    fn error_text_never_contains_input() {
        let shown = TextError::DigitRun.to_string();
        assert!(!shown.contains("4111"));
    }
}
