//! The agent binary on a software TPM, driven through its real Unix socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use posguard_e2e::AgentProcess;
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

struct Terminal {
    _tpm: Swtpm,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

fn terminal(extra: &str) -> Terminal {
    let tpm = Swtpm::start().unwrap();
    posguard_hal::open(&tpm.config())
        .unwrap()
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let config = dir.path().join("agent.toml");
    // Short by default so the stalled-connection test is quick; a test may set its own.
    let idle = if extra.contains("idle_timeout_secs") {
        ""
    } else {
        "idle_timeout_secs = 2\n"
    };
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"term-0042\"\n\n[secure_element]\ntcti = \"{}\"\n\n[journal]\ndir = \"{}\"\n\n[storage]\ndir = \"{}\"\n\n[api]\nsocket = \"{}\"\nmax_connections = 32\n{idle}{extra}",
            tpm.tcti(),
            dir.path().join("journal").display(),
            dir.path().join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    Terminal {
        _tpm: tpm,
        dir,
        config,
        socket,
    }
}

fn connect(socket: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn roundtrip(r: &mut BufReader<UnixStream>, w: &mut UnixStream, line: &[u8]) -> Value {
    // A refused peer (uid not allowed, too many connections) gets its answer and the close at
    // once, maybe before this write: the write may then fail (EPIPE) while the answer is still
    // there to read, so the read decides.
    let _ = w.write_all(&[line, b"\n"].concat());
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let (mut r, mut w) = connect(socket);
    roundtrip(
        &mut r,
        &mut w,
        json!({"v": 1, "id": 1, "method": method, "params": params})
            .to_string()
            .as_bytes(),
    )
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn status_and_business_events_reach_the_signed_journal() {
    let t = terminal("");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let status = call(&t.socket, "status", json!({}));
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["result"]["device_id"], "term-0042");
    assert_eq!(status["result"]["condition"], "ok");
    assert_eq!(status["result"]["secure_element"]["backend"], "tpm");

    let rec = call(
        &t.socket,
        "audit.record",
        json!({"action": "refund", "amount_minor": 1299, "currency": "EUR", "reference": "receipt R-77"}),
    );
    assert_eq!(rec["ok"], true, "{rec}");
    let seq = rec["result"]["seq"].as_u64().unwrap();
    let card = call(
        &t.socket,
        "audit.record",
        json!({"action": "refund", "reference": "card 4111 1111 1111 1111"}),
    );
    assert_eq!(code(&card), "card_data", "{card}");
    assert!(
        !card.to_string().contains("4111"),
        "the number is not echoed: {card}"
    );

    assert!(agent.stop().success());
    let report = posguard_agent::journal::verify_dir(&t.dir.path().join("journal"), None).unwrap();
    assert_eq!(report.first_bad, None);
    assert!(
        report.head_seq > seq,
        "agent stop is journaled after the refund"
    );
}

#[test]
fn bad_input_gets_typed_errors_and_the_agent_keeps_serving() {
    let t = terminal("");
    let mut agent = AgentProcess::start(&t.config, &t.socket);
    let (mut r, mut w) = connect(&t.socket);
    let cases: [(&[u8], &str); 6] = [
        (b"{not json", "bad_json"),
        (br#"{"v":1,"id":2,"method":"no.such.method"}"#, "unknown_method"),
        (br#"{"v":1,"id":3,"method":"audit.record","params":{"action":5}}"#, "bad_params"),
        (br#"{"v":1,"id":4,"method":"audit.record","params":{"action":"refund","amount_minor":"x","currency":"EUR"}}"#, "bad_params"),
        (br#"{"v":9,"id":5,"method":"status"}"#, "unsupported_version"),
        (br#"[1,2,3]"#, "bad_json"),
    ];
    for (line, expected) in cases {
        let answer = roundtrip(&mut r, &mut w, line);
        assert_eq!(
            code(&answer),
            expected,
            "{}: {answer}",
            String::from_utf8_lossy(line)
        );
    }
    // The same connection still works.
    let ok = roundtrip(&mut r, &mut w, br#"{"v":1,"id":"x","method":"status"}"#);
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["id"], "x");

    // An oversized line is refused and that connection closed.
    let (mut r2, mut w2) = connect(&t.socket);
    let big = vec![b'a'; 70 * 1024];
    let _ = w2.write_all(&big);
    let mut answer = String::new();
    r2.read_line(&mut answer).unwrap();
    assert!(answer.contains("line_too_long"), "{answer}");

    // Half a line, then silence: closed after the idle timeout, nothing else affected.
    let (mut r3, mut w3) = connect(&t.socket);
    w3.write_all(br#"{"v":1,"id":1,"meth"#).unwrap();
    let mut rest = Vec::new();
    let n = r3.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "the stalled connection is closed without an answer");

    assert!(agent.is_running());
    assert_eq!(call(&t.socket, "status", json!({}))["ok"], true);
    assert!(agent.stop().success());
}

#[test]
fn a_thousand_connections_are_served_or_shed_and_others_keep_working() {
    // Idle timeout longer than the flood takes even on a loaded machine: the client below waits
    // through it.
    let t = terminal("idle_timeout_secs = 120\n");
    let mut agent = AgentProcess::start(&t.config, &t.socket);
    // A client already connected (and served) before the flood: it holds its slot throughout.
    let (mut keeper_r, mut keeper_w) = connect(&t.socket);
    let before = roundtrip(
        &mut keeper_r,
        &mut keeper_w,
        b"{\"v\":1,\"id\":1,\"method\":\"status\"}",
    );
    assert_eq!(before["ok"], true, "{before}");
    let mut conns = Vec::new();
    for _ in 0..1000 {
        conns.push(UnixStream::connect(&t.socket).unwrap());
    }
    let mut busy = 0;
    let mut served = 0;
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"{\"v\":1,\"id\":1,\"method\":\"status\"}\n");
    }
    for c in conns {
        let mut r = BufReader::new(c);
        let mut answer = String::new();
        let _ = r.read_line(&mut answer);
        if answer.contains("\"busy\"") {
            busy += 1;
        } else if answer.contains("\"ok\":true") {
            served += 1;
        }
    }
    // 32 slots, one held by the client connected before the flood.
    assert!(served >= 31, "served {served}");
    assert!(busy > 0, "excess connections are shed with a typed error");
    assert_eq!(served + busy, 1000, "every connection got an answer");
    assert!(agent.is_running());
    // The client that was there before the flood is still served. (A brand-new connection
    // right now could still be shed while the agent sees the thousand closes: not a failure.)
    let after = roundtrip(
        &mut keeper_r,
        &mut keeper_w,
        b"{\"v\":1,\"id\":2,\"method\":\"status\"}",
    );
    assert_eq!(after["ok"], true, "{after}");
    assert!(agent.stop().success());
}

#[test]
fn a_uid_not_on_the_allow_list_is_refused() {
    let t = terminal("allowed_uids = [4242]\n");
    let agent = AgentProcess::start(&t.config, &t.socket);
    let answer = call(&t.socket, "status", json!({}));
    assert_eq!(code(&answer), "forbidden", "{answer}");
    assert!(agent.stop().success());
}
