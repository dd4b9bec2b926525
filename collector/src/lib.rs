//! posguard-collector: the central service that receives, verifies, stores, alerts on and
//! exports the fleet's audit trails, and its operations CLI. The binary only parses arguments.
//!
//! Modules:
//! - [`logging`]: journald under systemd, stderr otherwise (the `posguard-logging` crate, shared
//!   with the agent).
//! - [`config`]: `collector.toml`, validated before anything is bound ([`config::Config`]).
//! - [`tls`]: the TLS 1.3-only server config (client certificates verified when sent), rebuilt
//!   when the CRL file changes; [`peer`]: the device id, DIK and expiry taken from a client
//!   certificate; [`revocation`]: the CRL applied to open connections too, and the refused
//!   attempts of revoked certificates (metrics, alerts).
//! - [`server`]: the HTTPS listener (`POST /v1/journal`, `/v1/enroll`, `/v1/renew`), limits,
//!   rate limits, maintenance mode, graceful shutdown ([`server::run`]).
//! - [`enroll`]: enrollment (one-time token + CSR) and renewal decisions, one store
//!   transaction each; [`pki`]: the fleet CA (`ca init`, CSR checks, issuing, the CRL);
//!   [`lifecycle`]: decommissioning and re-provisioning (a new chain generation per device id).
//! - [`ingest`]: verification of a batch against the device's stored state and what to store,
//!   as one store transaction; [`alerts`]: alert kinds, the rules on stored events, what a
//!   repeated cause is, and the triage states an operator moves an alert through.
//! - [`store`]: the [`store::Store`] trait, its SQLite implementation and the thread that owns
//!   the connection ([`store::StoreHandle`]); [`backup`]: online backup, and restore after
//!   re-verifying every chain; [`lock`]: the store lock `serve` holds and `restore` respects.
//! - [`ratelimit`]: per-device token buckets; [`metrics`]: Prometheus text on its own listener.
//! - [`health`]: what a device's stored facts mean for operations (ok, lagging, silent,
//!   stopped, revoked, lockdown, decommissioned), shown by `devices`.
//! - [`opskey`]: the operations Ed25519 key that signs commands; [`clock`]: wall time and
//!   timestamp parsing.
//! - [`document`]: the flat JSON document of a stored event (`query`, `export`).
//! - [`cli`]: the subcommands (`serve`, `query`, `alerts`, `export`, `devices`, `ops-key`,
//!   `command`, `maintenance`, `ca`, `enroll-token`, `enrollments`, `backup`, `restore`).
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

pub mod alerts;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod document;
pub mod enroll;
pub mod health;
pub mod ingest;
pub mod lifecycle;
pub mod lock;
pub use posguard_logging as logging;
pub mod metrics;
pub mod opskey;
pub mod peer;
pub mod pki;
pub mod ratelimit;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tls;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
