//! posguard-provision: what a field technician runs on a terminal. The binary (`main.rs`) only
//! parses arguments; the work lives here.
//!
//! Modules:
//! - [`selftest`]: exercises every operation of the secure element and reports each step with
//!   its result and time (the last step of provisioning, and a diagnostic on its own).
//! - [`init`]: bringing up a terminal: TPM checks, identity key, CSR, enrollment, data key,
//!   configuration, first admin, self-test.
//! - [`identity`]: the identity-key steps of `init` (staged replacement under `--force`, named
//!   eviction of foreign TPM objects) and the `[secure_element]` handles of every command.
//! - [`https`]: the enrollment client (TLS 1.3, fleet CA only, no client certificate yet).
//! - [`agent_api`]: the few local-API calls provisioning makes (first admin, status).
//! - [`files`]: atomic writes with mode and group.
//! - [`qr`]: the TOTP URI as a QR code in the terminal.
//! - [`report`]: step-by-step progress lines and the machine-readable summary.
#![forbid(unsafe_code)]

pub mod agent_api;
pub mod files;
pub mod https;
pub mod identity;
pub mod init;
pub mod prompt;
pub mod qr;
pub mod report;
pub mod selftest;
