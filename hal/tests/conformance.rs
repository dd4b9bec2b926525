//! The secure-element conformance suite: every test runs against the software backend and
//! against a real software TPM (a fresh swtpm per test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use posguard_hal::{HalError, KeyMode, KeyOrigin, MAX_SEALED_SECRET, SealedBlob, sha256};
use support::ring_verify;

conformance!(identity_key_is_created_once_then_opened, |fx| {
    let se = fx.open();
    let created = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    assert_eq!(created.origin, KeyOrigin::Created);
    assert_eq!(created.spki_der.len(), 91, "P-256 SPKI");
    let again = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    assert_eq!(again.origin, KeyOrigin::Opened);
    assert_eq!(again.spki_der, created.spki_der);
    drop(se);
    let reopened = fx
        .open()
        .ensure_identity_key(KeyMode::OpenExisting)
        .unwrap();
    assert_eq!(
        reopened.spki_der, created.spki_der,
        "opening never replaces"
    );
});

conformance!(open_existing_without_a_key_is_a_clear_error, |fx| {
    let se = fx.open();
    let err = se.ensure_identity_key(KeyMode::OpenExisting).unwrap_err();
    assert!(matches!(err, HalError::NoIdentityKey { .. }), "{err}");
    assert!(matches!(
        se.sign_digest(&[0; 32]),
        Err(HalError::NoIdentityKey { .. })
    ));
    assert!(matches!(
        se.identity_public_key(),
        Err(HalError::NoIdentityKey { .. })
    ));
});

conformance!(
    a_replacement_is_staged_beside_the_old_key_until_committed,
    |fx| {
        let first = {
            let se = fx.open();
            let first = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
            // Nothing staged: a commit is refused and changes nothing.
            assert!(se.commit_identity_key().is_err());
            let staged = se.ensure_identity_key(KeyMode::Replace).unwrap();
            assert_eq!(staged.origin, KeyOrigin::Staged);
            assert_ne!(staged.spki_der, first.spki_der);
            // The staged key signs (for the CSR) while the stored one is untouched.
            assert_eq!(se.identity_public_key().unwrap(), staged.spki_der);
            let sig = se.sign_digest(&sha256(b"csr")).unwrap();
            assert!(ring_verify(&staged.spki_der, b"csr", &sig));
            first
        };
        // Dropped without a commit (enrollment failed): the old key is the identity, unchanged.
        let se = fx.open();
        let reopened = se.ensure_identity_key(KeyMode::OpenExisting).unwrap();
        assert_eq!(reopened.spki_der, first.spki_der);
        // Staged and committed: the new key replaces the old one, and survives a reopen.
        let staged = se.ensure_identity_key(KeyMode::Replace).unwrap();
        let committed = se.commit_identity_key().unwrap();
        assert_eq!(committed.origin, KeyOrigin::Replaced);
        assert_eq!(committed.spki_der, staged.spki_der);
        assert!(
            se.commit_identity_key().is_err(),
            "a second commit has nothing to commit"
        );
        drop(se);
        let se = fx.open();
        let after = se.ensure_identity_key(KeyMode::OpenExisting).unwrap();
        assert_eq!(after.spki_der, staged.spki_der);
        let sig = se.sign_digest(&sha256(b"after")).unwrap();
        assert!(ring_verify(&staged.spki_der, b"after", &sig));
    }
);

conformance!(a_replacement_on_a_fresh_element_commits_as_created, |fx| {
    let se = fx.open();
    let staged = se.ensure_identity_key(KeyMode::Replace).unwrap();
    let committed = se.commit_identity_key().unwrap();
    assert_eq!(committed.origin, KeyOrigin::Created);
    assert_eq!(se.identity_public_key().unwrap(), staged.spki_der);
});

conformance!(signatures_verify_with_ring, |fx| {
    let se = fx.open();
    let key = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    for message in [&b""[..], b"checkpoint 42", &[0xA5; 4096]] {
        let sig = se.sign_digest(&sha256(message)).unwrap();
        assert!(
            ring_verify(&key.spki_der, message, &sig),
            "signature must verify"
        );
        assert!(!ring_verify(&key.spki_der, b"another message", &sig));
    }
});

conformance!(seal_and_unseal_round_trip, |fx| {
    let se = fx.open();
    for len in [1, 32, MAX_SEALED_SECRET] {
        let secret: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
        let blob = se.seal(&secret).unwrap();
        // A 16-byte run of the secret would show it in clear (shorter secrets can match
        // random bytes by chance, so only the longer ones are checked).
        if len >= 16 {
            assert!(
                !blob.as_bytes().windows(16).any(|w| w == &secret[..16]),
                "the blob must not contain the secret in clear"
            );
        }
        assert_eq!(&se.unseal(&blob).unwrap()[..], &secret[..]);
    }
    for len in [0, MAX_SEALED_SECRET + 1] {
        let err = se.seal(&vec![1u8; len]).unwrap_err();
        assert!(matches!(err, HalError::SecretSize { .. }), "{err}");
    }
});

conformance!(tampered_or_foreign_blobs_are_errors_not_panics, |fx| {
    let se = fx.open();
    let blob = se.seal(&[7u8; 32]).unwrap();
    let bytes = blob.as_bytes().to_vec();
    // Every single-byte change, anywhere in the blob, is refused.
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        let res = se.unseal(&SealedBlob::from_bytes(t));
        assert!(
            matches!(res, Err(HalError::SealedBlob { .. })),
            "byte {i}: {res:?}"
        );
    }
    for cut in [0, 3, 8, bytes.len() / 2, bytes.len() - 1] {
        let res = se.unseal(&SealedBlob::from_bytes(bytes[..cut].to_vec()));
        assert!(
            matches!(res, Err(HalError::SealedBlob { .. })),
            "cut {cut}: {res:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(se.unseal(&SealedBlob::from_bytes(longer)).is_err());
    assert!(
        se.unseal(&SealedBlob::from_bytes(b"PGSEAL\x01\x01garbage".to_vec()))
            .is_err()
    );
    assert!(
        se.unseal(&SealedBlob::from_bytes(b"PGSEAL\x01\x02garbage".to_vec()))
            .is_err()
    );
    // The original still unseals: nothing was harmed.
    assert_eq!(&se.unseal(&blob).unwrap()[..], &[7u8; 32]);
});

conformance!(counter_is_created_once_and_only_goes_up, |fx| {
    let se = fx.open();
    assert!(matches!(se.counter_read(), Err(HalError::NoCounter { .. })));
    assert!(matches!(
        se.counter_increment(),
        Err(HalError::NoCounter { .. })
    ));
    let start = se.counter_create().unwrap();
    assert_eq!(se.counter_create().unwrap(), start, "create is idempotent");
    assert_eq!(se.counter_read().unwrap(), start);
    for i in 1..=5 {
        assert_eq!(se.counter_increment().unwrap(), start + i);
    }
    assert_eq!(se.counter_read().unwrap(), start + 5);
});

conformance!(random_bytes_have_the_asked_length_and_differ, |fx| {
    let se = fx.open();
    assert!(se.random(0).unwrap().is_empty());
    let a = se.random(100).unwrap();
    let b = se.random(100).unwrap();
    assert_eq!(a.len(), 100);
    assert_eq!(b.len(), 100);
    assert_ne!(&a[..], &b[..]);
    assert_eq!(se.random(1).unwrap().len(), 1);
});

conformance!(key_counter_and_sealed_blob_survive_a_restart, |fx| {
    let (spki, counter, blob) = {
        let se = fx.open();
        let key = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
        se.counter_create().unwrap();
        let counter = se.counter_increment().unwrap();
        (key.spki_der, counter, se.seal(b"the data key").unwrap())
    };
    let fx = fx.restart();
    let se = fx.open();
    let key = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    assert_eq!(key.origin, KeyOrigin::Opened);
    assert_eq!(key.spki_der, spki);
    assert_eq!(se.counter_read().unwrap(), counter);
    assert_eq!(se.counter_increment().unwrap(), counter + 1);
    assert_eq!(&se.unseal(&blob).unwrap()[..], b"the data key");
    let sig = se.sign_digest(&sha256(b"after reboot")).unwrap();
    assert!(ring_verify(&spki, b"after reboot", &sig));
});

conformance!(destroy_removes_identity_and_counter, |fx| {
    let se = fx.open();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    se.counter_create().unwrap();
    se.destroy().unwrap();
    se.destroy().unwrap();
    assert!(matches!(
        se.ensure_identity_key(KeyMode::OpenExisting),
        Err(HalError::NoIdentityKey { .. })
    ));
    assert!(matches!(se.counter_read(), Err(HalError::NoCounter { .. })));
});

conformance!(csr_made_with_the_identity_key_passes_openssl_verify, |fx| {
    let se = fx.open();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    let pem = posguard_hal::csr::device_csr_pem(se.clone(), "term-0001").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("req.pem");
    std::fs::write(&path, &pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-in"])
        .arg(&path)
        .args(["-noout", "-verify", "-text"])
        .output()
        .expect("openssl must be installed");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl req -verify failed: {all}");
    assert!(all.contains("verify OK"), "{all}");
    assert!(all.contains("URI:urn:posguard:device:term-0001"), "{all}");
    assert!(all.contains("prime256v1") || all.contains("P-256"), "{all}");
});

conformance!(tls13_mutual_auth_with_the_identity_key, |fx| {
    let se = fx.open();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    support::tls::handshake_with_client_key(se);
});

conformance!(a_fresh_secure_element_is_not_in_lockout, |fx| {
    assert!(!fx.open().in_lockout().unwrap());
});
