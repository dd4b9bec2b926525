//! posguard-collector: the central service that receives, verifies, stores, alerts on and
//! exports the fleet's audit trails, and its operations CLI. The binary only parses arguments.
#![forbid(unsafe_code)]

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
