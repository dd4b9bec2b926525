//! What only the TPM backend has: a TCTI that can be wrong, handles that other software may
//! occupy, and an independent judge (tpm2-tools) of what we created.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use posguard_hal::config::{DEFAULT_COUNTER_INDEX, DEFAULT_IDENTITY_HANDLE};
use posguard_hal::testing::Swtpm;
use posguard_hal::{ForeignEviction, HalError, KeyMode, SecureElementConfig};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn nothing_at_the_tcti_is_a_prompt_error_naming_it() {
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let started = Instant::now();
    let err = posguard_hal::open(&SecureElementConfig::tpm(&tcti)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(matches!(err, HalError::Unreachable { .. }), "{msg}");
    assert!(msg.contains(&tcti), "message names the TCTI: {msg}");
    assert!(
        msg.contains("swtpm is running") && msg.contains("/dev/tpmrm0"),
        "says what to check: {msg}"
    );
}

#[test]
fn a_missing_device_is_a_prompt_error() {
    let err = posguard_hal::open(&SecureElementConfig::tpm(
        "device:/dev/posguard-no-such-tpm",
    ))
    .unwrap_err();
    assert!(matches!(err, HalError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("/dev/posguard-no-such-tpm"));
}

#[test]
fn a_malformed_tcti_is_refused() {
    let err = posguard_hal::open(&SecureElementConfig::tpm("no-such-tcti-kind:x")).unwrap_err();
    assert!(
        matches!(err, HalError::BadTcti { .. } | HalError::Unreachable { .. }),
        "{err}"
    );
}

#[test]
fn tpm2_tools_see_a_persistent_p256_signing_key() {
    let tpm = Swtpm::start().unwrap();
    {
        let se = posguard_hal::open(&tpm.config()).unwrap();
        se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    } // swtpm serves one client at a time: close ours first.
    let handle = format!("{DEFAULT_IDENTITY_HANDLE:#010x}");
    let caps = tpm.tpm2("tpm2_getcap", &["handles-persistent"]).unwrap();
    assert!(caps.status.success(), "{}", text(&caps));
    assert!(text(&caps).contains(&handle), "{}", text(&caps));
    let public = tpm.tpm2("tpm2_readpublic", &["-c", &handle]).unwrap();
    let out = text(&public);
    assert!(public.status.success(), "{out}");
    assert!(out.contains("ecc"), "{out}");
    assert!(
        out.contains("NIST p256") || out.contains("TPM2_ECC_NIST_P256"),
        "{out}"
    );
    assert!(out.contains("sign"), "{out}");
    assert!(
        out.contains("fixedtpm") && out.contains("fixedparent"),
        "{out}"
    );
    assert!(!out.contains("decrypt"), "{out}");
}

#[test]
fn an_occupied_identity_handle_is_refused_and_nothing_is_evicted() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("other.ctx");
    let handle = format!("{DEFAULT_IDENTITY_HANDLE:#010x}");
    // Someone else's key (an RSA storage key) at our handle.
    let out = tpm
        .tpm2(
            "tpm2_createprimary",
            &["-C", "o", "-G", "rsa2048", "-c", ctx.to_str().unwrap()],
        )
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = tpm
        .tpm2(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", ctx.to_str().unwrap(), &handle],
        )
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let before = text(&tpm.tpm2("tpm2_readpublic", &["-c", &handle]).unwrap());

    {
        let se = posguard_hal::open(&tpm.config()).unwrap();
        for mode in [
            KeyMode::OpenOrCreate,
            KeyMode::OpenExisting,
            KeyMode::Replace,
        ] {
            let err = se.ensure_identity_key(mode).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, HalError::Foreign { .. }), "{msg}");
            assert!(msg.contains(&handle) && msg.contains("RSA"), "{msg}");
            assert!(msg.contains("did not evict it"), "{msg}");
            // A free handle to use instead, and the named eviction.
            assert!(msg.contains("--identity-handle 0x81010002"), "{msg}");
            assert!(msg.contains(&format!("--evict-foreign {handle}")), "{msg}");
        }
        assert!(se.sign_digest(&[1; 32]).is_err());
        assert!(se.commit_identity_key().is_err());
        // Decommissioning leaves it alone too.
        assert!(matches!(se.destroy(), Err(HalError::Foreign { .. })));
        // Only posguard's configured handles may be named for eviction.
        assert!(matches!(
            se.evict_foreign(0x8101_0005),
            Err(HalError::EvictRefused { .. })
        ));
    }
    let after = text(&tpm.tpm2("tpm2_readpublic", &["-c", &handle]).unwrap());
    assert_eq!(before, after, "the other object is untouched");
    assert!(after.contains("rsa"), "{after}");
}

#[test]
fn an_nv_index_posguard_did_not_define_is_refused_until_named() {
    let index = format!("{DEFAULT_COUNTER_INDEX:#010x}");
    // Not a counter; and another application's counter (index auth, DA-protected).
    for (size, attributes) in [
        ("32", "ownerread|ownerwrite"),
        ("8", "nt=counter|ownerread|ownerwrite|authread|authwrite"),
    ] {
        let tpm = Swtpm::start().unwrap();
        let out = tpm
            .tpm2(
                "tpm2_nvdefine",
                &[&index, "-C", "o", "-s", size, "-a", attributes],
            )
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let before = text(&tpm.tpm2("tpm2_nvreadpublic", &[&index]).unwrap());
        {
            let se = posguard_hal::open(&tpm.config()).unwrap();
            let err = se.counter_create().unwrap_err();
            assert!(matches!(err, HalError::Foreign { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("--counter-index 0x01005048"), "{msg}");
            assert!(
                se.destroy().is_err(),
                "destroy must not undefine someone else's index"
            );
        }
        assert_eq!(
            text(&tpm.tpm2("tpm2_nvreadpublic", &[&index]).unwrap()),
            before
        );
        let se = posguard_hal::open(&tpm.config()).unwrap();
        assert!(matches!(
            se.evict_foreign(DEFAULT_COUNTER_INDEX).unwrap(),
            ForeignEviction::Evicted(_)
        ));
        let v = se.counter_create().unwrap();
        assert_eq!(se.counter_increment().unwrap(), v + 1);
        assert_eq!(
            se.evict_foreign(DEFAULT_COUNTER_INDEX).unwrap(),
            ForeignEviction::Ours
        );
    }
}

#[test]
fn a_blob_sealed_by_another_tpm_is_refused() {
    let a = Swtpm::start().unwrap();
    let b = Swtpm::start().unwrap();
    let blob = posguard_hal::open(&a.config())
        .unwrap()
        .seal(b"secret")
        .unwrap();
    let err = posguard_hal::open(&b.config())
        .unwrap()
        .unseal(&blob)
        .unwrap_err();
    assert!(matches!(err, HalError::SealedBlob { .. }), "{err}");
}

#[test]
fn a_software_blob_is_refused_by_the_tpm() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let soft = posguard_hal::open(&SecureElementConfig::software(dir.path().join("k"))).unwrap();
    let blob = soft.seal(b"secret").unwrap();
    let err = posguard_hal::open(&tpm.config())
        .unwrap()
        .unseal(&blob)
        .unwrap_err();
    assert!(err.to_string().contains("another backend"), "{err}");
}

#[test]
fn a_named_eviction_removes_only_a_foreign_object_and_keeps_posguards_own() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("other.ctx");
    let handle = format!("{DEFAULT_IDENTITY_HANDLE:#010x}");
    let out = tpm
        .tpm2(
            "tpm2_createprimary",
            &["-C", "o", "-G", "ecc256", "-c", ctx.to_str().unwrap()],
        )
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = tpm
        .tpm2(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", ctx.to_str().unwrap(), &handle],
        )
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // tpm2-tools without a resource manager leave the primary loaded: free the slot.
    tpm.flush_after_kill().unwrap();
    let se = posguard_hal::open(&tpm.config()).unwrap();
    match se.evict_foreign(DEFAULT_IDENTITY_HANDLE).unwrap() {
        ForeignEviction::Evicted(what) => assert!(what.contains("ECC"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        se.evict_foreign(DEFAULT_IDENTITY_HANDLE).unwrap(),
        ForeignEviction::Absent
    );
    let key = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    assert_eq!(
        se.evict_foreign(DEFAULT_IDENTITY_HANDLE).unwrap(),
        ForeignEviction::Ours
    );
    assert_eq!(se.identity_public_key().unwrap(), key.spki_der);
}

#[test]
fn a_full_tpm_is_not_a_tampered_blob() {
    let tpm = Swtpm::start().unwrap();
    let blob = {
        let se = posguard_hal::open(&tpm.config()).unwrap();
        se.seal(b"data key").unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    // Another client (without a resource manager) fills two, then all three of swtpm's object
    // slots: the first fails at the load of the sealed object, the second before it.
    for i in 0..3 {
        let ctx = dir.path().join(format!("{i}.ctx"));
        let out = tpm
            .tpm2(
                "tpm2_createprimary",
                &["-C", "o", "-G", "ecc256", "-c", ctx.to_str().unwrap()],
            )
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        if i == 0 {
            continue;
        }
        let se = posguard_hal::open(&tpm.config()).unwrap();
        let err = se.unseal(&blob).unwrap_err();
        assert!(
            matches!(err, HalError::Tpm { .. }),
            "a TPM out of object memory says nothing about the blob: {err}"
        );
    }
    tpm.flush_after_kill().unwrap();
    let se = posguard_hal::open(&tpm.config()).unwrap();
    assert_eq!(&se.unseal(&blob).unwrap()[..], b"data key");
}
