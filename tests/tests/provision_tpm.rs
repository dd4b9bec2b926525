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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use posguard_e2e::provision::{central, init, run, token};
use posguard_e2e::{AgentProcess, CollectorProcess, agent_status, command};
use posguard_hal::testing::Swtpm;

const IDENTITY: &str = "0x81010001";
const SRK: &str = "0x81000001";

/// A terminal's directories.
struct Terminal {
    _dir: tempfile::TempDir,
    etc: PathBuf,
    state: PathBuf,
}

impl Terminal {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
        Terminal {
            _dir: dir,
            etc,
            state,
        }
    }

    fn dirs(&self) -> (&Path, &Path) {
        (&self.etc, &self.state)
    }

    /// What a forced re-provisioning must not change when it fails.
    fn snapshot(&self, tpm: &Swtpm) -> (String, Vec<u8>, Vec<u8>, Vec<u8>) {
        (
            public_area(tpm, IDENTITY),
            std::fs::read(self.state.join("device.pem")).unwrap(),
            std::fs::read(self.etc.join("agent.toml")).unwrap(),
            std::fs::read(self.state.join("datakey.sealed")).unwrap(),
        )
    }

    /// Starts the real agent (heartbeat every second) and waits until the collector
    /// acknowledged a batch over mTLS with the TPM key: the identity works end to end.
    fn agent_ships(&self) {
        assert!(self.shipping_agent().stop().success());
    }

    /// [`Terminal::agent_ships`], leaving the agent running.
    fn shipping_agent(&self) -> AgentProcess {
        let config = self.etc.join("agent.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        if !text.contains("heartbeat_secs") {
            // [uplink] is the last section init writes.
            text.push_str("heartbeat_secs = 1\n");
            std::fs::write(&config, text).unwrap();
        }
        let socket = self.state.join("agent.sock");
        let agent = AgentProcess::start(&config, &socket);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = agent_status(&socket);
            if s["uplink"]["batches_acked"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "nothing acknowledged: {s}");
            // Polling interval while waiting for the first acknowledgement.
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }
}

/// `tpm2_readpublic` of a handle (its name and public area), or its error.
fn public_area(tpm: &Swtpm, handle: &str) -> String {
    let out = tpm.tpm2("tpm2_readpublic", &["-c", handle]).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// TPM2_PT_LOCKOUT_COUNTER: the dictionary-attack failures the TPM has counted.
fn lockout_counter(tpm: &Swtpm) -> u64 {
    let out = tpm.tpm2("tpm2_getcap", &["properties-variable"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("TPM2_PT_LOCKOUT_COUNTER"))
        .unwrap_or_else(|| panic!("no lockout counter in {text}"));
    let value = line.rsplit(':').next().unwrap().trim();
    u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
}

fn tpm2_ok(tpm: &Swtpm, tool: &str, args: &[&str]) {
    let out = tpm.tpm2(tool, args).unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What another application may have left at one of posguard's handles.
#[derive(Debug, Clone, Copy)]
enum Foreign {
    /// A P-256 signing key with a password and without noDA: each wrong password counts
    /// towards lockout. Its attributes are those posguard's key had minus noDA.
    PasswordP256,
    /// tpm2-tools' default P-256 key (sign and decrypt), no password.
    DefaultP256,
    /// An RSA storage primary.
    RsaPrimary,
    /// An RSA storage primary at the storage root key's handle.
    RsaAtSrk,
}

impl Foreign {
    fn handle(self) -> &'static str {
        match self {
            Foreign::RsaAtSrk => SRK,
            _ => IDENTITY,
        }
    }

    /// The option and free handle the refusal must offer.
    fn advice(self) -> (&'static str, &'static str) {
        match self {
            Foreign::RsaAtSrk => ("--srk-handle", "0x81000002"),
            _ => ("--identity-handle", "0x81010002"),
        }
    }

    fn plant(self, tpm: &Swtpm) {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let (primary, public, private, key) =
            (p("primary.ctx"), p("k.pub"), p("k.priv"), p("k.ctx"));
        match self {
            Foreign::RsaPrimary | Foreign::RsaAtSrk => {
                tpm2_ok(
                    tpm,
                    "tpm2_createprimary",
                    &["-C", "o", "-G", "rsa2048", "-c", &key],
                );
            }
            Foreign::PasswordP256 | Foreign::DefaultP256 => {
                tpm2_ok(
                    tpm,
                    "tpm2_createprimary",
                    &["-C", "o", "-G", "ecc256", "-c", &primary],
                );
                let mut args = vec![
                    "-C",
                    &primary,
                    "-G",
                    "ecc256:ecdsa-sha256",
                    "-u",
                    &public,
                    "-r",
                    &private,
                ];
                if let Foreign::PasswordP256 = self {
                    args.extend([
                        "-p",
                        "another-apps-secret",
                        "-a",
                        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                    ]);
                }
                tpm2_ok(tpm, "tpm2_create", &args);
                tpm.flush_after_kill().unwrap();
                tpm2_ok(
                    tpm,
                    "tpm2_load",
                    &["-C", &primary, "-u", &public, "-r", &private, "-c", &key],
                );
            }
        }
        tpm2_ok(
            tpm,
            "tpm2_evictcontrol",
            &["-C", "o", "-c", &key, self.handle()],
        );
        // tpm2-tools without a resource manager leave their transient objects loaded.
        tpm.flush_after_kill().unwrap();
    }
}

#[test]
fn a_forced_reprovisioning_keeps_the_working_identity_until_the_new_one_is_enrolled() {
    let (c, collector) = central();
    let tpm = Swtpm::start().unwrap();
    let t = Terminal::new();
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &token(&c, "till-1"), &[]);
    assert!(ok, "{out}");
    let before = t.snapshot(&tpm);

    // A refused token: the collector says no after the new key signed the CSR.
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &"ab".repeat(32), &["--force"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("invalid_token") && out.contains("nothing on this terminal changed"),
        "{out}"
    );
    assert!(out.contains(IDENTITY) && !out.contains("Replaced"), "{out}");
    assert_eq!(t.snapshot(&tpm), before, "{out}");

    // The collector is down: the request never arrives, so that token stays unused.
    let fresh = token(&c, "till-1");
    collector.kill();
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &fresh, &["--force"]);
    assert!(!ok, "{out}");
    assert!(out.contains("nothing on this terminal changed"), "{out}");
    assert_eq!(t.snapshot(&tpm), before, "{out}");
    let _collector = CollectorProcess::start(&c.config, c.port);

    // The real agent still starts and ships with the old identity (no DecryptError).
    t.agent_ships();

    // Enrollment succeeds: the old key is replaced, and the output names both keys.
    let (ok, out) = init(&c, &tpm, "till-1", t.dirs(), &fresh, &["--force"]);
    assert!(ok, "{out}");
    let after = t.snapshot(&tpm);
    assert_ne!(after.0, before.0, "a new key at {IDENTITY}");
    assert_ne!(after.1, before.1, "a new certificate");
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
    assert_eq!(lockout_counter(&tpm), 0);
}

/// The fingerprint `posguard-provision` prints for the key of a PEM certificate: SHA-256 of its
/// SubjectPublicKeyInfo, 8 bytes.
fn fingerprint(pem: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let bytes: Vec<String> = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    bytes.join(":")
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
