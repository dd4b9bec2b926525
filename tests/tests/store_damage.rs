//! Issue 15, points 2 and 3: no content of any of the agent's store files makes the agent or
//! `verify-journal` panic, hang or crash-loop, and a store found bad is moved aside byte for
//! byte as it was on disk.
//!
//! The sweep damages every store file of a real terminal (journal, clerk database, cache,
//! sealed data key) one case at a time — single flipped bytes in the header, across the body
//! and at the end, truncations, zero-fills — and after each case checks that
//! `posguardctl verify-journal` gives a documented verdict, that the real agent binary reaches
//! `serving` on one swtpm that lives through the sweep, that whatever it moved aside is what
//! was on disk, and that it stops cleanly with a journal that verifies.
//!
//! `POSGUARD_STORE_SWEEP_POINTS=<n>` (default 3) sets how many evenly spaced flips each file
//! gets besides the fixed header and end offsets (docs/journal.md has a larger run);
//! `POSGUARD_STORE_SWEEP_ONLY=journal|clerks|cache|datakey` damages one store only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use posguard_e2e::damage::{asides, damage, damages, target_file};
use posguard_e2e::{AgentProcess, agent_status, command};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

/// How long the agent may take to serve: the start-up probes have a 20 s deadline each.
const START_WAIT: Duration = Duration::from_secs(120);

struct Terminal {
    _tpm: Swtpm,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Terminal {
    fn new() -> Self {
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
                "[device]\nid = \"term-dmg\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
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

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    fn start(&self) -> AgentProcess {
        AgentProcess::start_within(&self.config, &self.socket, &[], START_WAIT)
    }
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        format!(
            "{}\n",
            json!({"v": 1, "id": 1, "method": method, "params": params})
        )
        .as_bytes(),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Gives every store content: journal records, a cache record, a clerk (enrolled when the
/// clerk database is empty) and a throttle state from a failed login. True if a clerk was
/// enrolled (the clerk database was empty).
fn populate(socket: &Path, round: u64) -> bool {
    posguard_e2e::append_business_events(socket, 2, 10, round);
    let put = call(
        socket,
        "cache.put",
        json!({"id": format!("sale-{round}"), "value_b64": "aGVsbG8gd29ybGQ=", "retention_secs": 3600}),
    );
    assert_eq!(put["ok"], true, "{put}");
    // Refused once a clerk exists (then an admin session is needed). Only a fresh clerk
    // database gets the failed login, so that the throttle's delays never build up.
    let enrolled = call(
        socket,
        "clerk.enroll",
        json!({"clerk": "first-admin", "role": "SuperAdmin", "secret": "correct horse 42"}),
    );
    if enrolled["ok"] == true {
        let login = call(
            socket,
            "login",
            json!({"clerk": "first-admin", "secret": "wrong horse 42"}),
        );
        assert_eq!(login["ok"], false, "{login}");
    }
    enrolled["ok"] == true
}

/// SHA-256 of every regular file under `path` (or of `path` itself), by relative name.
fn hashes(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if at.is_dir() {
            for e in std::fs::read_dir(at).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        } else if at.is_file() {
            let bytes = std::fs::read(at).unwrap();
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            out.insert(
                at.strip_prefix(root).unwrap().to_path_buf(),
                digest.as_ref().to_vec(),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(path, path, &mut out);
    out
}

/// Runs `posguardctl verify-journal` on `dir`; returns (exit code, stdout). The exit code is
/// one of the documented ones, with the matching verdict, or the test fails.
fn verify_journal(dir: &Path) -> (i32, String) {
    let out = command("posguardctl")
        .arg("verify-journal")
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "verify-journal died of a signal on {}: {stdout}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let verdict = match code {
        0 => "VERIFIED AND ANCHORED",
        1 => "FAILED: first bad record",
        2 => "VERIFIED, TAIL NOT ANCHORED",
        3 => "UNREADABLE:",
        other => panic!(
            "verify-journal exited {other} on {}: {stdout}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    assert!(
        stdout.contains(verdict),
        "exit {code} without its verdict: {stdout}"
    );
    (code, stdout)
}

#[test]
fn every_region_of_every_store_file_damaged_the_agent_still_serves() {
    let points = std::env::var("POSGUARD_STORE_SWEEP_POINTS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3u64);
    let t = Terminal::new();
    let state = t.dir.path().join("state");
    let agent = t.start();
    // A journal of several sled segments (128 KiB each): damage in the middle of a large log
    // is what makes sled 0.34 panic ("tried to serialize Uninitialized").
    posguard_e2e::append_business_events(&t.socket, 4, 500, 0);
    assert!(populate(&t.socket, 0));
    assert!(agent.stop().success());
    // Journal cases start from this large journal each time (a journal found bad is replaced
    // by a small fresh one). Put back, it is also older than the TPM counter: the agent then
    // finds a rollback, unless the damage made it unreadable first.
    let golden = t.dir.path().join("golden-journal");
    posguard_agent::storeguard::copy_dir(&t.journal(), &golden).unwrap();

    let stores: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        ("journal", t.journal(), vec!["conf", "db", "snap.*"]),
        ("clerks", state.join("auth"), vec!["conf", "db", "snap.*"]),
        ("cache", state.join("cache"), vec!["conf", "db", "snap.*"]),
        (
            "datakey",
            state.join("datakey.sealed"),
            vec!["datakey.sealed"],
        ),
    ];
    let started = Instant::now();
    let (mut cases, mut skipped, mut moved, mut verdicts) = (0u64, 0u64, 0u64, [0u64; 4]);
    let (mut round, mut crashed, mut recovered_events) = (0u64, 0u64, 0u64);
    let (mut t_verify, mut t_start, mut t_rest) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let only = std::env::var("POSGUARD_STORE_SWEEP_ONLY").ok();
    for (store_name, store, files) in &stores {
        if only.as_deref().is_some_and(|o| o != *store_name) {
            continue;
        }
        for file in files {
            for how in damages(points) {
                round += 1;
                let journal = *store_name == "journal";
                if target_file(if journal { &golden } else { store }, file).is_none() {
                    skipped += 1;
                    continue;
                }
                cases += 1;
                if journal {
                    std::fs::remove_dir_all(store).unwrap();
                    posguard_agent::storeguard::copy_dir(&golden, store).unwrap();
                }
                let path = target_file(store, file).unwrap();
                damage(&path, how, round);
                let found = hashes(store);
                let before = asides(store);
                let clock = Instant::now();
                if journal {
                    let (code, _) = verify_journal(store);
                    verdicts[usize::try_from(code).unwrap()] += 1;
                    assert_eq!(hashes(store), found, "verify-journal wrote to the evidence");
                }
                let what = format!("{store_name}/{file} {how:?} (case {round})");
                t_verify += clock.elapsed();
                let clock = Instant::now();
                let agent = t.start();
                let status = agent_status(&t.socket);
                assert!(status["condition"].is_string(), "{what}: {status}");
                if status.to_string().contains("crashed its reader") {
                    crashed += 1;
                }
                t_start += clock.elapsed();
                let clock = Instant::now();
                let after = asides(store);
                for aside in after.iter().filter(|a| !before.contains(a)) {
                    moved += 1;
                    assert_eq!(
                        hashes(aside),
                        found,
                        "{what}: {} is not what was on disk",
                        aside.display()
                    );
                    let condition = status["condition"].as_str().unwrap();
                    assert!(
                        condition.starts_with("tamper recovered"),
                        "{what}: moved aside but status says {condition}"
                    );
                    let reported = if journal {
                        status["journal"]["moved_to"].clone()
                    } else {
                        status["stores_recovered"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|r| r["store"] == *store_name)
                            .map(|r| r["moved_to"].clone())
                            .unwrap_or_default()
                    };
                    assert_eq!(
                        reported.as_str().map(PathBuf::from).as_ref(),
                        Some(aside),
                        "{what}: status does not name {}: {status}",
                        aside.display()
                    );
                    recovered_events += 1;
                }
                let fresh_clerks = populate(&t.socket, round);
                if *store_name == "clerks" && after.len() > before.len() {
                    // The runbook's way back: the first admin can be enrolled again.
                    assert!(
                        fresh_clerks,
                        "{what}: no clerk could be enrolled afterwards"
                    );
                }
                let exit = agent.stop();
                assert!(exit.success(), "{what}: the agent stopped with {exit}");
                let (code, out) = verify_journal(&t.journal());
                assert_eq!(code, 0, "{what}: the live journal does not verify: {out}");
                let new_asides: Vec<&PathBuf> =
                    after.iter().filter(|a| !before.contains(a)).collect();
                if !new_asides.is_empty() {
                    // The signed tamper event is in the journal, naming where the store went.
                    let events = posguard_agent::journal::read_events(&t.journal()).unwrap();
                    for aside in new_asides {
                        let shown = aside.display().to_string();
                        let named = events.iter().any(|(_, e)| {
                            let e = serde_json::to_string(e).unwrap();
                            // A journal put back is also a rollback: any finding will do.
                            e.contains("TamperRecovered")
                                && (journal || e.contains("UnreadableDatabase"))
                                && e.contains(&shown)
                        });
                        let tampers: Vec<String> = events
                            .iter()
                            .map(|(_, e)| serde_json::to_string(e).unwrap())
                            .filter(|e| e.contains("amper"))
                            .collect();
                        assert!(
                            named,
                            "{what}: no tamper_recovered event names {shown}: {tampers:?}"
                        );
                    }
                }
                t_rest += clock.elapsed();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store sweep: {cases} cases ({skipped} skipped: no such file), {moved} stores moved aside ({crashed} of them crashed sled in the probe; {recovered_events} named in status), verify-journal verdicts anchored/broken/unanchored-tail/unreadable {verdicts:?}, {secs:.1} s (verify of the damaged journal {:.1} s, agent start to serving {:.1} s, populate + stop + verify {:.1} s)",
        t_verify.as_secs_f64(),
        t_start.as_secs_f64(),
        t_rest.as_secs_f64()
    );
    assert!(cases >= 10, "only {cases} cases ran");
    assert!(
        moved > 0,
        "no damage was ever detected: the sweep tests nothing"
    );
}

#[test]
fn a_rolled_back_journal_is_moved_aside_byte_for_byte() {
    let t = Terminal::new();
    let agent = t.start();
    populate(&t.socket, 1);
    assert!(agent.stop().success());
    let old = t.dir.path().join("journal-copy");
    posguard_agent::storeguard::copy_dir(&t.journal(), &old).unwrap();
    let agent = t.start();
    populate(&t.socket, 2);
    assert!(agent.stop().success());
    // Put the older journal back: its last checkpoint is behind the TPM counter.
    std::fs::remove_dir_all(t.journal()).unwrap();
    posguard_agent::storeguard::copy_dir(&old, &t.journal()).unwrap();
    let found = hashes(&t.journal());
    let agent = t.start();
    let status = agent_status(&t.socket);
    let finding = status["journal"]["finding"].as_str().unwrap_or_default();
    assert!(finding.starts_with("rollback"), "{status}");
    let moved_to = PathBuf::from(status["journal"]["moved_to"].as_str().unwrap());
    assert_eq!(
        hashes(&moved_to),
        found,
        "the journal moved aside was written to"
    );
    assert!(agent.stop().success());
    assert_eq!(verify_journal(&t.journal()).0, 0);
    // The evidence still verifies up to where it was cut off.
    assert_eq!(verify_journal(&moved_to).0, 0);
}

#[test]
fn the_probe_of_the_real_binary_aborts_at_its_memory_limit() {
    // What a damaged length field asking for gigabytes meets: the probe's address-space
    // limit. Here the limit is set below what opening any store needs, so the real binary
    // must die of its allocation failure (SIGABRT, as with panic = "abort" in release), and
    // the same probe with the agent's limit must succeed.
    let t = Terminal::new();
    let agent = t.start();
    populate(&t.socket, 1);
    assert!(agent.stop().success());
    let copy = t.dir.path().join("probe-copy");
    let probe = |limit: u64| {
        std::fs::remove_dir_all(&copy).ok();
        posguard_agent::storeguard::copy_dir(&t.journal(), &copy).unwrap();
        command("posguard-agent")
            .arg(posguard_agent::storeguard::PROBE_ARG)
            .arg("journal")
            .arg(&copy)
            .arg(limit.to_string())
            .env("MALLOC_ARENA_MAX", "1")
            .output()
            .unwrap()
    };
    use std::os::unix::process::ExitStatusExt;
    let starved = probe(8 * 1024 * 1024);
    assert_eq!(starved.status.signal(), Some(6), "{starved:?}");
    let normal = probe(512 * 1024 * 1024);
    assert_eq!(normal.status.code(), Some(0), "{normal:?}");
}
