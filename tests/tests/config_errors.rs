//! A bad configuration (exit 64) is logged at error priority, so that
//! `journalctl -u posguard-agent -p warning` (docs/operations.md) shows why the unit failed:
//! on stderr as an `ERROR` line when started by hand, and as a journald entry with
//! `PRIORITY=3` under systemd.
//!
//! The journald case runs the real binary with `INVOCATION_ID` set (what systemd gives a unit)
//! in a private mount namespace whose `/run/systemd/journal` is a scratch directory holding a
//! datagram socket bound by this test: the entries the binary sends are read back exactly as
//! journald would receive them. Mounting needs root, as CI runs the tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output};

use posguard_e2e::{bin, command};

const BAD_AGENT: &str = "[device]\nid = \"t-1\"\n[secure_element]\nidentity_handle = 0x01000000\n";
const BAD_COLLECTOR: &str = "listen = \"127.0.0.1:0\"\nno_such_key = 1\n";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        uid, "0",
        "this test mounts a scratch /run/systemd/journal and so needs root"
    );
}

/// Runs `program args…` as systemd would (INVOCATION_ID set, no terminal), with journald's
/// socket being ours; returns its output and every non-empty datagram it sent.
fn run_under_fake_journald(program: &Path, args: &[&str]) -> (Output, Vec<Entry>) {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(dir.path().join("socket")).unwrap();
    socket.set_nonblocking(true).unwrap();
    // A tmpfs over /run in the child's own namespace, so nothing of the host's /run changes.
    let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
mount --bind "$0" /run/systemd/journal
exec "$@""#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(dir.path())
        .arg(program)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    // The child has exited: whatever it sent is queued on the socket.
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv(&mut buf) {
            Ok(0) => continue, // journald's connectivity probe
            Ok(n) => entries.push(parse_entry(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the fake journald socket: {e}"),
        }
    }
    (out, entries)
}

/// One journal entry: its fields in order.
type Entry = Vec<(String, String)>;

/// Parses journald's native protocol: `KEY=value\n`, or `KEY\n`, a little-endian u64 length,
/// the value, `\n` (used by tracing-journald for every value that is not a plain number).
fn parse_entry(mut bytes: &[u8]) -> Entry {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let line_end = bytes.iter().position(|b| *b == b'\n').expect("field ends");
        let line = &bytes[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            let value = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            fields.push((key, value));
            bytes = &bytes[line_end + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &bytes[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            assert_eq!(
                rest[8 + len],
                b'\n',
                "binary field {key} ends with a newline"
            );
            fields.push((key, value));
            bytes = &rest[8 + len + 1..];
        }
    }
    fields
}

fn field<'a>(entry: &'a Entry, key: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The entry whose MESSAGE contains `needle`.
fn find_entry<'a>(entries: &'a [Entry], needle: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| field(e, "MESSAGE").is_some_and(|m| m.contains(needle)))
}

#[test]
fn agent_config_error_is_an_error_on_stderr_when_started_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, BAD_AGENT).unwrap();
    let out = command("posguard-agent")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("invalid configuration"))
        .unwrap_or_else(|| panic!("no line about the configuration: {stderr}"));
    assert!(line.contains("ERROR"), "not at error level: {line}");
    assert!(
        line.contains("secure_element.identity_handle"),
        "does not name the key: {line}"
    );
}

#[test]
fn agent_config_error_reaches_journald_at_priority_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, BAD_AGENT).unwrap();
    let path = path.to_str().unwrap();
    let (out, entries) =
        run_under_fake_journald(&bin("posguard-agent"), &["run", "--config", path]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let entry = find_entry(&entries, "invalid configuration")
        .unwrap_or_else(|| panic!("no journal entry about the configuration: {entries:?}"));
    assert_eq!(field(entry, "PRIORITY"), Some("3"), "{entry:?}");
    assert!(
        field(entry, "MESSAGE").is_some_and(|m| m.contains("secure_element.identity_handle")),
        "does not name the key: {entry:?}"
    );
    assert_eq!(
        field(entry, "SYSLOG_IDENTIFIER"),
        Some("posguard-agent"),
        "{entry:?}"
    );
    // Nothing about it on stdout, which systemd would record at info.
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[test]
fn collector_config_error_reaches_journald_at_priority_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, BAD_COLLECTOR).unwrap();
    let path = path.to_str().unwrap();
    let (out, entries) =
        run_under_fake_journald(&bin("posguard-collector"), &["serve", "--config", path]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let entry = find_entry(&entries, "no_such_key")
        .unwrap_or_else(|| panic!("no journal entry about the configuration: {entries:?}"));
    assert_eq!(field(entry, "PRIORITY"), Some("3"), "{entry:?}");
    assert_eq!(
        field(entry, "SYSLOG_IDENTIFIER"),
        Some("posguard-collector"),
        "{entry:?}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
}
