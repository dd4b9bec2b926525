//! Protocol and format versions.

/// Version of the local API protocol (newline-delimited JSON over the agent's Unix socket).
pub const LOCAL_API_VERSION: u32 = 1;

/// Version of the uplink protocol (agent → collector).
pub const UPLINK_VERSION: u32 = 1;

/// Format number of journal records (and of the event bodies inside them) written by this
/// version. Decoders dispatch on the number and refuse ones they do not know.
pub const RECORD_FORMAT: u16 = 1;

/// Format number of journal-key certificates written by this version.
pub const JOURNAL_KEY_CERT_FORMAT: u16 = 1;

/// Format number of checkpoints written by this version.
pub const CHECKPOINT_FORMAT: u16 = 1;
