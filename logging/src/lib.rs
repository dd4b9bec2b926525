//! Where the logs go: to journald with structured fields when systemd runs us, to stderr as
//! plain text otherwise. The filter comes from `RUST_LOG` (default `info`).
//!
//! Fields a call site logs as tracing fields (`tracing::info!(kind = "lockout", device = %id,
//! seq, "…")`) become journal fields `POSGUARD_KIND`, `POSGUARD_DEVICE`, `POSGUARD_SEQ`, so that
//! `journalctl -u posguard-agent POSGUARD_DEVICE=store12-till3` finds them. The prefix keeps our
//! fields apart from journald's own (`MESSAGE`, `PRIORITY`, …).
//!
//! Its own crate so that the agent and the collector share it without depending on each other.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Prefix of our fields in the journal (`device` becomes `POSGUARD_DEVICE`).
pub const FIELD_PREFIX: &str = "POSGUARD";

/// Where [`init`] sent the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// journald's native protocol, with structured fields.
    Journald,
    /// Plain text on stderr.
    Stderr,
    /// A subscriber was already installed (a second `init`, or a test harness); nothing changed.
    AlreadySet,
}

/// Where the subscriber [`init`] installed sends the logs (`None` before `init`).
static INSTALLED: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// Where the logs go, as decided by the first [`init`] that installed a subscriber: a binary
/// that prints its own errors on stderr logs them through tracing instead when this is
/// [`Sink::Journald`], so that they get error priority (journald records plain stderr lines of
/// a unit at info, which `journalctl -p warning` hides).
pub fn sink() -> Option<Sink> {
    INSTALLED.get().copied()
}

/// Installs the global subscriber for `component` (`posguard-agent`, `posguard-collector`,
/// which is also the journal's `SYSLOG_IDENTIFIER`). Falls back to stderr when journald cannot
/// be reached.
pub fn init(component: &str) -> Sink {
    let sink = install(component);
    if sink != Sink::AlreadySet {
        let _ = INSTALLED.set(sink);
    }
    sink
}

fn install(component: &str) -> Sink {
    let journal_stream = std::env::var_os("JOURNAL_STREAM");
    let invocation_id = std::env::var_os("INVOCATION_ID");
    let systemd = under_systemd(
        journal_stream.as_deref(),
        invocation_id.as_deref(),
        stderr_identity(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if systemd && let Ok(journald) = tracing_journald::layer() {
        let journald = journald
            .with_field_prefix(Some(FIELD_PREFIX.to_owned()))
            .with_syslog_identifier(component.to_owned());
        return match tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init()
        {
            Ok(()) => Sink::Journald,
            Err(_) => Sink::AlreadySet,
        };
    }
    match tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init()
    {
        Ok(()) => Sink::Stderr,
        Err(_) => Sink::AlreadySet,
    }
}

/// Whether systemd runs us: stderr is the journal stream systemd connected (`JOURNAL_STREAM`
/// names its `device:inode`), or the service manager gave us an invocation id.
pub fn under_systemd(
    journal_stream: Option<&OsStr>,
    invocation_id: Option<&OsStr>,
    stderr: Option<(u64, u64)>,
) -> bool {
    if invocation_id.is_some_and(|id| !id.is_empty()) {
        return true;
    }
    match (journal_stream.and_then(parse_journal_stream), stderr) {
        (Some(stream), Some(stderr)) => stream == stderr,
        _ => false,
    }
}

/// `JOURNAL_STREAM=DEV:INO`, both decimal.
fn parse_journal_stream(value: &OsStr) -> Option<(u64, u64)> {
    let (dev, ino) = value.to_str()?.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// `(st_dev, st_ino)` of our stderr, by `fstat` on a duplicate of the descriptor.
fn stderr_identity() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        let ours = Some((64769, 12345));
        assert!(under_systemd(os("64769:12345"), None, ours));
        // Inherited by a child whose stderr was redirected elsewhere: not the journal.
        assert!(!under_systemd(os("64769:99999"), None, ours));
        assert!(!under_systemd(os("garbage"), None, ours));
        assert!(!under_systemd(os("64769:12345"), None, None));
        assert!(!under_systemd(None, None, ours));
    }

    #[test]
    fn an_invocation_id_means_systemd() {
        let id = "8a2f4cbbc1d84f5c9b6e0c6f4f0f2a11";
        assert!(under_systemd(None, os(id), None));
        assert!(!under_systemd(None, os(""), None));
    }

    #[test]
    fn stderr_identity_is_the_descriptor_fstat() {
        // The identity of our real stderr is whatever the harness gave us; it must at least be
        // readable, and equal to what stat of the same file says.
        let (dev, ino) = stderr_identity().unwrap();
        let meta = std::fs::metadata("/proc/self/fd/2").unwrap();
        assert_eq!((dev, ino), (meta.dev(), meta.ino()));
    }

    #[test]
    fn init_logs_somewhere_and_a_second_init_changes_nothing() {
        let first = init("posguard-test");
        assert_ne!(first, Sink::AlreadySet);
        assert_eq!(sink(), Some(first));
        assert_eq!(init("posguard-test"), Sink::AlreadySet);
        assert_eq!(sink(), Some(first), "the first sink stays the one reported");
        tracing::info!(kind = "test", device = "dev-1", seq = 7u64, "logging works");
    }
}
