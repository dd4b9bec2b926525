//! Opening a sled store that may be damaged without letting the damage take the process down.
//!
//! sled 0.34 panics on some damaged databases (`tried to serialize Uninitialized`), and damaged
//! length fields can make a reader hang or allocate without bound. The release profile aborts
//! on panic, so `catch_unwind` cannot contain it. So a store is first opened, and every tree
//! read end to end, by a child process — this same binary re-executed with the hidden argument
//! [`PROBE_ARG`] — on a scratch copy, with a deadline and a memory limit ([`probe`]). Whatever
//! the child dies of (panic, abort, out of memory, killed at the deadline) the store counts as
//! unreadable, and the parent never opens it in place.
//!
//! Evidence is never written: a store found unreadable is renamed aside ([`move_aside`]), byte
//! for byte what was on disk, and only the scratch copy (which sled may rewrite while
//! recovering) is ever opened.
//!
//! The binaries call [`enable_self_exec`] and [`run_probe_if_asked`] first thing in `main`.
//! Without that (library tests, examples) the probe runs in-process under `catch_unwind`,
//! which contains a panic in debug builds only.

mod child;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use child::run_probe_if_asked;

/// The hidden first argument that makes a posguard binary probe a store and exit.
pub const PROBE_ARG: &str = "__posguard-probe-store";

/// Exit code of a probe that opened and read the store.
const PROBE_OK: i32 = 0;
/// Exit code of a probe whose store sled refused with an error (no crash).
const PROBE_REFUSED: i32 = 3;

/// How long a probe may take. Reading a full 64 MiB journal takes seconds at most; a damaged
/// store that makes sled spin is cut off here. Three probes at their deadline still fit in
/// the unit's `TimeoutStartSec=60s`, and each store cut off is moved aside before the next
/// probe starts, so even a start that systemd times out makes progress.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

/// The probe's address-space limit: well above what opening any of the agent's stores needs
/// (a debug build opens an empty journal within 128 MiB; the page caches are a few MiB), well
/// below what a damaged length field can ask for, and half the RAM of a small terminal.
const PROBE_ADDRESS_SPACE: u64 = 512 * 1024 * 1024;

/// Most bytes of the child's error output kept for the report.
const PROBE_MESSAGE_MAX: u64 = 4096;
/// What the probe prints on stdout once it runs, before it touches the store: a child that
/// ends without it never reached the store (it could not start, its loader or environment
/// failed), and that says nothing about the store.
const PROBE_READY: &str = "posguard-probe-ready";

static SELF_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Which of the agent's sled stores: each is opened with the configuration it was created with
/// (sled refuses another segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The audit journal.
    Journal,
    /// The clerk database (`<state>/auth`).
    Clerks,
    /// The transaction cache.
    Cache,
}

impl StoreKind {
    /// The short code naming the store in events and on the command line.
    pub fn code(self) -> &'static str {
        match self {
            StoreKind::Journal => "journal",
            StoreKind::Clerks => "clerks",
            StoreKind::Cache => "cache",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        [StoreKind::Journal, StoreKind::Clerks, StoreKind::Cache]
            .into_iter()
            .find(|k| k.code() == code)
    }

    /// The sled configuration of this store at `dir`, with a small page cache.
    pub(crate) fn sled_config(self, dir: &Path) -> sled::Config {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(1024 * 1024)
            .flush_every_ms(None);
        match self {
            // Must match journal/store.rs and cache/store.rs.
            StoreKind::Journal | StoreKind::Cache => {
                config.segment_size(128 * 1024).mode(sled::Mode::LowSpace)
            }
            StoreKind::Clerks => config,
        }
    }
}

/// Makes [`probe`] re-execute the running binary. Call once, first thing in `main`, after
/// [`run_probe_if_asked`].
pub fn enable_self_exec() {
    match std::env::current_exe() {
        Ok(exe) => {
            let _ = SELF_EXE.set(exe);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the running binary; stores are probed in-process");
        }
    }
}

/// Opens the store at `dir` and reads every tree end to end, in a child process when
/// [`enable_self_exec`] was called. `dir` must be a scratch copy: sled may rewrite it.
/// `Err` says why the store is unreadable.
pub fn probe(dir: &Path, kind: StoreKind) -> Result<(), String> {
    let Some(exe) = SELF_EXE.get() else {
        return child::probe_in_process(dir, kind);
    };
    // A probe that never reached the store is tried once more; if it still cannot run, the
    // store is read in this process rather than declared unreadable: moving a healthy journal
    // aside would break its chain for a fault of the probe (seen under an LD_PRELOAD that
    // failed in the child).
    for attempt in 1..=2 {
        match probe_in_child(exe, dir, kind, PROBE_DEADLINE) {
            Probe::Verdict(verdict) => return verdict,
            Probe::NotRun(why) => {
                tracing::warn!(store = kind.code(), attempt, reason = %why, "the store probe did not run");
            }
        }
    }
    tracing::warn!(
        store = kind.code(),
        "the store probe cannot run; reading the store in this process instead"
    );
    child::probe_in_process(dir, kind)
}

/// What a probe child came to.
enum Probe {
    /// It reached the store: `Ok`, or why the store is unreadable.
    Verdict(Result<(), String>),
    /// It ended before it reached the store.
    NotRun(String),
}

fn probe_in_child(exe: &Path, dir: &Path, kind: StoreKind, deadline: Duration) -> Probe {
    let spawned = Command::new(exe)
        .arg(PROBE_ARG)
        .arg(kind.code())
        .arg(dir)
        .arg(PROBE_ADDRESS_SPACE.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // One malloc arena: each extra one reserves 64 MiB of address space.
        .env("MALLOC_ARENA_MAX", "1")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Probe::NotRun(format!(
                "cannot start the store probe {}: {e}",
                exe.display()
            ));
        }
    };
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Probe::Verdict(Err(format!(
                    "opening the {} database did not finish within {} s",
                    kind.code(),
                    deadline.as_secs()
                )));
            }
            // Polling a child with a deadline; there is no portable wait-with-timeout.
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Probe::NotRun(format!("waiting for the store probe: {e}"));
            }
        }
    };
    let mut message = String::new();
    if let Some(stderr) = child.stderr.take() {
        let _ = stderr.take(PROBE_MESSAGE_MAX).read_to_string(&mut message);
    }
    let mut said = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout.take(PROBE_MESSAGE_MAX).read_to_string(&mut said);
    }
    if !said.lines().any(|l| l == PROBE_READY) {
        return Probe::NotRun(format!(
            "the probe ended ({status}) before it reached the store: {}",
            message.trim()
        ));
    }
    // A panic's message is on the line after "panicked at …"; backtrace notes say nothing.
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note:") && !l.starts_with("stack backtrace"))
        .collect::<Vec<_>>()
        .join(" ");
    use std::os::unix::process::ExitStatusExt;
    Probe::Verdict(match (status.code(), status.signal()) {
        (Some(PROBE_OK), _) => Ok(()),
        (Some(PROBE_REFUSED), _) => Err(message),
        (Some(code), _) => Err(format!(
            "reading the {} database crashed its reader (exit {code}): {message}",
            kind.code()
        )),
        // With panic = "abort" (release) a sled panic ends here, its message before it.
        (None, Some(signal)) => Err(format!(
            "reading the {} database crashed its reader (signal {signal}; out of memory or a panic): {message}",
            kind.code()
        )),
        (None, None) => Err(format!(
            "reading the {} database crashed its reader",
            kind.code()
        )),
    })
}

/// A scratch copy of a store, removed on drop: `<parent>/<name>.probe/<name>`, on the same file
/// system as the store (not /tmp, which is RAM on many terminals).
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
    /// The copy.
    pub dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Copies the store at `dir` to a fresh scratch directory beside it, its own for this call
/// (`<name>.probe.<pid>.<n>`): a probe left running by a killed agent, or a concurrent check,
/// never shares it. Scratch directories left behind by killed agents are removed first.
pub fn scratch_copy(dir: &Path) -> std::io::Result<Scratch> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = dir.file_name().unwrap_or(dir.as_os_str());
    let mut prefix = OsString::from(name);
    prefix.push(".probe");
    remove_stale_scratch(dir, &prefix);
    let mut root_name = prefix;
    root_name.push(format!(
        ".{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let root = dir.with_file_name(root_name);
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let scratch = Scratch {
        dir: root.join(name),
        root,
    };
    copy_dir(dir, &scratch.dir)?;
    drop_unfinished_snapshots(&scratch.dir);
    Ok(scratch)
}

/// Removes `<prefix>` and `<prefix>.*` beside `dir` that no live process of this binary made:
/// what killed agents left. Names carry the pid that made them.
fn remove_stale_scratch(dir: &Path, prefix: &OsString) {
    let Some(parent) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if name == prefix {
            true
        } else if let Some(rest) = name.strip_prefix(&format!("{prefix}.")) {
            let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
            // Another live process's scratch (a concurrent check) is left alone.
            pid.is_none_or(|p| {
                p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
            })
        } else {
            false
        };
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the unfinished snapshots (`snap.<lsn>.generating`) a process killed while sled wrote
/// a snapshot leaves in a store directory. sled 0.34 writes a snapshot to that name and renames
/// it when complete, but when it opens a store it takes the highest-named `snap.*` file, the
/// unfinished one included, finds its checksum wrong and refuses the whole database
/// (`Read corrupted data at file offset None`; sled issues #1527 and #1533). The log and the
/// last complete snapshot hold everything, so the unfinished one is residue, not data. Each
/// removal is logged; errors are left to the open that follows.
pub fn drop_unfinished_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(file = %path.display(), bytes, "removed an unfinished sled snapshot left by an interrupted run")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an unfinished sled snapshot")
                }
            }
        }
    }
}

/// Copies a directory tree (regular files and directories; nothing else is in a sled store).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Renames `path` to `<path>.tampered-<unix s>.<ms>` without opening it, and makes the rename
/// durable. Returns the new name. (Not the 13 digits of unix milliseconds in one run: event
/// text refuses runs that long as possible card numbers, and the tamper event names the path.)
pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let mut name = path
        .file_name()
        .map(OsString::from)
        .unwrap_or_else(|| OsString::from("store"));
    let ms = crate::clock::Clock::wall_ms();
    name.push(format!(".tampered-{}.{:03}", ms / 1000, ms % 1000));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    if let Some(parent) = aside.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all())?;
    }
    Ok(aside)
}

/// A store found unreadable and moved aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MovedAside {
    /// Which store.
    pub store: &'static str,
    /// Why it could not be used.
    pub reason: String,
    /// Where it is now, byte for byte as found.
    pub moved_to: PathBuf,
}

/// Checks the store at `dir` before it is opened in place: a scratch copy is probed
/// ([`probe`]), then given to `check` (decoding values the store's owner needs). If either
/// fails, the store is moved aside untouched and `Some` says so; the caller then creates a
/// fresh one. A missing store is fine (`None`). A scratch copy that cannot be made (a full
/// disk) is logged and the store is opened unchecked, as before this guard existed, rather
/// than moved aside for want of space.
pub fn check_or_move_aside(
    dir: &Path,
    kind: StoreKind,
    check: impl Fn(&Path) -> Result<(), String>,
) -> std::io::Result<Option<MovedAside>> {
    if !dir.exists() {
        return Ok(None);
    }
    let scratch = match scratch_copy(dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(store = kind.code(), dir = %dir.display(), error = %e, "cannot copy the store to check it; opening it unchecked");
            return Ok(None);
        }
    };
    let verdict = probe(&scratch.dir, kind).and_then(|()| check(&scratch.dir));
    drop(scratch);
    // A store is moved aside only when a second, fresh copy is refused too: one verdict may
    // come from the copy (a file changing under it) rather than from the store, and moving a
    // healthy journal aside breaks its chain.
    let verdict = match verdict {
        Ok(()) => Ok(()),
        Err(first) => match scratch_copy(dir) {
            Ok(again) => {
                let second = probe(&again.dir, kind).and_then(|()| check(&again.dir));
                drop(again);
                match second {
                    Ok(()) => {
                        tracing::warn!(store = kind.code(), reason = %first, "a store probe failed once and passed on a fresh copy; the store is kept");
                        Ok(())
                    }
                    Err(_) => Err(first),
                }
            }
            Err(_) => Err(first),
        },
    };
    match verdict {
        Ok(()) => Ok(None),
        Err(reason) => {
            let moved_to = move_aside(dir)?;
            tracing::error!(store = kind.code(), %reason, moved_to = %moved_to.display(), "store unreadable: moved aside, starting a fresh one");
            Ok(Some(MovedAside {
                store: kind.code(),
                reason,
                moved_to,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aside_name_fits_in_an_event() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("journal");
        std::fs::create_dir_all(&dir).unwrap();
        let aside = move_aside(&dir).unwrap();
        assert!(!dir.exists() && aside.is_dir());
        posguard_proto::text::SafeText::new(aside.display().to_string()).unwrap();
    }

    #[test]
    fn kinds_round_trip_their_codes() {
        for kind in [StoreKind::Journal, StoreKind::Clerks, StoreKind::Cache] {
            assert_eq!(StoreKind::from_code(kind.code()), Some(kind));
            assert!(posguard_proto::text::ShortCode::new(kind.code()).is_ok());
        }
        assert_eq!(StoreKind::from_code("other"), None);
    }

    /// A stand-in for the re-executed binary: a shell script doing what a damaged store can
    /// make sled do. The parent must not depend on how the child dies.
    fn fake_probe(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("probe.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_parent_survives_whatever_the_probe_dies_of() {
        let t = tempfile::tempdir().unwrap();
        let probe = |body: &str, deadline: u64| {
            probe_in_child(
                &fake_probe(t.path(), body),
                t.path(),
                StoreKind::Journal,
                Duration::from_secs(deadline),
            )
        };
        // A child that reached the store says so first.
        let run = |body: &str, deadline: u64| match probe(
            &format!("echo {PROBE_READY}\n{body}"),
            deadline,
        ) {
            Probe::Verdict(v) => v,
            Probe::NotRun(why) => panic!("not run: {why}"),
        };
        assert_eq!(run("exit 0", 5), Ok(()));
        assert_eq!(
            run("echo 'journal database: cannot open: bad' >&2; exit 3", 5),
            Err("journal database: cannot open: bad".to_owned())
        );
        // panic = "abort" in release: the child dies of SIGABRT.
        let aborted = run("kill -ABRT $$", 5).unwrap_err();
        assert!(aborted.contains("signal 6"), "{aborted}");
        // An unwinding panic in a debug build exits 101.
        let panicked = run("echo 'tried to serialize Uninitialized' >&2; exit 101", 5).unwrap_err();
        assert!(panicked.contains("exit 101"), "{panicked}");
        // A hang is cut off at the deadline, and the child is gone afterwards.
        let started = Instant::now();
        let hung = run("exec sleep 600", 1).unwrap_err();
        assert!(hung.contains("did not finish"), "{hung}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A flood of error output cannot block the parent beyond the deadline.
        let flood = run("yes 'x' >&2", 1).unwrap_err();
        assert!(flood.contains("did not finish"), "{flood}");
        // A child that ends before it reached the store (its loader or environment failed)
        // says nothing about the store.
        for body in [
            "exit 1",
            "kill -ABRT $$",
            "echo 'libfaketime: shm_open failed' >&2; exit 1",
        ] {
            match probe(body, 5) {
                Probe::NotRun(why) => assert!(why.contains("before it reached the store"), "{why}"),
                Probe::Verdict(v) => panic!("{body}: a verdict on the store: {v:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_unreadable_and_moved_aside_untouched() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("auth");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("conf"), b"not a sled configuration").unwrap();
        std::fs::write(dir.join("db"), vec![0xA5u8; 4096]).unwrap();
        let moved = check_or_move_aside(&dir, StoreKind::Clerks, |_| Ok(()))
            .unwrap()
            .unwrap();
        assert!(!dir.exists());
        assert_eq!(
            std::fs::read(moved.moved_to.join("conf")).unwrap(),
            b"not a sled configuration"
        );
        assert_eq!(
            std::fs::read(moved.moved_to.join("db")).unwrap(),
            vec![0xA5u8; 4096]
        );
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("auth.probe"))
            .collect();
        assert!(left.is_empty(), "scratch copies left: {left:?}");
    }

    /// A scratch directory of a killed agent (its pid gone), or of the old fixed name, is
    /// removed; a live process's is left alone; each copy gets a directory of its own.
    #[test]
    fn scratch_copies_are_private_and_stale_ones_go() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("auth");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("conf"), b"x").unwrap();
        // pid 1 is alive (init); u32::MAX - 1 is not a pid.
        for stale in ["auth.probe", "auth.probe.4294967294.0"] {
            std::fs::create_dir_all(t.path().join(stale).join("auth")).unwrap();
        }
        std::fs::create_dir_all(t.path().join("auth.probe.1.0")).unwrap();
        let a = scratch_copy(&dir).unwrap();
        let b = scratch_copy(&dir).unwrap();
        assert_ne!(a.dir, b.dir);
        assert_eq!(std::fs::read(a.dir.join("conf")).unwrap(), b"x");
        assert!(!t.path().join("auth.probe").exists());
        assert!(!t.path().join("auth.probe.4294967294.0").exists());
        assert!(t.path().join("auth.probe.1.0").exists());
    }
}
