//! Issue 15, point 7: clear answers at the edges of the local API, with the real agent on a
//! software TPM and the real `posguardctl`: a refused client sees the agent's `forbidden` or
//! `busy` answer and what to do (never `Broken pipe`), every method refuses unknown fields, and
//! nothing unbounded or unchecked from a request is echoed back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use posguard_e2e::{AgentProcess, command};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

struct Terminal {
    _tpm: Swtpm,
    _dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

fn terminal(api: &str) -> Terminal {
    let tpm = Swtpm::start().unwrap();
    posguard_hal::open(&tpm.config())
        .unwrap()
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"term-edge\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n\
             [storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n{api}",
            tpm.tcti(),
            dir.path().join("journal").display(),
            dir.path().join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    Terminal {
        _tpm: tpm,
        _dir: dir,
        config,
        socket,
    }
}

/// One request line, one answer line (raw, so that its size can be checked).
fn raw_call(socket: &Path, line: &str) -> String {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    // An agent that refuses the connection (busy, forbidden) answers and closes before reading:
    // the write may then fail with EPIPE, and the answer is still there to read.
    let _ = w.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    answer
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let line = json!({"v": 1, "id": 1, "method": method, "params": params}).to_string();
    serde_json::from_str(&raw_call(socket, &line)).unwrap()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// `posguardctl status` against `socket`, `runs` times: its stderr each time (it must fail).
fn ctl_refusals(socket: &Path, runs: usize) -> Vec<String> {
    (0..runs)
        .map(|_| {
            let out = command("posguardctl")
                .arg("--socket")
                .arg(socket)
                .arg("status")
                .output()
                .unwrap();
            assert!(!out.status.success(), "a refused call must fail");
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .collect()
}

#[test]
fn posguardctl_shows_forbidden_and_what_to_do_never_broken_pipe() {
    // The test runs as root (uid 0), which is not on this list.
    let t = terminal("allowed_uids = [4242]\n");
    let agent = AgentProcess::start(&t.config, &t.socket);
    // The agent answers and closes before reading: whether posguardctl's write lands before the
    // close or fails with EPIPE is a race, so try it many times.
    for stderr in ctl_refusals(&t.socket, 25) {
        assert!(!stderr.contains("Broken pipe"), "{stderr}");
        assert!(stderr.contains("forbidden"), "{stderr}");
        assert!(stderr.contains("uid 0"), "names the uid: {stderr}");
        assert!(stderr.contains("allowed_uids"), "says what to do: {stderr}");
    }
    assert!(agent.stop().success());
}

/// The client library on a connection the agent has already refused and closed: its request
/// write fails with EPIPE every time, and it must still return the agent's answer.
fn refused_after_close(socket: &Path) -> posguard_agent::api::client::ClientError {
    let s = UnixStream::connect(socket).unwrap();
    // Write blanks (the agent never reads them) until the write fails: the agent has closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (&s).write_all(b" ").is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never closed"
        );
    }
    s.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::from_std(s).unwrap();
        let mut client = posguard_agent::api::client::Client::from_stream(stream);
        client.call("status", json!({})).await.unwrap_err()
    })
}

#[test]
fn the_client_reads_forbidden_even_when_its_write_fails() {
    let t = terminal("allowed_uids = [4242]\n");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let e = refused_after_close(&t.socket);
    assert!(e.to_string().starts_with("forbidden: uid 0 may not"), "{e}");
    assert!(e.hint().unwrap().contains("allowed_uids"), "{e:?}");
    assert!(agent.stop().success());
}

#[test]
fn posguardctl_shows_busy_at_the_connection_cap_and_what_to_do() {
    let t = terminal("max_connections = 2\nidle_timeout_secs = 120\n");
    let agent = AgentProcess::start(&t.config, &t.socket);
    // Hold both slots.
    let holders: Vec<_> = (0..2).map(|_| held_connection(&t.socket)).collect();
    for stderr in ctl_refusals(&t.socket, 25) {
        assert!(!stderr.contains("Broken pipe"), "{stderr}");
        assert!(stderr.contains("busy"), "{stderr}");
        assert!(stderr.contains("retry"), "says what to do: {stderr}");
    }
    let e = refused_after_close(&t.socket);
    assert!(e.to_string().starts_with("busy: "), "{e}");
    assert!(e.hint().unwrap().contains("retry"), "{e:?}");
    drop(holders);
    assert!(agent.stop().success());
}

/// Connects and is served once, so that the connection surely holds its slot.
fn held_connection(socket: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"{\"v\":1,\"id\":1,\"method\":\"status\"}\n")
        .unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    (r, w)
}

#[test]
fn one_process_cannot_take_every_connection_from_the_till() {
    let t = terminal(
        "max_connections = 10\nmax_connections_per_process = 4\nidle_timeout_secs = 120\n",
    );
    let agent = AgentProcess::start(&t.config, &t.socket);
    let held: Vec<_> = (0..4).map(|_| held_connection(&t.socket)).collect();
    // A fifth from this process is shed with its own reason …
    let answer = raw_call(&t.socket, r#"{"v":1,"id":1,"method":"status"}"#);
    assert!(
        answer.contains("\"busy\"") && answer.contains("max_connections_per_process"),
        "{answer}"
    );
    // … while another process (posguardctl) is served.
    let out = command("posguardctl")
        .arg("--socket")
        .arg(&t.socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A slot given back is this process's again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = raw_call(&t.socket, r#"{"v":1,"id":1,"method":"status"}"#);
        if answer.contains("\"ok\":true") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.stop().success());
}

#[test]
fn every_method_refuses_unknown_fields() {
    let t = terminal("");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let methods = posguard_agent::api::methods();
    assert!(methods.len() >= 20, "{methods:?}");
    for method in &methods {
        let answer = call(&t.socket, method, json!({"no_such_field": 1}));
        assert_eq!(code(&answer), "bad_params", "{method}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field `no_such_field`"),
            "{method}: {answer}"
        );
        // Parameters that are not an object are refused too (an array would otherwise fill a
        // struct's fields in order).
        let answer = call(&t.socket, method, json!(["a", "b"]));
        assert_eq!(code(&answer), "bad_params", "{method}: {answer}");
    }
    // Without parameters, or with an empty object, `status` answers.
    assert_eq!(call(&t.socket, "status", json!({}))["ok"], true);
    let answer = raw_call(&t.socket, r#"{"v":1,"id":1,"method":"status"}"#);
    assert!(answer.contains("\"ok\":true"), "{answer}");
    assert!(agent.stop().success());
}

#[test]
fn nothing_unbounded_or_unchecked_is_echoed() {
    let t = terminal("");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let card = "4111111111111111"; // Luhn-valid test card number
    let long = "m".repeat(10_000);
    for name in [long.as_str(), card, "4111 1111 1111 1111"] {
        let line = json!({"v": 1, "id": 1, "method": name}).to_string();
        let answer = raw_call(&t.socket, &line);
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(code(&v), "unknown_method", "{answer}");
        assert!(answer.len() < 300, "answer of {} bytes", answer.len());
        assert!(
            !answer.contains("mmmmmmmm") && !answer.contains("1111"),
            "{answer}"
        );
    }
    // A short, plain name is named back: it helps, and it cannot hold a secret.
    let v = call(&t.socket, "stauts", json!({}));
    assert_eq!(code(&v), "unknown_method");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stauts"),
        "{v}"
    );

    // Parameter errors: neither a card number given as a wrong-typed value or as a field name,
    // nor a long value, comes back.
    let bad = [
        json!({"action": "refund", "amount_minor": card, "currency": "EUR"}),
        json!({"action": "refund", card: 1}),
        json!({"action": "refund", "amount_minor": long, "currency": "EUR"}),
        json!({"action": 4_111_111_111_111_111u64}),
    ];
    for params in bad {
        let line = json!({"v": 1, "id": 1, "method": "audit.record", "params": params}).to_string();
        let answer = raw_call(&t.socket, &line);
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(code(&v), "bad_params", "{answer}");
        assert!(answer.len() < 400, "answer of {} bytes", answer.len());
        assert!(
            !answer.contains("1111") && !answer.contains("mmmmmmmm"),
            "{answer}"
        );
    }
    // A malformed request is not echoed either, nor an oversized id.
    for line in [
        json!({"v": 1, "id": 1, "method": card.parse::<u64>().unwrap()}).to_string(),
        json!({"v": 1, "id": long, "method": 5}).to_string(),
        json!({"v": 1, "id": card, "method": "status", card: 1}).to_string(),
    ] {
        let answer = raw_call(&t.socket, &line);
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(code(&v), "bad_json", "{answer}");
        assert!(answer.len() < 400, "answer of {} bytes", answer.len());
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("1111") && !message.contains("mmmmmmmm"),
            "{answer}"
        );
    }
    assert!(agent.stop().success());
}
