//! Crash test of the audit journal: a driver process (`examples/journal_crash_driver.rs`)
//! appends from 8 threads and is killed with SIGKILL at random moments, over and over, on the
//! same journal directory — with the software backend and with a TPM (one swtpm for the whole
//! test). Every append the driver saw acknowledged must survive, the journal must verify
//! offline, and the next start must pass the agent's start-up check without a finding.
//!
//! The driver is an example, built on demand (`support/example_driver.rs`) when missing or
//! older than the agent library, so `cargo test --test journal_crash` alone works too.
//! `POSGUARD_CRASH_DRIVER` overrides its path,
//! `POSGUARD_CRASH_SEED` replays a seed printed by an earlier run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "support/example_driver.rs"]
mod example_driver;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use posguard_agent::journal::verify_dir;
use posguard_hal::testing::Swtpm;
use posguard_hal::{KeyMode, SecureElementConfig};

const SOFTWARE_RUNS: usize = 30;
const TPM_RUNS: usize = 20;
/// How long a driver may take to open the journal and acknowledge its first append.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Kills on one journal directory before the next starts afresh. Every start scans and verifies
/// the whole journal (about 0.3 ms a record in a debug build), so one ever-growing journal
/// would make the test quadratic. Each generation ends with a full offline verification and a
/// clean start; every kill within it is checked cheaply by the next start (`open <head>`, no
/// finding).
const GENERATION: usize = 10;
const DEVICE: &str = "term-crash-01";

/// xorshift64* — small, seedable, good enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Log-uniform in `lo..hi` milliseconds: as many kills in 20–50 ms as in 120–300 ms.
    fn delay(&mut self, lo: u64, hi: u64) -> Duration {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let ms = lo as f64 * (hi as f64 / lo as f64).powf(u);
        Duration::from_micros((ms * 1000.0) as u64)
    }
}

fn seed() -> u64 {
    if let Ok(s) = std::env::var("POSGUARD_CRASH_SEED") {
        return s.trim().parse().expect("POSGUARD_CRASH_SEED must be a u64");
    }
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// `target/<profile>/examples/journal_crash_driver`, built on demand when missing or stale.
fn driver_path() -> PathBuf {
    example_driver::driver("journal_crash_driver", "POSGUARD_CRASH_DRIVER")
}

enum Backend<'a> {
    Software(&'a Path),
    Tpm(&'a Swtpm),
}

impl Backend<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backend::Software(_) => "software",
            Backend::Tpm(_) => "tpm",
        }
    }

    fn se_config(&self) -> SecureElementConfig {
        match self {
            Backend::Software(keys) => SecureElementConfig::software(*keys),
            Backend::Tpm(t) => t.config(),
        }
    }

    fn args(&self, cmd: &mut Command) {
        match self {
            Backend::Software(keys) => cmd.arg("--keys").arg(keys),
            Backend::Tpm(t) => cmd.arg("--tcti").arg(t.tcti()),
        };
    }
}

/// One line of the driver's protocol.
enum Line {
    Open(u64),
    Ack(u64),
    Finding(String),
    Error(String),
    Other(String),
}

fn parse(line: &str) -> Line {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "open" => rest
            .parse()
            .map(Line::Open)
            .unwrap_or_else(|_| Line::Other(line.to_owned())),
        "ack" => rest
            .parse()
            .map(Line::Ack)
            .unwrap_or_else(|_| Line::Other(line.to_owned())),
        "finding" => Line::Finding(rest.to_owned()),
        "error" => Line::Error(rest.to_owned()),
        _ => Line::Other(line.to_owned()),
    }
}

/// What one driver run printed before it died.
#[derive(Default)]
struct RunOutput {
    opened: Option<u64>,
    acked: Vec<u64>,
    findings: Vec<String>,
    errors: Vec<String>,
    other: Vec<String>,
    stderr: String,
}

struct Run {
    child: Child,
    lines: mpsc::Receiver<Line>,
    reader: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

fn start(driver: &Path, backend: &Backend<'_>, journal: &Path) -> Run {
    let mut cmd = Command::new(driver);
    cmd.arg("--dir").arg(journal).arg("--device-id").arg(DEVICE);
    backend.args(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = String::new();
        loop {
            buf.clear();
            match r.read_line(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // A line cut short by the kill was never acknowledged to anyone: ignore it.
            let Some(line) = buf.strip_suffix('\n') else {
                return;
            };
            if tx.send(parse(line)).is_err() {
                return;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    Run {
        child,
        lines,
        reader,
        stderr,
    }
}

fn record(out: &mut RunOutput, line: Line) {
    match line {
        Line::Open(h) => out.opened = Some(h),
        Line::Ack(s) => out.acked.push(s),
        Line::Finding(f) => out.findings.push(f),
        Line::Error(e) => out.errors.push(e),
        Line::Other(o) => out.other.push(o),
    }
}

/// Runs the driver once: waits for its first acknowledged append (or, for an early kill, just
/// for `delay`), waits `delay` more, SIGKILLs it, reaps it and collects everything it printed.
fn run_once(
    driver: &Path,
    backend: &Backend<'_>,
    journal: &Path,
    early: bool,
    delay: Duration,
) -> RunOutput {
    let mut run = start(driver, backend, journal);
    let mut out = RunOutput::default();
    if !early {
        let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match run.lines.recv_timeout(left) {
                Ok(line) => {
                    let is_ack = matches!(line, Line::Ack(_));
                    record(&mut out, line);
                    if is_ack {
                        break;
                    }
                }
                Err(e) => {
                    // Timed out, or the driver died on its own: either is a failure.
                    let _ = run.child.kill();
                    let status = run.child.wait();
                    let stderr = run.stderr.join().unwrap_or_default();
                    panic!(
                        "{} driver gave no ack ({e:?}; status {status:?}); stdout: {:?} {:?} {:?}; stderr:\n{stderr}",
                        backend.name(),
                        out.findings,
                        out.errors,
                        out.other
                    );
                }
            }
        }
    }
    std::thread::sleep(delay);
    let alive = run.child.try_wait().unwrap().is_none();
    run.child.kill().unwrap();
    let status = run.child.wait().unwrap();
    run.reader.join().unwrap();
    for line in run.lines.try_iter() {
        record(&mut out, line);
    }
    out.stderr = run.stderr.join().unwrap_or_default();
    assert!(
        alive,
        "{} driver exited on its own ({status}) before the kill; errors {:?}, other {:?}; stderr:\n{}",
        backend.name(),
        out.errors,
        out.other,
        out.stderr
    );
    out
}

/// Offline verification: no bad record, every acknowledged seq stored.
fn verify(journal: &Path, acked: &BTreeSet<u64>, what: &str) -> u64 {
    let report = verify_dir(journal, None)
        .unwrap_or_else(|e| panic!("{what}: verify_dir({}) failed: {e}", journal.display()));
    assert_eq!(
        report.first_bad, None,
        "{what}: the journal does not verify offline: {report:?}"
    );
    if let (Some(&min), Some(&max)) = (acked.first(), acked.last()) {
        let first = report
            .first_seq
            .unwrap_or_else(|| panic!("{what}: no records stored; acked {min}..={max}"));
        assert!(
            first <= min,
            "{what}: acknowledged seq {min} is before the first stored record {first}"
        );
        assert!(
            report.head_seq >= max,
            "{what}: acknowledged seq {max} is after the head {} — an acknowledged record was lost",
            report.head_seq
        );
        assert_eq!(
            report.records,
            report.head_seq - first + 1,
            "{what}: records {first}..={} are not all stored: {report:?}",
            report.head_seq
        );
    }
    report.head_seq
}

/// Kills the driver `runs` times, [`GENERATION`] kills per journal directory under `base`, and
/// checks after every kill.
fn crash_loop(driver: &Path, backend: &Backend<'_>, base: &Path, runs: usize, rng: &mut Rng) {
    let started = Instant::now();
    let (mut early_kills, mut total_acked) = (0usize, 0usize);
    let mut generation = 0usize;
    let mut done = 0usize;
    while done < runs {
        let n = GENERATION.min(runs - done);
        let journal = base.join(format!("journal-{generation}"));
        let (acked, early) = generation_loop(driver, backend, &journal, generation, n, rng);
        early_kills += early;
        total_acked += acked;
        done += n;
        generation += 1;
    }
    println!(
        "{}: {runs} kills ({early_kills} early) on {generation} journal directories, \
         {total_acked} acknowledged appends, all present; {:.1} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
}

/// `runs` kills on one journal directory; returns (acknowledged appends, early kills).
fn generation_loop(
    driver: &Path,
    backend: &Backend<'_>,
    journal: &Path,
    generation: usize,
    runs: usize,
    rng: &mut Rng,
) -> (usize, usize) {
    let mut acked = BTreeSet::new();
    let mut early_kills = 0usize;
    let mut max_acked = 0u64;
    for i in 0..runs {
        // One run in five is killed at a random moment from its start (during the start-up
        // check, the journal key's certificate or the first checkpoint); the others once
        // appends are flowing.
        let early = i > 0 && rng.range(0, 4) == 0;
        let delay = rng.delay(20, 300);
        let what = format!(
            "{} journal {generation} run {i} ({} kill after {delay:?})",
            backend.name(),
            if early { "early" } else { "post-ack" }
        );
        let out = run_once(driver, backend, journal, early, delay);
        early_kills += usize::from(early);
        assert!(
            out.findings.is_empty(),
            "{what}: the start-up check reported a finding after the previous kill: {:?}; stderr:\n{}",
            out.findings,
            out.stderr
        );
        assert!(
            out.errors.is_empty() && out.other.is_empty(),
            "{what}: driver errors {:?}, unexpected output {:?}; stderr:\n{}",
            out.errors,
            out.other,
            out.stderr
        );
        if let Some(head) = out.opened {
            // Cheap check of the previous kill: the start-up check kept every acknowledged record.
            assert!(
                head >= max_acked,
                "{what}: opened at head {head}, but seq {max_acked} was acknowledged before the previous kill"
            );
        }
        for &seq in &out.acked {
            assert!(
                out.opened.is_some_and(|h| seq > h),
                "{what}: ack {seq} not after the head {:?} the journal opened at",
                out.opened
            );
            assert!(acked.insert(seq), "{what}: seq {seq} acknowledged twice");
            max_acked = max_acked.max(seq);
        }
    }
    let what = format!("{} journal {generation} after {runs} kills", backend.name());
    let head = verify(journal, &acked, &what);
    // The last kill passes the start-up check too (which, unlike the offline verification,
    // compares the last checkpoint with the TPM counter), at the head verified offline.
    let last = run_once(driver, backend, journal, false, Duration::from_millis(20));
    assert!(
        last.findings.is_empty(),
        "{what}: the start-up check reported a finding: {:?}; stderr:\n{}",
        last.findings,
        last.stderr
    );
    assert_eq!(
        last.opened,
        Some(head),
        "{what}: the journal opened at another head than verified offline"
    );
    (acked.len(), early_kills)
}

#[test]
fn sigkill_never_loses_an_acknowledged_append_nor_trips_the_startup_check() {
    let driver = driver_path();
    let seed = seed();
    println!("journal crash test seed {seed} (replay with POSGUARD_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);

    let soft = tempfile::tempdir().unwrap();
    let keys = soft.path().join("keys");
    posguard_hal::open(&SecureElementConfig::software(&keys))
        .unwrap()
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .unwrap();
    let backend = Backend::Software(&keys);
    crash_loop(&driver, &backend, soft.path(), SOFTWARE_RUNS, &mut rng);

    // One swtpm for all runs. It serves one client at a time: every driver is reaped before the
    // next starts, and this provisioning connection is closed (dropped) before the first.
    let tpm = Swtpm::start().unwrap();
    {
        let backend = Backend::Tpm(&tpm);
        let se = posguard_hal::open(&backend.se_config()).unwrap();
        se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    crash_loop(&driver, &Backend::Tpm(&tpm), dir.path(), TPM_RUNS, &mut rng);
}
