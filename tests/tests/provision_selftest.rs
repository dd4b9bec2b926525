//! `posguard-provision selftest` on a real swtpm: `--check-only` changes nothing in the TPM
//! (persistent handles and NV indices, as tpm2_getcap lists them, and the counter's value), on
//! a fresh TPM and on a provisioned one; and the self-test fails while the TPM is in
//! dictionary-attack lockout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use posguard_e2e::command;
use posguard_e2e::provision_agent::{force_lockout, run};
use posguard_hal::testing::Swtpm;
use serde_json::Value;

/// Persistent handles and NV indices, as tpm2-tools sees them.
fn handles(tpm: &Swtpm) -> String {
    let mut all = String::new();
    for what in ["handles-persistent", "handles-nv-index"] {
        let out = tpm.tpm2("tpm2_getcap", &[what]).unwrap();
        assert!(out.status.success());
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

fn selftest(tpm: &Swtpm, extra: &[&str]) -> (bool, Value) {
    let (ok, out) = run(command("posguard-provision")
        .args(["selftest", "--json", "--tcti", &tpm.tcti()])
        .args(extra));
    let start = out.find('{').expect("a JSON report");
    let end = out.rfind('}').expect("a JSON report");
    (ok, serde_json::from_str(&out[start..=end]).unwrap())
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().contains(name))
        .unwrap_or_else(|| panic!("no step {name}: {report:#}"))
}

#[test]
fn check_only_changes_nothing_and_lockout_fails_the_self_test() {
    let tpm = Swtpm::start().unwrap();

    // A fresh TPM: check-only fails (nothing to check) and creates nothing, not even the
    // storage root key that sealing would need.
    let before = handles(&tpm);
    let (ok, report) = selftest(&tpm, &["--check-only"]);
    assert!(!ok, "{report:#}");
    assert_eq!(step(&report, "identity key")["ok"], false);
    assert_eq!(handles(&tpm), before, "check-only changed a fresh TPM");

    // Provisioning mode creates the key and the counter.
    let (ok, report) = selftest(&tpm, &[]);
    assert!(ok, "{report:#}");
    let provisioned = handles(&tpm);
    assert_ne!(provisioned, before);

    // Check-only on the provisioned TPM: every step passes, three runs in a row leave the
    // handles and NV indices as they were, and the counter is read, never incremented.
    let mut values = Vec::new();
    for _ in 0..3 {
        let (ok, report) = selftest(&tpm, &["--check-only"]);
        assert!(ok, "{report:#}");
        assert_eq!(handles(&tpm), provisioned);
        let counter = step(&report, "monotonic counter")["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(counter.contains("read only"), "{counter}");
        values.push(counter);
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");

    // Lockout: both modes fail, naming it.
    let dir = tempfile::tempdir().unwrap();
    force_lockout(dir.path(), &|tool, args| tpm.tpm2(tool, args));
    for extra in [&["--check-only"][..], &[][..]] {
        let (ok, report) = selftest(&tpm, extra);
        assert!(!ok, "{report:#}");
        let lockout = step(&report, "lockout");
        assert_eq!(lockout["ok"], false, "{report:#}");
        assert!(
            lockout["detail"]
                .as_str()
                .unwrap()
                .contains("clear-lockout"),
            "{report:#}"
        );
    }
}
