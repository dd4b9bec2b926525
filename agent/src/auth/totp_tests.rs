#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn rfc_seed() -> TotpSeed {
    TotpSeed::from_random(*b"12345678901234567890")
}

#[test]
fn rfc6238_appendix_b_sha1_vectors() {
    let seed = rfc_seed();
    let vectors = [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];
    for (t, want) in vectors {
        assert_eq!(code_for_step(&seed, step_at(t), 8).as_str(), want, "T={t}");
        assert_eq!(
            verify_digits(&seed, want, t, None, 8),
            TotpDecision::Accepted { step: step_at(t) }
        );
        // The 6-digit code is the low six digits of the same value.
        assert_eq!(code_at(&seed, t).as_str(), &want[2..]);
    }
}

#[test]
fn drift_of_one_step_is_accepted_and_two_is_not() {
    let seed = rfc_seed();
    let t = 1_111_111_111;
    let code = code_at(&seed, t);
    for dt in [-30i64, 0, 30] {
        let at = t.checked_add_signed(dt).unwrap();
        assert!(matches!(
            verify(&seed, &code, at, None),
            TotpDecision::Accepted { .. }
        ));
    }
    assert_eq!(verify(&seed, &code, t + 60, None), TotpDecision::Wrong);
    assert_eq!(verify(&seed, &code, t - 60, None), TotpDecision::Wrong);
}

#[test]
fn malformed_codes_are_wrong() {
    let seed = rfc_seed();
    for code in ["", "12345", "1234567", "12a456", " 12345", "１２３４５６"] {
        assert_eq!(
            verify(&seed, code, 59, None),
            TotpDecision::Wrong,
            "{code:?}"
        );
    }
}

#[test]
fn replay_of_an_accepted_step_is_flagged() {
    let seed = rfc_seed();
    let t = 1_234_567_890;
    let code = code_at(&seed, t);
    let TotpDecision::Accepted { step } = verify(&seed, &code, t, None) else {
        panic!("fresh code refused");
    };
    assert_eq!(
        verify(&seed, &code, t, Some(step)),
        TotpDecision::Replayed { step }
    );
    assert_eq!(
        verify(&seed, &code, t + 30, Some(step)),
        TotpDecision::Replayed { step }
    );
    // An older step after a newer one was accepted is a replay too.
    let older = code_at(&seed, t - 30);
    assert_eq!(
        verify(&seed, &older, t, Some(step)),
        TotpDecision::Replayed { step: step - 1 }
    );
}

#[test]
fn base32_round_trip_and_seed_length() {
    let seed = rfc_seed();
    let b32 = seed.to_base32();
    assert_eq!(b32.as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    let again = TotpSeed::from_base32(&b32.to_lowercase()).unwrap();
    assert_eq!(code_at(&again, 59), code_at(&seed, 59));
    assert!(TotpSeed::from_base32("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").is_ok());
    assert_eq!(
        TotpSeed::from_base32("GEZDGNBVGY3TQOJQ").unwrap_err(),
        TotpError::BadLength { len: 10 }
    );
    assert_eq!(
        TotpSeed::from_base32("GEZ1!").unwrap_err(),
        TotpError::NotBase32
    );
    assert_eq!(format!("{seed:?}"), "TotpSeed(<redacted>)");
}

#[test]
fn otpauth_uri_has_every_parameter() {
    let clerk = ClerkId::new("anna.m").unwrap();
    let uri = otpauth_uri(&clerk, &rfc_seed());
    assert_eq!(
        uri.as_str(),
        "otpauth://totp/posguard:anna.m?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
         &issuer=posguard&algorithm=SHA1&digits=6&period=30"
    );
}

fn oathtool(b32: &str, unix: u64) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", &format!("--now=@{unix}"), b32])
        .output()
        .expect("oathtool must be installed (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn matches_oathtool_and_refuses_the_replay() {
    let seed = TotpSeed::from_random([
        0x3d, 0xc6, 0xca, 0xa4, 0x82, 0x4a, 0x6d, 0x28, 0x87, 0x67, 0xb2, 0x33, 0x1e, 0x20, 0xb4,
        0x31, 0x66, 0xcb, 0x85, 0xd9,
    ]);
    let b32 = seed.to_base32();
    for unix in [
        59u64,
        1_111_111_109,
        1_700_000_000,
        1_700_000_029,
        2_000_000_000,
        4_102_444_800,
    ] {
        let theirs = oathtool(&b32, unix);
        assert_eq!(code_at(&seed, unix).as_str(), theirs, "at {unix}");
        let TotpDecision::Accepted { step } = verify(&seed, &theirs, unix, None) else {
            panic!("oathtool's code refused at {unix}");
        };
        assert_eq!(step, unix / 30);
        assert_eq!(
            verify(&seed, &theirs, unix, Some(step)),
            TotpDecision::Replayed { step }
        );
    }
}
