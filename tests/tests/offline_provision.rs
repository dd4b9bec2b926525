//! The offline path with the real binaries on a software TPM (issue 16, point 6): the terminal
//! writes a CSR, operations sign it with `posguard-collector ca sign-csr` (the checks of
//! enrollment, recorded in the enrollment history), `install-cert` refuses a chain of another
//! fleet, for another device, expired, not yet valid or for another key (nothing written, the
//! message says what to do), then installs the right one and writes the agent's configuration:
//! the agent starts and the collector acknowledges its batches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use posguard_e2e::central::{Central, device_chain, run};
use posguard_e2e::{AgentProcess, Fleet, agent_status, command};
use posguard_hal::testing::Swtpm;
use time::OffsetDateTime;

const ID: &str = "till-7";

struct Terminal {
    _dir: tempfile::TempDir,
    etc: PathBuf,
    state: PathBuf,
}

fn install(t: &Terminal, tpm: &Swtpm, c: &Central, chain: &Path, id: &str) -> (bool, String) {
    run(command("posguard-provision")
        .args(["install-cert", "--chain"])
        .arg(chain)
        .arg("--fleet-ca")
        .arg(c.fleet_ca())
        .args(["--device-id", id, "--collector", &c.addr()])
        .args(["--server-name", "localhost", "--config-dir"])
        .arg(&t.etc)
        .arg("--state-dir")
        .arg(&t.state)
        .arg("--socket")
        .arg(t.state.join("agent.sock"))
        .args(["--tcti", &tpm.tcti()]))
}

#[test]
fn offline_csr_signed_by_the_collector_installs_and_the_agent_ships() {
    let c = Central::start();
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Terminal {
        etc: dir.path().join("etc"),
        state: dir.path().join("state"),
        _dir: dir,
    };
    let work = tempfile::tempdir().unwrap();
    let csr = work.path().join("till-7.csr");

    let (ok, out) = run(command("posguard-provision")
        .args(["csr", "--device-id", ID, "--out"])
        .arg(&csr)
        .args(["--tcti", &tpm.tcti()]));
    assert!(ok, "{out}");

    // Operations sign it for the device it names, with the checks of enrollment: for another
    // device id it is refused, nothing is written, and the history records the refusal.
    let wrong_out = work.path().join("wrong.pem");
    let (ok, out) = c.cli(&[
        "ca",
        "sign-csr",
        "--csr",
        &csr.display().to_string(),
        "--device",
        "till-8",
        "--out",
        &wrong_out.display().to_string(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("wrong_device_id") && out.contains("posguard-provision csr"),
        "{out}"
    );
    assert!(!wrong_out.exists());
    let chain = work.path().join("till-7.chain.pem");
    let (ok, out) = c.cli(&[
        "ca",
        "sign-csr",
        "--csr",
        &csr.display().to_string(),
        "--device",
        ID,
        "--out",
        &chain.display().to_string(),
    ]);
    assert!(ok, "{out}");
    let signed: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or_default()).unwrap();
    assert_eq!(signed["device_id"], ID);
    // Never overwriting.
    let (ok, out) = c.cli(&[
        "ca",
        "sign-csr",
        "--csr",
        &csr.display().to_string(),
        "--device",
        ID,
        "--out",
        &chain.display().to_string(),
    ]);
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, history) = c.cli(&["enrollments", "--device", ID]);
    assert!(ok, "{history}");
    let kinds: Vec<(String, String)> = history
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("offline".to_owned(), "issued".to_owned())],
        "{history}"
    );

    // Chains install-cert must refuse, each with what to do; nothing is written for any.
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let other_fleet = Fleet::new("another fleet");
    let other_chain = work.path().join("other-fleet.pem");
    other_fleet.device_cert(
        posguard_hal::open(&posguard_hal::SecureElementConfig::tpm(tpm.tcti())).unwrap(),
        ID,
        &other_chain,
    );
    let issuer = c.issuer();
    let expired = work.path().join("expired.pem");
    device_chain(
        &issuer,
        &c.fleet_ca(),
        &tpm.tcti(),
        ID,
        (now - day * 40, now - day),
        &expired,
    );
    let future = work.path().join("future.pem");
    device_chain(
        &issuer,
        &c.fleet_ca(),
        &tpm.tcti(),
        ID,
        (now + day, now + day * 30),
        &future,
    );
    // A chain for another terminal's key (another TPM), for the right id and CA.
    let other_tpm = Swtpm::start().unwrap();
    let (ok, out) = run(command("posguard-provision")
        .args(["csr", "--device-id", ID, "--out"])
        .arg(work.path().join("other.csr"))
        .args(["--tcti", &other_tpm.tcti()]));
    assert!(ok, "{out}");
    let other_key = work.path().join("other-key.pem");
    device_chain(
        &issuer,
        &c.fleet_ca(),
        &other_tpm.tcti(),
        ID,
        (now - day, now + day * 30),
        &other_key,
    );
    drop(other_tpm);

    let refusals: [(&Path, &str, &[&str]); 5] = [
        (
            &other_chain,
            ID,
            &["not issued by the fleet CA", "ca sign-csr"],
        ),
        (
            &chain,
            "till-8",
            &[
                "is for device \"till-7\", not \"till-8\"",
                "--device till-8",
            ],
        ),
        (&expired, ID, &["expired at", "posguard-provision csr"]),
        (&future, ID, &["valid only from", "set the clock"]),
        (
            &other_key,
            ID,
            &[
                "not for this terminal's identity key",
                "posguard-provision csr",
            ],
        ),
    ];
    for (file, id, says) in refusals {
        let (ok, out) = install(&t, &tpm, &c, file, id);
        assert!(!ok, "{}: {out}", file.display());
        for s in says {
            assert!(out.contains(s), "{}: {s:?} not in {out}", file.display());
        }
        assert!(!t.etc.join("agent.toml").exists(), "{}", file.display());
        assert!(!t.state.join("device.pem").exists(), "{}", file.display());
    }

    // The right chain without --collector on an unconfigured terminal: bad usage (64).
    let out = command("posguard-provision")
        .args(["install-cert", "--chain"])
        .arg(&chain)
        .arg("--fleet-ca")
        .arg(c.fleet_ca())
        .args(["--device-id", ID, "--config-dir"])
        .arg(&t.etc)
        .arg("--state-dir")
        .arg(&t.state)
        .args(["--tcti", &tpm.tcti()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(text.contains("give --collector HOST:PORT"), "{text}");
    assert!(!t.etc.join("agent.toml").exists() && !t.state.join("device.pem").exists());

    // The right chain: installed, configuration written as init writes it.
    let (ok, out) = install(&t, &tpm, &c, &chain, ID);
    assert!(ok, "{out}");
    let config = std::fs::read_to_string(t.etc.join("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("id = \"{ID}\"")) && config.contains(&c.addr()),
        "{config}"
    );
    assert!(t.state.join("device.pem").is_file() && t.etc.join("fleet-ca.pem").is_file());

    // The terminal starts and ships: a batch is acknowledged by the collector.
    std::fs::write(
        t.etc.join("agent.toml"),
        format!("{config}heartbeat_secs = 1\n"),
    )
    .unwrap();
    let agent = AgentProcess::start(&t.etc.join("agent.toml"), &t.state.join("agent.sock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = agent_status(&agent.socket);
        if s["uplink"]["batches_acked"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no batch acknowledged: {}",
            s["uplink"]
        );
        // Polling interval while waiting for the acknowledgement.
        std::thread::sleep(Duration::from_millis(100));
    }
    let devices = c.devices();
    assert_eq!(devices[ID]["lifecycle"], "active", "{devices:?}");
    assert!(
        devices[ID]["highest_stored"].as_u64().unwrap() >= 1,
        "{devices:?}"
    );
    agent.stop();

    // On the provisioned terminal install-cert only replaces the certificate (an offline
    // renewal), and refuses a chain for another device id than the one configured.
    let (ok, out) = install(&t, &tpm, &c, &chain, ID);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "installed {}",
            t.state.join("device.pem").display()
        )),
        "{out}"
    );
    let after = std::fs::read_to_string(t.etc.join("agent.toml")).unwrap();
    assert_eq!(after, format!("{config}heartbeat_secs = 1\n"));
    let other_id = work.path().join("till-8.pem");
    device_chain(
        &issuer,
        &c.fleet_ca(),
        &tpm.tcti(),
        "till-8",
        (now - day, now + day),
        &other_id,
    );
    let (ok, out) = install(&t, &tpm, &c, &other_id, "till-8");
    assert!(!ok, "{out}");
    assert!(
        out.contains("is for device \"till-7\", not \"till-8\": decommission"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(t.etc.join("agent.toml")).unwrap(),
        after
    );
}
