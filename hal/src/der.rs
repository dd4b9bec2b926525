//! The few DER encodings the hardware layer produces itself: an ECDSA signature from (r, s) and
//! a P-256 SubjectPublicKeyInfo from an uncompressed point.

/// DER prefix of a P-256 SubjectPublicKeyInfo up to the uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Length of an uncompressed P-256 point (0x04 || X || Y).
pub const P256_POINT_LEN: usize = 65;

/// SPKI DER of a P-256 public key given as X and Y coordinates (each at most 32 bytes;
/// shorter values are left-padded, as a TPM may strip leading zeros).
pub fn p256_spki_from_xy(x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let x = left_pad_32(x)?;
    let y = left_pad_32(y)?;
    let mut out = Vec::with_capacity(P256_SPKI_PREFIX.len() + P256_POINT_LEN);
    out.extend_from_slice(&P256_SPKI_PREFIX);
    out.push(0x04);
    out.extend_from_slice(&x);
    out.extend_from_slice(&y);
    Some(out)
}

/// SPKI DER of a P-256 public key given as an uncompressed SEC1 point.
pub fn p256_spki_from_point(point: &[u8]) -> Option<Vec<u8>> {
    if point.len() != P256_POINT_LEN || point.first() != Some(&0x04) {
        return None;
    }
    let mut out = Vec::with_capacity(P256_SPKI_PREFIX.len() + P256_POINT_LEN);
    out.extend_from_slice(&P256_SPKI_PREFIX);
    out.extend_from_slice(point);
    Some(out)
}

/// The uncompressed point inside a P-256 SPKI, or `None` if `spki` is not one.
pub fn p256_point_from_spki(spki: &[u8]) -> Option<&[u8]> {
    let point = spki.strip_prefix(&P256_SPKI_PREFIX[..])?;
    (point.len() == P256_POINT_LEN && point.first() == Some(&0x04)).then_some(point)
}

/// DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from big-endian r and s of at
/// most 32 bytes each (P-256).
pub fn ecdsa_signature_der(r: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let r = der_positive_integer(&left_pad_32(r)?);
    let s = der_positive_integer(&left_pad_32(s)?);
    // Each INTEGER is at most 2 + 33 bytes, so the body fits a short-form length (< 128).
    let body_len = r.len().checked_add(s.len())?;
    let mut out = Vec::with_capacity(body_len.checked_add(2)?);
    out.push(0x30);
    out.push(u8::try_from(body_len).ok()?);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

fn left_pad_32(v: &[u8]) -> Option<[u8; 32]> {
    // A TPM may return leading zeros or strip them; both are fine if the value fits.
    let trimmed: &[u8] = {
        let first_nonzero = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        v.get(first_nonzero..)?
    };
    if trimmed.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    let start = 32usize.checked_sub(trimmed.len())?;
    out.get_mut(start..)?.copy_from_slice(trimmed);
    Some(out)
}

fn der_positive_integer(v: &[u8; 32]) -> Vec<u8> {
    let first_nonzero = v.iter().position(|b| *b != 0).unwrap_or(31);
    let digits = v.get(first_nonzero..).unwrap_or(&[0]);
    let needs_pad = digits.first().is_some_and(|b| b & 0x80 != 0);
    let mut out = Vec::with_capacity(35);
    out.push(0x02);
    // digits.len() <= 32, plus one pad byte: fits in u8.
    out.push((digits.len() as u8).saturating_add(u8::from(needs_pad)));
    if needs_pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_der_pads_high_bit_and_strips_zeros() {
        let mut r = [0u8; 32];
        r[0] = 0x80;
        let mut s = [0u8; 32];
        s[31] = 1;
        let der = ecdsa_signature_der(&r, &s).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
    }

    #[test]
    fn spki_round_trip() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let spki = p256_spki_from_point(&point).unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(p256_point_from_spki(&spki), Some(&point[..]));
        assert!(p256_point_from_spki(&spki[1..]).is_none());
        assert_eq!(p256_spki_from_xy(&[7u8; 32], &[7u8; 32]).unwrap(), spki);
    }

    #[test]
    fn oversized_values_are_refused() {
        assert!(ecdsa_signature_der(&[1u8; 33], &[1]).is_none());
        assert!(ecdsa_signature_der(&[0u8; 40], &[1]).is_some());
    }
}
