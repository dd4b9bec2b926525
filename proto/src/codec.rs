//! The canonical byte encoding shared by every signed structure: postcard 1.x, with a leading
//! format number, bounded sizes, no trailing bytes and exactly one encoding per value.
//!
//! Postcard itself accepts some non-canonical input (over-long varints), so every decoder here
//! re-encodes what it read and refuses input that differs: the bytes that were hashed and signed
//! are the only bytes that decode to a given value.

mod bytes;
mod writer;

pub(crate) use bytes::{byte_array, encoded_bytes, to_hex};
pub(crate) use writer::Writer;

use serde::de::DeserializeOwned;

/// Largest encoded event body in a record (16 KiB).
pub const MAX_BODY_LEN: usize = 16 * 1024;

/// Largest encoded record: the body plus its fixed-size header and length prefixes.
pub const MAX_RECORD_LEN: usize = MAX_BODY_LEN + 256;

/// Largest encoded journal-key certificate or checkpoint.
pub const MAX_SIGNED_STRUCT_LEN: usize = 1024;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the structure's bound.
    #[error("input is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Input length in bytes.
        len: usize,
        /// Bound for this structure.
        max: usize,
    },
    /// The format number is not one this version of posguard knows.
    #[error("unsupported format version {0}")]
    UnsupportedFormat(u16),
    /// Postcard refused the bytes (truncated input, bad varint, bad enum tag, invalid text…).
    #[error("malformed encoding")]
    Malformed(#[source] postcard::Error),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the encoded value")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("encoding is not canonical")]
    NonCanonical,
    /// A field is out of its allowed range (for example a DER signature that is too long).
    #[error("field out of range: {0}")]
    OutOfRange(&'static str),
}

/// Why a value could not be encoded. Postcard into a `Vec` fails only for types it does not
/// support, so this is a programming error surfaced as a value rather than a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Postcard refused the value.
    #[error("cannot encode")]
    Postcard(#[source] postcard::Error),
    /// The encoding is larger than the structure's bound.
    #[error("encoding is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Encoded length in bytes.
        len: usize,
        /// Bound for this structure.
        max: usize,
    },
}

/// Refuses input longer than `max` before any decoding work.
pub(crate) fn check_len(bytes: &[u8], max: usize) -> Result<(), DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Splits the leading format number (a postcard varint `u16`) off `bytes`.
pub(crate) fn take_format(bytes: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    postcard::take_from_bytes::<u16>(bytes).map_err(DecodeError::Malformed)
}

/// Decodes exactly one `T` from `bytes`: trailing bytes are an error.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Refuses `input` unless it equals `reencoded` (the canonical encoding of what it decoded to).
pub(crate) fn ensure_canonical(input: &[u8], reencoded: &[u8]) -> Result<(), DecodeError> {
    if input == reencoded {
        Ok(())
    } else {
        Err(DecodeError::NonCanonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_varint_is_found_by_reencoding() {
        // 0x81 0x00 is an over-long spelling of 1 that postcard accepts.
        let (v, rest) = take_format(&[0x81, 0x00]).unwrap();
        assert_eq!((v, rest.len()), (1, 0));
        let mut w = Writer::new();
        w.u16(v);
        assert_eq!(
            ensure_canonical(&[0x81, 0x00], &w.into_vec()),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn trailing_bytes_refused() {
        assert_eq!(
            decode_exact::<u8>(&[1, 2, 3]),
            Err(DecodeError::TrailingBytes(2))
        );
    }
}
