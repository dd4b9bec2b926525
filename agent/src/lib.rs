//! posguard-agent: the terminal's security daemon (`posguard-agent`) and its local operator CLI
//! (`posguardctl`). The binaries under `src/bin/` only parse arguments; the work lives here.
//!
//! Modules:
//! - [`daemon`]: the daemon's life: open, serve, stop.
//! - [`anchor`]: store anchors (instance id, write generation) that let the journal notice a
//!   clerk store or cache that was deleted, replaced or put back as an older copy.
//! - [`api`]: the local API (Unix socket, newline-delimited JSON) and its client.
//! - [`auth`]: clerk authentication policy (pure decisions, no I/O).
//! - [`clerks`]: clerk logins with their I/O: stored clerks, sessions, audit events.
//! - [`clock`]: wall time, the boot clock and the boot id for event stamps.
//! - [`datakey`]: the TPM-sealed data key and AES-256-GCM for secrets at rest.
//! - [`journal`]: the signed, hash-chained audit journal in sled.
//! - [`uplink`]: shipping the journal to the collector over mTLS with the TPM-held key.
//! - `walk`: reading sled trees one lookup per entry, so that sled's cache keeps to its size.
//! - [`notify`]: systemd's notification protocol (READY, WATCHDOG, STOPPING, STATUS), no libsystemd.
//! - [`logging`]: journald with structured fields under systemd, plain stderr otherwise.
//! - [`config`]: the agent's TOML configuration, validated with errors that name the key.
//! - [`storeguard`]: opening a possibly damaged sled store in a child process, moving an
//!   unreadable one aside untouched.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod anchor;
pub mod api;
pub mod auth;
pub mod cache;
pub mod clerks;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod datakey;
pub mod journal;
pub use posguard_logging as logging;
pub mod notify;
pub mod prompt;
pub mod storeguard;
pub mod uplink;
mod walk;

/// Exit code for bad usage or configuration (sysexits EX_USAGE); systemd does not restart on it.
pub const EXIT_USAGE: u8 = 64;
