//! The TPM identity key under provisioning, with the real binaries on a real software TPM:
//! - `init --force` keeps the working identity until the new one is enrolled: a failed
//!   enrollment (refused token, collector down) leaves the key, certificate and configuration as
//!   they were, and the real agent still ships with them; a successful one replaces the key and
//!   says so (issue 16, point 2);
//! - objects another application left at posguard's handles (tpm2-tools plants them) are never
//!   used, so reruns never add a dictionary-attack failure (TPM2_PT_LOCKOUT_COUNTER), never
//!   evicted unless named with `--evict-foreign`, and the offered `--identity-handle` /
//!   `--srk-handle` works end to end (issue 16, point 5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "provision_tpm/terminal.rs"]
mod terminal;
#[path = "provision_tpm/tpm.rs"]
mod tpm;

use posguard_e2e::provision_tpm::{central, init, run, token};
use posguard_e2e::{CollectorProcess, command};
use posguard_hal::testing::Swtpm;
use terminal::{Terminal, fingerprint};
use tpm::{Foreign, IDENTITY, lockout_counter, public_area, tpm2_ok};

#[test]
fn a_forced_reprovisioning_keeps_the_working_identity_until_the_new_one_is_enrolled() {
    let (c, collector) = central();
    let tpm = Swtpm::start().unwrap();
    let t = Terminal::new();
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &token(&c, "till-1"), &[]);
    assert!(ok, "{out}");
    let before = t.snapshot(&tpm);
    let new_key = &["--force", "--new-key"][..];

    // A refused token, with and without a new key: the collector says no after the CSR.
    for extra in [new_key, &["--force"]] {
        let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &"ab".repeat(32), extra);
        assert!(!ok, "{out}");
        assert!(
            out.contains("invalid_token") && out.contains("nothing on this terminal changed"),
            "{out}"
        );
        assert!(out.contains(IDENTITY) && !out.contains("Replaced"), "{out}");
        assert_eq!(t.snapshot(&tpm), before, "{out}");
    }

    // The collector is down: the request never arrives, so that token stays unused.
    let fresh = token(&c, "till-1");
    collector.kill();
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &fresh, new_key);
    assert!(!ok, "{out}");
    assert!(out.contains("nothing on this terminal changed"), "{out}");
    assert!(out.contains("the new key was never stored"), "{out}");
    assert_eq!(t.snapshot(&tpm), before, "{out}");
    let _collector = CollectorProcess::start(&c.config, c.port);

    // The real agent still starts and ships with the old identity (no DecryptError).
    t.agent_ships();

    // --force enrolls posguard's key again: same key, new certificate, and the agent's journal
    // (signed by that key) goes on shipping.
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &fresh, &["--force"]);
    assert!(ok, "{out}");
    assert!(out.contains("kept and enrolled again"), "{out}");
    let again = t.snapshot(&tpm);
    assert_eq!(again.0, before.0, "the same key at {IDENTITY}");
    assert_ne!(again.1, before.1, "a new certificate");
    assert_eq!(
        again.3, before.3,
        "the data key (TOTP seeds, cache) is kept"
    );
    t.agent_ships();

    // --new-key succeeds: the old key is replaced, and the output names both keys.
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &token(&c, "till-1"), new_key);
    assert!(ok, "{out}");
    let after = t.snapshot(&tpm);
    assert_ne!(after.0, before.0, "a new key at {IDENTITY}");
    assert_ne!(after.1, again.1, "a new certificate");
    assert_eq!(
        after.3, before.3,
        "the data key is sealed under the SRK, not the identity"
    );
    let (old, new) = (fingerprint(&before.1), fingerprint(&after.1));
    assert!(
        out.contains(&format!(
            "replaced posguard's previous key {old} with {new} at {IDENTITY}"
        )),
        "{out}"
    );
    // The certificate is for the key now in the TPM (status reads the key from the TPM).
    let (_, status) = run(command("posguard-provision")
        .args(["status", "--tcti", &tpm.tcti(), "--config-dir"])
        .arg(&t.etc));
    assert!(status.contains(&format!("fingerprint {new}")), "{status}");
    // The same device id ships on with the new key: the collector starts a new chain
    // generation for it (the old chain archived as till-1@gen1, docs/collector.md).
    t.agent_ships();
    let alerts = posguard_e2e::collector_cli(&c.config, &["alerts", "--device", "till-1"]);
    assert!(alerts.contains("device_replaced"), "{alerts}");
    for refused in ["bad_cert_signature", "bad_signature", "chain_broken"] {
        assert!(!alerts.contains(refused), "{refused} in {alerts}");
    }
    // The collector binds a device id to the key that signed its journal: a new key ships
    // under a new device id (docs/provisioning.md, "A new identity key").
    let (ok, out) = init(
        &c,
        &tpm,
        "till-1b",
        t.dirs(),
        &token(&c, "till-1b"),
        new_key,
    );
    assert!(ok, "{out}");
    t.agent_ships();
    assert_eq!(lockout_counter(&tpm), 0);
}

#[test]
fn foreign_objects_are_never_used_tried_or_evicted_and_the_offered_handle_works() {
    let (c, _collector) = central();
    for (n, foreign) in [
        Foreign::PasswordP256,
        Foreign::DefaultP256,
        Foreign::RsaPrimary,
        Foreign::RsaAtSrk,
    ]
    .into_iter()
    .enumerate()
    {
        let tpm = Swtpm::start().unwrap();
        foreign.plant(&tpm);
        let planted = public_area(&tpm, foreign.handle());
        let da = lockout_counter(&tpm);
        let t = Terminal::new();
        let device = format!("till-f{n}");
        let tok = token(&c, &device);
        let (option, free) = foreign.advice();
        // Reruns, forced or not, never try the object's authorisation nor evict it.
        for extra in [&[][..], &[], &[], &["--force"]] {
            let (ok, out) = init(&c, &tpm, &device, t.dirs(), &tok, extra);
            assert!(!ok, "{foreign:?}: {out}");
            assert!(
                out.contains(&format!(
                    "handle {} holds an object posguard did not create",
                    foreign.handle()
                )) && out.contains(&format!("{option} {free}"))
                    && out.contains(&format!("--evict-foreign {}", foreign.handle())),
                "{foreign:?}: {out}"
            );
            assert!(!t.etc.join("agent.toml").exists());
            assert_eq!(
                lockout_counter(&tpm),
                da,
                "{foreign:?}: a DA failure was counted"
            );
            assert_eq!(public_area(&tpm, foreign.handle()), planted, "{foreign:?}");
        }
        // Doing what the message says works, and leaves the other object alone.
        let (ok, out) = init(&c, &tpm, &device, t.dirs(), &tok, &[option, free]);
        assert!(ok, "{foreign:?}: {out}");
        let config = std::fs::read_to_string(t.etc.join("agent.toml")).unwrap();
        let key = option.trim_start_matches("--").replace('-', "_");
        assert!(config.contains(&format!("{key} = {free}")), "{config}");
        assert_eq!(public_area(&tpm, foreign.handle()), planted, "{foreign:?}");
        assert_eq!(lockout_counter(&tpm), da, "{foreign:?}");
        // status reads the handles from agent.toml.
        let (ok, out) = run(command("posguard-provision")
            .args(["status", "--tcti", &tpm.tcti(), "--config-dir"])
            .arg(&t.etc));
        assert!(out.contains("fingerprint"), "{foreign:?}: {ok} {out}");
        // The agent finds its key at the written handle and ships with it; decommissioning
        // (handles from agent.toml too) evicts posguard's key and leaves the other object.
        let agent = t.shipping_agent();
        let (ok, out) = run(command("posguard-provision")
            .args([
                "decommission",
                "--yes",
                "--tcti",
                &tpm.tcti(),
                "--config-dir",
            ])
            .arg(&t.etc)
            .arg("--state-dir")
            .arg(&t.state)
            .arg("--socket")
            .arg(t.state.join("agent.sock")));
        assert!(ok, "{foreign:?}: {out}");
        drop(agent);
        assert_eq!(public_area(&tpm, foreign.handle()), planted, "{foreign:?}");
        if let Foreign::RsaAtSrk = foreign {
            assert!(
                !public_area(&tpm, IDENTITY).contains("name:"),
                "{foreign:?}"
            );
        } else {
            assert!(
                !public_area(&tpm, free).contains("name:"),
                "{foreign:?}: {free} evicted"
            );
        }
        if let Foreign::PasswordP256 = foreign {
            // The counter does see a wrong password on that key: the checks above could fail.
            let msg = t.etc.join("msg");
            std::fs::write(&msg, b"m").unwrap();
            let sig = t.etc.join("sig").to_str().unwrap().to_owned();
            let out = tpm
                .tpm2(
                    "tpm2_sign",
                    &[
                        "-c",
                        IDENTITY,
                        "-p",
                        "guess",
                        "-o",
                        &sig,
                        msg.to_str().unwrap(),
                    ],
                )
                .unwrap();
            assert!(!out.status.success());
            assert_eq!(lockout_counter(&tpm), da + 1);
        }
    }
}

#[test]
fn only_a_named_handle_is_evicted_and_the_output_names_what() {
    let (c, _collector) = central();
    let tpm = Swtpm::start().unwrap();
    Foreign::PasswordP256.plant(&tpm);
    let planted = public_area(&tpm, IDENTITY);
    let t = Terminal::new();
    let tok = token(&c, "till-e");

    // A handle posguard does not use is refused, and nothing is evicted.
    let (ok, out) = init(
        &c,
        &tpm,
        "till-e",
        t.dirs(),
        &tok,
        &["--evict-foreign", "0x81010005"],
    );
    assert!(
        !ok && out.contains("evicts only at the handles it is configured to use"),
        "{out}"
    );
    assert_eq!(public_area(&tpm, IDENTITY), planted);

    // The named handle: evicted, and the output says what it held.
    let (ok, out) = init(
        &c,
        &tpm,
        "till-e",
        t.dirs(),
        &tok,
        &["--evict-foreign", IDENTITY],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("evicted, as named by --evict-foreign: ECC NistP256 key, sign, dictionary-attack protected"),
        "{out}"
    );
    assert_ne!(public_area(&tpm, IDENTITY), planted);
    assert_eq!(lockout_counter(&tpm), 0);

    // A forced rerun naming it again keeps posguard's own key there until enrolled.
    let (ok, out) = init(
        &c,
        &tpm,
        "till-e",
        t.dirs(),
        &"ab".repeat(32),
        &["--force", "--evict-foreign", IDENTITY],
    );
    assert!(
        !ok && out.contains("posguard's own object is there; kept"),
        "{out}"
    );
    assert!(out.contains("nothing on this terminal changed"), "{out}");
    t.agent_ships();
}

#[test]
fn another_applications_counter_at_the_counter_index_is_not_adopted() {
    let (c, _collector) = central();
    let tpm = Swtpm::start().unwrap();
    let index = "0x01005047";
    // An 8-byte counter with its own password, dictionary-attack protected.
    tpm2_ok(
        &tpm,
        "tpm2_nvdefine",
        &[
            index,
            "-C",
            "o",
            "-s",
            "8",
            "-p",
            "another-apps-secret",
            "-a",
            "nt=counter|ownerread|ownerwrite|authread|authwrite",
        ],
    );
    let planted = String::from_utf8_lossy(&tpm.tpm2("tpm2_nvreadpublic", &[index]).unwrap().stdout)
        .into_owned();
    let t = Terminal::new();
    let (ok, out) = init(&c, &tpm, "till-n", t.dirs(), &token(&c, "till-n"), &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "handle {index} holds an object posguard did not create"
        )) && out.contains("--counter-index 0x01005048"),
        "{out}"
    );
    assert!(!t.etc.join("agent.toml").exists());
    // The counter step comes after enrollment today: the rerun needs a new token.
    let (ok, out) = init(
        &c,
        &tpm,
        "till-n",
        t.dirs(),
        &token(&c, "till-n"),
        &["--counter-index", "0x01005048"],
    );
    assert!(ok, "{out}");
    let config = std::fs::read_to_string(t.etc.join("agent.toml")).unwrap();
    assert!(config.contains("counter_index = 0x01005048"), "{config}");
    t.agent_ships();
    let now = String::from_utf8_lossy(&tpm.tpm2("tpm2_nvreadpublic", &[index]).unwrap().stdout)
        .into_owned();
    assert_eq!(now, planted, "the other counter is untouched");
    assert_eq!(lockout_counter(&tpm), 0);
}
