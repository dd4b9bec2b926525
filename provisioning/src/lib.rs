//! posguard-provision: what a field technician runs on a terminal. The binary (`main.rs`) only
//! parses arguments; the work lives here.
//!
//! Modules:
//! - [`selftest`]: exercises every operation of the secure element and reports each step with
//!   its result and time (the last step of provisioning, and a diagnostic on its own).
//! - [`init`]: bringing up a terminal: TPM checks, identity key, CSR, enrollment, data key,
//! - [`preflight`]: the local checks run before the token is sent (directories, fleet CA, group).
//! - [`datakey`]: the data key sealed to the TPM (or an earlier one checked to unseal).
//! - [`pending`]: the issued chain kept until the configuration is written (resuming a late failure).
//! - [`rerun`]: `init` on a provisioned terminal: what is asked compared with what is there.
//! - [`inputs`]: the token (file, stdin, argv), `--collector host:port`, dates, tss2 logging.
//! - [`admin`]: the first admin and the end-to-end self-test through the running agent.
//! - [`identity`]: the identity-key steps of `init` (staged replacement under `--force`, named
//!   eviction of foreign TPM objects) and the `[secure_element]` handles of every command.
//! - [`https`]: the enrollment client (TLS 1.3, fleet CA only, no client certificate yet).
//! - [`agent_api`]: the few local-API calls provisioning makes (first admin, status).
//! - [`status`]: `status`: TPM, certificate, an mTLS request to the collector, the agent.
//! - [`decommission`]: shipping what is left, stopping the agent, wiping; `--force` with a
//!   record of what was not shipped.
//! - [`files`]: atomic writes with mode and group.
//! - [`offline`]: the offline path (CSR to a file, install the chain operations signed).
//! - [`qr`]: the TOTP URI as a QR code in the terminal.
//! - [`report`]: step-by-step progress lines and the machine-readable summary.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent_api;
pub mod datakey;
pub mod decommission;
pub mod files;
pub mod https;
pub mod identity;
pub mod init;
pub mod inputs;
pub mod offline;
pub mod pending;
pub mod preflight;
pub mod prompt;
pub mod qr;
pub mod report;
pub mod rerun;
pub mod selftest;
pub mod status;
