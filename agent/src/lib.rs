//! posguard-agent: the terminal's security daemon (`posguard-agent`) and its local operator CLI
//! (`posguardctl`). The binaries under `src/bin/` only parse arguments; the work lives here.
//!
//! Modules:
//! - [`clock`]: wall time, the boot clock and the boot id for event stamps.
//! - [`journal`]: the signed, hash-chained audit journal in sled.
//! - [`config`]: the agent's TOML configuration, validated with errors that name the key.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod journal;

/// Exit code for bad usage or configuration (sysexits EX_USAGE); systemd does not restart on it.
pub const EXIT_USAGE: u8 = 64;
