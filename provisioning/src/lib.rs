//! posguard-provision: what a field technician runs on a terminal. The binary (`main.rs`) only
//! parses arguments; the work lives here.
//!
//! Modules:
//! - [`selftest`]: exercises every operation of the secure element and reports each step with
//!   its result and time (the last step of provisioning, and a diagnostic on its own).
//! - [`report`]: step-by-step progress lines and the machine-readable summary.
#![forbid(unsafe_code)]

pub mod report;
pub mod selftest;
