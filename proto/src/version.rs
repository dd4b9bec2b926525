//! Protocol and format versions.

/// Version of the local API protocol (newline-delimited JSON over the agent's Unix socket).
pub const LOCAL_API_VERSION: u32 = 1;

/// Version of the uplink protocol (agent → collector).
pub const UPLINK_VERSION: u32 = 1;
