//! The sealed-blob envelope: what `seal` returns and `unseal` takes. The caller stores it as
//! opaque bytes; the envelope says which backend made it so that a blob is never fed to the
//! wrong one.
//!
//! Layout: `b"PGSEAL"` | version (1) | backend (1 = TPM, 2 = software) | payload.
//! TPM payload: u16 BE length + marshalled TPMT_PUBLIC, u16 BE length + TPM2B_PRIVATE buffer.
//! Software payload: 12-byte nonce + AES-256-GCM ciphertext and tag.

use crate::HalError;

const MAGIC: &[u8; 6] = b"PGSEAL";
const VERSION: u8 = 1;
/// Bytes before the payload; also the AAD of the software backend's encryption.
pub(crate) const HEADER_LEN: usize = 8;

/// Which backend produced a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobKind {
    Tpm = 1,
    Software = 2,
}

/// A secret sealed by a secure element: safe to store on disk, useless without the same TPM
/// (or the same software key directory).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(Vec<u8>);

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

impl SealedBlob {
    /// Wraps stored bytes. Nothing is checked until `unseal`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SealedBlob(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn header(kind: BlobKind) -> Vec<u8> {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(MAGIC);
        v.push(VERSION);
        v.push(kind as u8);
        v
    }

    /// The payload, after checking magic, version and that `kind` made it.
    pub(crate) fn payload(&self, kind: BlobKind) -> Result<&[u8], HalError> {
        let header = self
            .0
            .get(..HEADER_LEN)
            .ok_or_else(|| HalError::blob("too short to be a sealed blob"))?;
        if header.get(..6) != Some(&MAGIC[..]) {
            return Err(HalError::blob("not a posguard sealed blob (bad magic)"));
        }
        if header.get(6) != Some(&VERSION) {
            return Err(HalError::blob(format!(
                "unsupported sealed blob version {:?}",
                header.get(6)
            )));
        }
        if header.get(7) != Some(&(kind as u8)) {
            return Err(HalError::blob(format!(
                "sealed by another backend (tag {:?}, this is {kind:?})",
                header.get(7)
            )));
        }
        self.0
            .get(HEADER_LEN..)
            .ok_or_else(|| HalError::blob("empty payload"))
    }
}

/// Appends a u16-length-prefixed field.
pub(crate) fn put_field(out: &mut Vec<u8>, field: &[u8]) -> Result<(), HalError> {
    let len = u16::try_from(field.len()).map_err(|_| HalError::blob("field too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// Splits a u16-length-prefixed field off the front of `input`.
pub(crate) fn take_field<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], HalError> {
    let (len, rest) = input
        .split_first_chunk::<2>()
        .ok_or_else(|| HalError::blob("truncated field length"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(HalError::blob("truncated field"));
    }
    let (field, rest) = rest.split_at(len);
    *input = rest;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut bytes = SealedBlob::header(BlobKind::Tpm);
        bytes.extend_from_slice(b"xyz");
        let blob = SealedBlob::from_bytes(bytes.clone());
        assert_eq!(blob.payload(BlobKind::Tpm).unwrap(), b"xyz");
        assert!(blob.payload(BlobKind::Software).is_err());
        bytes[0] = b'X';
        assert!(
            SealedBlob::from_bytes(bytes)
                .payload(BlobKind::Tpm)
                .is_err()
        );
        assert!(
            SealedBlob::from_bytes(vec![1, 2])
                .payload(BlobKind::Tpm)
                .is_err()
        );
    }

    #[test]
    fn fields_round_trip_and_truncation_is_an_error() {
        let mut out = Vec::new();
        put_field(&mut out, b"hello").unwrap();
        put_field(&mut out, b"").unwrap();
        let mut input = &out[..];
        assert_eq!(take_field(&mut input).unwrap(), b"hello");
        assert_eq!(take_field(&mut input).unwrap(), b"");
        assert!(take_field(&mut input).is_err());
        let mut short = &out[..4];
        assert!(take_field(&mut short).is_err());
    }
}
