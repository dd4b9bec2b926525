//! Fixtures shared by the hal test binaries: one secure element per backend, each test with its
//! own (a fresh swtpm, or a fresh key directory).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod pki;
pub mod tls;

use std::sync::Arc;

use posguard_hal::testing::Swtpm;
use posguard_hal::{SecureElement, SecureElementConfig};

/// One backend under test and what keeps it alive.
pub enum Fixture {
    Software(tempfile::TempDir),
    Tpm(Swtpm),
}

impl Fixture {
    pub fn software() -> Self {
        Fixture::Software(tempfile::tempdir().unwrap())
    }

    pub fn tpm() -> Self {
        Fixture::Tpm(Swtpm::start().expect("start swtpm"))
    }

    pub fn config(&self) -> SecureElementConfig {
        match self {
            Fixture::Software(dir) => SecureElementConfig::software(dir.path().join("keys")),
            Fixture::Tpm(swtpm) => swtpm.config(),
        }
    }

    pub fn open(&self) -> Arc<dyn SecureElement> {
        posguard_hal::open(&self.config()).expect("open secure element")
    }

    /// A "reboot": the TPM restarts on its state directory; software keys are reopened.
    pub fn restart(self) -> Self {
        match self {
            Fixture::Software(dir) => Fixture::Software(dir),
            Fixture::Tpm(swtpm) => Fixture::Tpm(swtpm.restart().expect("restart swtpm")),
        }
    }

    pub fn is_tpm(&self) -> bool {
        matches!(self, Fixture::Tpm(_))
    }
}

/// Defines `mod <name> { fn software(); fn tpm(); }` running the same body on both backends.
#[macro_export]
macro_rules! conformance {
    ($name:ident, |$fx:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($fx: $crate::support::Fixture) $body

            #[test]
            fn software() {
                run($crate::support::Fixture::software());
            }

            #[test]
            fn tpm() {
                run($crate::support::Fixture::tpm());
            }
        }
    };
}

/// Verifies a DER ECDSA P-256 SHA-256 signature over `message` with ring.
pub fn ring_verify(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let point = posguard_hal::der::p256_point_from_spki(spki).expect("P-256 SPKI");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature)
        .is_ok()
}
