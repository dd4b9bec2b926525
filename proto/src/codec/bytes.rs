//! Serde helpers for byte fields: raw bytes in binary formats (postcard), lower-case hex strings
//! in human-readable ones (JSON for the collector's query output).

use core::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    if c.is_ascii_uppercase() {
        return None;
    }
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes lower-case hex; `None` on odd length or any other character.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks(2);
    let mut out = Vec::with_capacity(pairs.len());
    for pair in pairs {
        match pair {
            [hi, lo] => out.push((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
            _ => return None,
        }
    }
    Some(out)
}

/// `#[serde(with = "byte_array")]` for `[u8; N]` of any size (serde's own impls stop at 32).
/// In postcard this is exactly N raw bytes, the same as serde's tuple form.
pub(crate) mod byte_array {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        value: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.serialize_str(&to_hex(value));
        }
        let mut tuple = s.serialize_tuple(N)?;
        for b in value {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        if d.is_human_readable() {
            let text = <String as serde::Deserialize>::deserialize(d)?;
            let bytes = from_hex(&text).ok_or_else(|| de::Error::custom("expected hex"))?;
            return <[u8; N]>::try_from(bytes.as_slice())
                .map_err(|_| de::Error::invalid_length(bytes.len(), &"N bytes"));
        }
        d.deserialize_tuple(N, ArrayVisitor::<N>)
    }

    struct ArrayVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
}

/// Serde for a structure whose canonical encoding is its own byte string (records,
/// certificates, checkpoints nested in a batch): postcard bytes, or hex in human-readable formats.
pub(crate) mod encoded_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&to_hex(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = <String as serde::Deserialize>::deserialize(d)?;
            return from_hex(&text).ok_or_else(|| de::Error::custom("expected hex"));
        }
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // Bounded by the input itself: each element consumed at least one byte of it.
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00abff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("AB"), None);
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Sig(#[serde(with = "byte_array")] [u8; 64]);

    #[test]
    fn byte_array_is_raw_in_postcard() {
        let sig = Sig([7; 64]);
        let bytes = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(bytes, vec![7; 64]);
        assert_eq!(postcard::from_bytes::<Sig>(&bytes).unwrap(), sig);
        assert!(postcard::from_bytes::<Sig>(&bytes[..63]).is_err());
    }
}
