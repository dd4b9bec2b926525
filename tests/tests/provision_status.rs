//! `posguard-provision status` says what is broken, with the real binaries: a provisioned
//! terminal (swtpm behind tpm2-abrmd so that the agent and the tool share it), its agent and a
//! real collector. All checks pass when all is well; then, one fault at a time, the check that
//! names the fault fails with its own words and the others keep their verdict:
//! unreachable collector, a service that is not a collector, a collector name that does not
//! match, a certificate for another key, the agent stopped, a revoked certificate, and the TPM
//! in lockout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use posguard_e2e::provision_agent::{Central, SharedTpm, Terminal, force_lockout, run};
use posguard_e2e::{AgentProcess, command, free_port};
use serde_json::Value;

fn status(t: &Terminal, tpm: &SharedTpm) -> (bool, Value) {
    let (ok, out) = run(command("posguard-provision")
        .args(["status", "--json", "--tcti", &tpm.tcti(), "--config-dir"])
        .arg(&t.etc)
        .envs(tpm.env()));
    let start = out.find('{').expect("a JSON report");
    let end = out.rfind('}').expect("a JSON report");
    let report: Value = serde_json::from_str(&out[start..=end]).unwrap();
    assert_eq!(report["ok"], ok, "{report:#}");
    (ok, report)
}

/// The failed steps as (name, detail).
fn failed(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Asserts that exactly the steps named in `expected` fail, each with its words.
fn expect(report: &Value, expected: &[(&str, &str)]) {
    let got = failed(report);
    assert_eq!(got.len(), expected.len(), "{report:#}");
    for ((name, detail), (want_name, want_words)) in got.iter().zip(expected) {
        assert!(name.contains(want_name), "{name} / {want_name}: {report:#}");
        assert!(detail.contains(want_words), "{detail} / {want_words}");
    }
}

/// A TCP service that answers every connection with a plain HTTP response (not a collector).
fn not_a_collector() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
        }
    });
    port
}

#[test]
fn each_check_fails_for_what_its_name_says() {
    let (central, _collector) = Central::start();
    let tpm = SharedTpm::start();
    let t = Terminal::new();
    t.init(&central, "till-5", &tpm.tcti(), &tpm.env());
    let owned = tpm.env();
    let env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let agent = AgentProcess::start_with_env(&t.config(), &t.socket(), &env);

    let (ok, report) = status(&t, &tpm);
    assert!(ok, "{report:#}");
    let text = report.to_string();
    assert!(
        text.contains("accepted this certificate and TPM key"),
        "{report:#}"
    );

    // Faults in the configuration, one at a time.
    let good = std::fs::read_to_string(t.config()).unwrap();
    let here = format!("127.0.0.1:{}", central.port);
    let mtls = "collector accepts this terminal";
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace(&here, &format!("127.0.0.1:{}", free_port())),
            "unreachable",
        ),
        (
            good.replace(&here, &format!("127.0.0.1:{}", not_a_collector())),
            "wrong service",
        ),
        (
            good.replace(
                "server_name = \"localhost\"",
                "server_name = \"collector.example\"",
            ),
            "wrong service",
        ),
    ];
    for (config, words) in &cases {
        std::fs::write(t.config(), config).unwrap();
        let (ok, report) = status(&t, &tpm);
        assert!(!ok);
        expect(&report, &[(mtls, words)]);
    }
    std::fs::write(t.config(), &good).unwrap();

    // A certificate for another key (another terminal's): named as a key mismatch, and the
    // collector is not even tried.
    let cert = t.state.join("device.pem");
    let ours = std::fs::read(&cert).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["till-5".to_owned()])
        .unwrap()
        .self_signed(&other)
        .unwrap();
    std::fs::write(&cert, foreign.pem()).unwrap();
    let (_, report) = status(&t, &tpm);
    expect(
        &report,
        &[("certificate", "key mismatch"), (mtls, "not tried")],
    );
    std::fs::write(&cert, ours).unwrap();

    // The agent stopped.
    agent.stop();
    let (_, report) = status(&t, &tpm);
    expect(&report, &[("agent running", "not answering")]);
    let agent = AgentProcess::start_with_env(&t.config(), &t.socket(), &env);
    assert!(status(&t, &tpm).0);

    // Revoked by operations: the collector refuses the certificate (once it reloaded its CRL).
    let (ok, out) = run(command("posguard-collector")
        .args(["ca", "revoke", "--device", "till-5", "--config"])
        .arg(&central.config));
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (_, report) = status(&t, &tpm);
        if !failed(&report).iter().any(|(n, _)| n.contains(mtls)) {
            assert!(Instant::now() < deadline, "the revocation was never seen");
            // Polling until the collector has reloaded its CRL.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        break report;
    };
    let got = failed(&report);
    let mtls_line = got.iter().find(|(n, _)| n.contains(mtls)).unwrap();
    assert!(mtls_line.1.starts_with("revoked"), "{report:#}");

    // The TPM in lockout.
    drop(agent);
    let dir = tempfile::tempdir().unwrap();
    force_lockout(dir.path(), &|tool, args| tpm.tpm2(tool, args));
    let (_, report) = status(&t, &tpm);
    assert!(
        failed(&report)
            .iter()
            .any(|(n, d)| n.contains("lockout") && d.contains("lockout")),
        "{report:#}"
    );
}
