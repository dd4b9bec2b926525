//! posguard-provision: what a field technician runs on a terminal. The binary (`main.rs`) only
//! parses arguments; the work lives here.
//!
//! Modules:
//! - [`selftest`]: exercises every operation of the secure element and reports each step with
//!   its result and time (the last step of provisioning, and a diagnostic on its own).
//! - [`init`]: bringing up a terminal: TPM checks, identity key, CSR, enrollment, data key,
//!   configuration, first admin, self-test.
//! - [`https`]: the enrollment client (TLS 1.3, fleet CA only, no client certificate yet).
//! - [`agent_api`]: the few local-API calls provisioning makes (first admin, status).
//! - [`files`]: atomic writes with mode and group.
//! - [`offline`]: the offline path (CSR to a file, install the chain operations signed).
//! - [`qr`]: the TOTP URI as a QR code in the terminal.
//! - [`report`]: step-by-step progress lines and the machine-readable summary.
#![forbid(unsafe_code)]

pub mod agent_api;
pub mod files;
pub mod https;
pub mod init;
pub mod offline;
pub mod prompt;
pub mod qr;
pub mod report;
pub mod selftest;
