//! A hand-written postcard encoder for the fixed framing of records, certificates and
//! checkpoints. It cannot fail, so encoding a signed structure never needs an `unwrap`; the
//! decoders read the same bytes with postcard and compare, which keeps the two in agreement.

/// Appends postcard-encoded fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    /// An empty writer with room for `capacity` bytes (no reallocation while they are written).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Starts with raw bytes (a domain tag) already in place.
    pub(crate) fn with_prefix(prefix: &[u8]) -> Self {
        Self(prefix.to_vec())
    }

    /// An unsigned integer as a postcard varint (LEB128: 7 bits per byte, low bits first).
    pub(crate) fn varint(&mut self, mut value: u64) {
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(low);
                return;
            }
            self.0.push(low | 0x80);
        }
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.varint(u64::from(value));
    }

    /// Fixed-size bytes (a `[u8; N]`): written as is, without a length.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// Variable-size bytes (a `Vec<u8>`): varint length, then the bytes.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.raw(bytes);
    }

    /// A string: varint length in bytes, then UTF-8.
    pub(crate) fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_matches_postcard(v: u64) {
            let mut w = Writer::new();
            w.varint(v);
            prop_assert_eq!(w.into_vec(), postcard::to_stdvec(&v).unwrap());
        }

        #[test]
        fn bytes_and_str_match_postcard(b: Vec<u8>, s: String) {
            let mut w = Writer::new();
            w.bytes(&b);
            w.str(&s);
            prop_assert_eq!(w.into_vec(), postcard::to_stdvec(&(&b, &s)).unwrap());
        }
    }
}
