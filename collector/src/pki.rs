//! The fleet CA at the collector: [`init`] creates the CA, the collector's server certificate
//! and an empty CRL (`ca init`); [`csr`] checks a device's CSR (signature, P-256 key, the one
//! device identity it may ask for); [`issue`] signs device certificates ([`issue::DeviceCa`]);
//! [`crl`] reissues the CRL with more revoked serials (`ca revoke`).

pub mod crl;
pub mod csr;
pub mod init;
pub mod issue;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ca init` found an existing file and wrote nothing.
    #[error("{0} already exists: refusing to overwrite an existing CA (nothing was written)")]
    Exists(PathBuf),
    /// A file holds no usable certificate, key or CRL.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rcgen refused to build or sign something.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A value out of range (days, names).
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn bad(path: &Path, reason: impl ToString) -> PkiError {
    PkiError::Bad {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes a new file (never replacing one) with `mode`, synced.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists(path.to_owned())
            } else {
                io_err(path)(e)
            }
        })?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// A random positive serial of 16 bytes whose first byte is neither 0 nor ≥ 0x80, so that its
/// DER encoding is exactly these bytes and its hex form is stable (126 random bits).
pub fn random_serial() -> Result<[u8; 16], PkiError> {
    use ring::rand::SecureRandom as _;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Invalid("system random generator failed".into()))?;
    if let Some(first) = serial.first_mut() {
        *first = (*first & 0x3f) | 0x40;
    }
    Ok(serial)
}

/// Serial bytes (as in the DER INTEGER) as lower-case hex without leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    crate::clock::hex(raw.get(start..).unwrap_or_default())
}

/// Parses `--serial`: hex, colons allowed, leading zero bytes ignored.
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| *c != ':').collect();
    let clean = if !clean.len().is_multiple_of(2) {
        format!("0{clean}")
    } else {
        clean
    };
    let bytes = crate::clock::unhex(&clean)?;
    let start = bytes.iter().position(|b| *b != 0)?;
    bytes.get(start..).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_minimal_and_round_trip() {
        for _ in 0..64 {
            let s = random_serial().unwrap();
            assert!((0x40..0x80).contains(&s[0]));
            assert_eq!(parse_serial(&serial_hex(&s)).unwrap(), s.to_vec());
        }
        assert_eq!(serial_hex(&[0, 0x12]), "12");
        assert_eq!(parse_serial("00:ab:cd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(parse_serial("abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(parse_serial("00").is_none());
        assert!(parse_serial("xyz").is_none());
    }
}
