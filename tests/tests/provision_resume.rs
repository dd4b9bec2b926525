//! Issue 16, point 1: "resumable" is true. Every local step that can fail runs before the
//! one-time token is sent, so a failure leaves the token unspent and the rerun, once the cause
//! is fixed, succeeds with the same token; a failure after enrollment keeps the issued chain
//! and the rerun finishes without the network; a lost chain is issued again for the same key.
//! Real binaries, a real collector, one swtpm per terminal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use posguard_e2e::provision::{Central, Immutable, Terminal, central, run};

/// Local failures a technician meets, each with its fix.
#[derive(Debug, Clone, Copy)]
enum Fault {
    ReadOnlyConfigDir,
    ReadOnlyStateDir,
    ForeignNvIndexAtTheCounter,
    MissingFleetCa,
    FleetCaIsNotACa,
    DataKeySealedElsewhere,
}

/// Breaks `t` in the way of `fault`; returns the `--fleet-ca` to use, what the message must
/// say, and the fix (run before the rerun).
fn inject(fault: Fault, c: &Central, t: &Terminal) -> (PathBuf, Vec<String>, Box<dyn FnOnce()>) {
    let own_ca = t.dir.path().join("fleet-ca.pem");
    match fault {
        Fault::ReadOnlyConfigDir | Fault::ReadOnlyStateDir => {
            let (dir, flag) = match fault {
                Fault::ReadOnlyConfigDir => (t.etc(), "--config-dir"),
                _ => (t.state(), "--state-dir"),
            };
            let guard = Immutable::new(&dir);
            let says = vec![
                dir.display().to_string(),
                "not writable".into(),
                flag.into(),
            ];
            (c.fleet_ca(), says, Box::new(move || drop(guard)))
        }
        Fault::ForeignNvIndexAtTheCounter => {
            let out = t
                .tpm
                .tpm2(
                    "tpm2_nvdefine",
                    &[
                        "0x01005047",
                        "-C",
                        "o",
                        "-s",
                        "8",
                        "-a",
                        "ownerread|ownerwrite",
                    ],
                )
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let says = vec![
                "0x01005047".into(),
                "--counter-index 0x01005048".into(),
                "--evict-foreign 0x01005047".into(),
            ];
            let tpm = t.tpm.tcti();
            let fix = move || {
                let out = std::process::Command::new("tpm2_nvundefine")
                    .args(["0x01005047", "-C", "o"])
                    .env("TPM2TOOLS_TCTI", tpm)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            };
            (c.fleet_ca(), says, Box::new(fix))
        }
        Fault::DataKeySealedElsewhere => {
            // Left by an earlier installation on another TPM (or before a TPM clear).
            let sealed = t.state().join("datakey.sealed");
            std::fs::create_dir_all(t.state()).unwrap();
            std::fs::write(&sealed, [7u8; 120]).unwrap();
            let says = vec![sealed.display().to_string(), "move it away".into()];
            let fix = move || std::fs::remove_file(sealed).unwrap();
            (c.fleet_ca(), says, Box::new(fix))
        }
        Fault::MissingFleetCa | Fault::FleetCaIsNotACa => {
            let says = if matches!(fault, Fault::MissingFleetCa) {
                vec![own_ca.display().to_string(), "No such file".into()]
            } else {
                // The collector's server certificate, handed over by mistake.
                std::fs::copy(c.dir.path().join("ca/collector.pem"), &own_ca).unwrap();
                vec![own_ca.display().to_string(), "not a CA certificate".into()]
            };
            let (from, to) = (c.fleet_ca(), own_ca.clone());
            let fix = move || {
                std::fs::copy(from, to).unwrap();
            };
            (own_ca, says, Box::new(fix))
        }
    }
}

#[test]
fn every_local_failure_leaves_the_token_unspent_and_the_rerun_succeeds() {
    let (c, _collector) = central();
    let faults = [
        Fault::ReadOnlyConfigDir,
        Fault::ReadOnlyStateDir,
        Fault::ForeignNvIndexAtTheCounter,
        Fault::MissingFleetCa,
        Fault::FleetCaIsNotACa,
        Fault::DataKeySealedElsewhere,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let t = Terminal::new(&format!("till-r{i}"));
        let token = c.token(&t.id);
        let (ca, says, fix) = inject(fault, &c, &t);
        let failed = run(t.init_with(&c, &ca).args(t.token_file(&token)));
        assert!(!failed.ok(), "{fault:?}: {}", failed.text());
        for s in &says {
            assert!(
                failed.stdout.contains(s.as_str()),
                "{fault:?}: {s:?} in {}",
                failed.text()
            );
        }
        assert!(
            failed.stdout.contains("token was not used"),
            "{fault:?}: {}",
            failed.text()
        );
        assert!(!c.token_used(&t.id), "{fault:?}: the token was spent");
        assert!(
            c.history(&t.id).is_empty(),
            "{fault:?}: the collector was asked"
        );
        assert!(!t.etc().join("agent.toml").exists(), "{fault:?}");

        fix();
        let rerun = run(t.init_with(&c, &ca).args(t.token_file(&token)));
        assert!(rerun.ok(), "{fault:?}: {}", rerun.text());
        assert!(t.etc().join("agent.toml").is_file(), "{fault:?}");
        assert!(t.state().join("device.pem").is_file(), "{fault:?}");
        assert!(!t.state().join("device.pem.pending").exists(), "{fault:?}");
        assert!(c.token_used(&t.id), "{fault:?}");
    }
}

#[test]
fn a_failure_after_enrollment_finishes_from_the_kept_chain_without_the_network() {
    let (c, collector) = central();
    let t = Terminal::new("till-p1");
    let token = c.token(&t.id);
    // A directory where agent.toml's temporary file goes: the checks pass (the directory is
    // writable), enrollment succeeds, writing the configuration fails.
    let blocker = t.etc().join("agent.provisioning.tmp");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let failed = run(t.init(&c).args(t.token_file(&token)));
    assert!(!failed.ok(), "{}", failed.text());
    let pending = t.state().join("device.pem.pending");
    assert!(
        failed.stdout.contains(&pending.display().to_string()),
        "{}",
        failed.text()
    );
    assert!(
        failed.stdout.contains("without the network"),
        "{}",
        failed.text()
    );
    assert!(!t.etc().join("agent.toml").exists());
    let kept = std::fs::read(&pending).unwrap();

    // The collector is gone and no token is given: the rerun needs neither.
    collector.kill();
    std::fs::remove_dir_all(&blocker).unwrap();
    let rerun = run(&mut t.init(&c));
    assert!(rerun.ok(), "{}", rerun.text());
    assert!(
        rerun.stdout.contains("certificate from an earlier run"),
        "{}",
        rerun.text()
    );
    assert_eq!(std::fs::read(t.state().join("device.pem")).unwrap(), kept);
    assert!(!pending.exists());
    assert!(t.etc().join("agent.toml").is_file());
    let issued = c.history(&t.id);
    assert_eq!(issued.len(), 1, "one enrollment only: {issued:?}");
}

#[test]
fn a_chain_lost_after_enrollment_is_issued_again_for_the_same_key() {
    let (c, _collector) = central();
    let t = Terminal::new("till-p2");
    let token = c.token(&t.id);
    // A directory where the pending chain goes: enrollment succeeds, keeping its answer fails.
    let pending = t.state().join("device.pem.pending");
    std::fs::create_dir_all(pending.join("x")).unwrap();
    let failed = run(t.init(&c).args(t.token_file(&token)));
    assert!(!failed.ok(), "{}", failed.text());
    assert!(
        failed.stdout.contains("with the same token"),
        "{}",
        failed.text()
    );
    assert!(c.token_used(&t.id));

    // What the message says: the same token again. The collector issues for the same key.
    std::fs::remove_dir_all(&pending).unwrap();
    let rerun = run(t.init(&c).args(t.token_file(&token)));
    assert!(rerun.ok(), "{}", rerun.text());
    let history = c.history(&t.id);
    let reasons: Vec<_> = history
        .iter()
        .map(|r| (r["outcome"].clone(), r["reason"].clone()))
        .collect();
    assert_eq!(history.len(), 2, "{reasons:?}");
    assert_eq!(history[1]["outcome"], "issued", "{reasons:?}");
    assert_eq!(history[1]["reason"], "retry_same_key", "{reasons:?}");

    // A terminal with another key (another TPM) cannot use the spent token.
    let other = Terminal::new("till-p2");
    let refused = run(other.init(&c).args(other.token_file(&token)));
    assert!(
        !refused.ok() && refused.stdout.contains("token_used"),
        "{}",
        refused.text()
    );
}
