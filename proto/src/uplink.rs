//! The uplink protocol (agent → collector): the body of `POST /v1/journal` ([`UplinkBatch`]) and
//! the collector's answer ([`UplinkAck`]), which carries [`SignedCommand`]s.
//!
//! Both are plain postcard (serde field order is the wire order). Decoding is bounded: the input
//! length is checked before any work, every count and item size after, and nothing panics.
//! The records, certificates and checkpoints inside a batch stay encoded: the collector decodes
//! and verifies each with its own bounded decoder.
//!
//! Commands are signed by the operations team's Ed25519 key over
//! `COMMAND_TAG || postcard(device_id, id, kind, issued_wall_ms)` ([`SignedCommand::signing_bytes`]).

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, MAX_RECORD_LEN, MAX_SIGNED_STRUCT_LEN, byte_array};
use crate::event;
use crate::text::DeviceId;
use crate::version::UPLINK_VERSION;

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 4096;
/// Most journal-key certificates in one batch.
pub const MAX_BATCH_CERTS: usize = 64;
/// Most checkpoints in one batch.
pub const MAX_BATCH_CHECKPOINTS: usize = 256;
/// Largest encoded batch (4 MiB): the HTTP body limit.
pub const MAX_BATCH_LEN: usize = 4 * 1024 * 1024;
/// Longest agent version string in a [`DeviceStatus`].
pub const MAX_AGENT_VERSION_LEN: usize = 64;
/// Most commands in one acknowledgement.
pub const MAX_ACK_COMMANDS: usize = 64;
/// Largest encoded acknowledgement.
pub const MAX_ACK_LEN: usize = 64 * 1024;
/// Domain tag of what the operations key signs for a command (format 1).
pub const COMMAND_TAG: &[u8] = b"posguard/command/v1";

/// The uplink protocol version as carried in [`UplinkBatch::version`].
pub fn batch_version() -> u16 {
    // UPLINK_VERSION is a small constant; saturate rather than panic if it ever outgrows u16.
    u16::try_from(UPLINK_VERSION).unwrap_or(u16::MAX)
}

/// One upload from an agent: encoded journal-key certificates, records (ascending seq) and
/// checkpoints, plus the device's status. An empty batch with a status is a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkBatch {
    /// Uplink protocol version ([`batch_version`]).
    pub version: u16,
    /// Encoded [`crate::cert::JournalKeyCert`]s for the keys that signed the records (resending
    /// one the collector already holds is harmless).
    pub certs: Vec<Vec<u8>>,
    /// Encoded [`crate::record::Record`]s in ascending seq order.
    pub records: Vec<Vec<u8>>,
    /// Encoded [`crate::checkpoint::Checkpoint`]s, each at the seq of a record in this batch or
    /// one already acknowledged.
    pub checkpoints: Vec<Vec<u8>>,
    /// The device's status (sent with every batch, and alone as a heartbeat).
    pub status: Option<DeviceStatus>,
}

/// What an agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Agent version (at most [`MAX_AGENT_VERSION_LEN`] printable ASCII characters).
    pub agent_version: String,
    /// The device certificate's notAfter (Unix seconds).
    pub cert_not_after_unix: u64,
    /// Seq of the journal's last record.
    pub journal_head: u64,
    /// Highest seq the collector has acknowledged.
    pub journal_shipped: u64,
    /// The device's wall clock (UTC, Unix ms) when the batch was made.
    pub wall_ms: u64,
}

/// The collector's answer to a stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkAck {
    /// Highest seq the collector holds durably for this device (0 for none). Records up to it
    /// may be pruned by the agent.
    pub highest_stored: u64,
    /// The seq the collector expects next.
    pub next_expected: u64,
    /// Signed commands for this device, repeated in every ack until the journal shows the
    /// agent received them (a `command_received`, `command_applied` or `command_refused`
    /// event). The agent must ignore an id it has already handled.
    pub commands: Vec<SignedCommand>,
}

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandKind {
    /// Enter lockdown.
    Lockdown,
    /// Leave lockdown.
    Unlock,
}

impl CommandKind {
    /// The short name used by the CLI and in JSON (`lockdown`, `unlock`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Lockdown => "lockdown",
            Self::Unlock => "unlock",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "lockdown" => Some(Self::Lockdown),
            "unlock" => Some(Self::Unlock),
            _ => None,
        }
    }
}

impl From<CommandKind> for event::CommandKind {
    fn from(kind: CommandKind) -> Self {
        match kind {
            CommandKind::Lockdown => Self::Lockdown,
            CommandKind::Unlock => Self::Unlock,
        }
    }
}

/// A command for one device, signed by the operations key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand {
    /// The device it is for (the agent refuses any other).
    pub device_id: DeviceId,
    /// Per-device command number, from 1, increasing; the agent refuses a number it has seen.
    pub id: u64,
    /// What to do.
    pub kind: CommandKind,
    /// When the operator issued it (UTC, Unix ms); the agent may refuse stale commands.
    pub issued_wall_ms: u64,
    /// Ed25519 signature by the operations key over [`SignedCommand::signing_bytes`].
    #[serde(with = "byte_array")]
    pub signature: [u8; 64],
}

/// The signed part of a command.
#[derive(Serialize)]
struct CommandFields<'a> {
    device_id: &'a DeviceId,
    id: u64,
    kind: CommandKind,
    issued_wall_ms: u64,
}

/// Builds the bytes the operations key signs for a command with these fields.
pub fn command_signing_bytes(
    device_id: &DeviceId,
    id: u64,
    kind: CommandKind,
    issued_wall_ms: u64,
) -> Vec<u8> {
    let fields = CommandFields {
        device_id,
        id,
        kind,
        issued_wall_ms,
    };
    let mut out = COMMAND_TAG.to_vec();
    // Postcard into a Vec fails only for unsupported types; these fields are all supported.
    if let Ok(body) = postcard::to_stdvec(&fields) {
        out.extend_from_slice(&body);
    }
    out
}

impl SignedCommand {
    /// What the operations key signs: `COMMAND_TAG || postcard(device_id, id, kind,
    /// issued_wall_ms)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        command_signing_bytes(&self.device_id, self.id, self.kind, self.issued_wall_ms)
    }

    /// Whether the signature verifies under the Ed25519 public key `ops_public_key`.
    pub fn verify(&self, ops_public_key: &[u8; 32]) -> bool {
        crate::keys::verify_ed25519(ops_public_key, &self.signing_bytes(), &self.signature)
    }
}

/// Why an uplink message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The bytes are not a message (or are larger than allowed).
    #[error("cannot decode")]
    Decode(#[from] DecodeError),
    /// The batch's version is not this collector's.
    #[error("unsupported uplink version {0}")]
    UnsupportedVersion(u16),
    /// A count or size bound is exceeded.
    #[error("{0} out of bounds")]
    OutOfBounds(&'static str),
}

impl UplinkError {
    /// A short stable code for the peer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decode(_) => "malformed_batch",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::OutOfBounds(_) => "batch_too_large",
        }
    }
}

fn check_items(
    items: &[Vec<u8>],
    max_count: usize,
    max_len: usize,
    what: &'static str,
) -> Result<(), UplinkError> {
    if items.len() > max_count || items.iter().any(|i| i.len() > max_len) {
        return Err(UplinkError::OutOfBounds(what));
    }
    Ok(())
}

impl UplinkBatch {
    /// An empty batch of the current version.
    pub fn new() -> Self {
        Self {
            version: batch_version(),
            certs: Vec::new(),
            records: Vec::new(),
            checkpoints: Vec::new(),
            status: None,
        }
    }

    /// Encodes the batch, refusing one over the bounds.
    pub fn to_bytes(&self) -> Result<Vec<u8>, UplinkError> {
        self.check_bounds()?;
        let bytes = postcard::to_stdvec(self)
            .map_err(|e| UplinkError::Decode(DecodeError::Malformed(e)))?;
        if bytes.len() > MAX_BATCH_LEN {
            return Err(UplinkError::OutOfBounds("batch bytes"));
        }
        Ok(bytes)
    }

    /// Decodes a batch: at most [`MAX_BATCH_LEN`] bytes, the current version, bounded counts
    /// and item sizes, no trailing bytes. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UplinkError> {
        codec::check_len(bytes, MAX_BATCH_LEN)?;
        let (version, _) = codec::take_format(bytes)?;
        if u32::from(version) != UPLINK_VERSION {
            return Err(UplinkError::UnsupportedVersion(version));
        }
        let batch: Self = codec::decode_exact(bytes)?;
        batch.check_bounds()?;
        Ok(batch)
    }

    fn check_bounds(&self) -> Result<(), UplinkError> {
        check_items(&self.records, MAX_BATCH_RECORDS, MAX_RECORD_LEN, "records")?;
        check_items(&self.certs, MAX_BATCH_CERTS, MAX_SIGNED_STRUCT_LEN, "certs")?;
        check_items(
            &self.checkpoints,
            MAX_BATCH_CHECKPOINTS,
            MAX_SIGNED_STRUCT_LEN,
            "checkpoints",
        )?;
        if let Some(status) = &self.status {
            let v = &status.agent_version;
            if v.len() > MAX_AGENT_VERSION_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(UplinkError::OutOfBounds("agent_version"));
            }
        }
        Ok(())
    }
}

impl Default for UplinkBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl UplinkAck {
    /// Encodes the ack, refusing one over the bounds.
    pub fn to_bytes(&self) -> Result<Vec<u8>, UplinkError> {
        if self.commands.len() > MAX_ACK_COMMANDS {
            return Err(UplinkError::OutOfBounds("commands"));
        }
        postcard::to_stdvec(self).map_err(|e| UplinkError::Decode(DecodeError::Malformed(e)))
    }

    /// Decodes an ack: at most [`MAX_ACK_LEN`] bytes and [`MAX_ACK_COMMANDS`] commands, no
    /// trailing bytes. Command signatures are not checked here ([`SignedCommand::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UplinkError> {
        codec::check_len(bytes, MAX_ACK_LEN)?;
        let ack: Self = codec::decode_exact(bytes)?;
        if ack.commands.len() > MAX_ACK_COMMANDS {
            return Err(UplinkError::OutOfBounds("commands"));
        }
        Ok(ack)
    }
}

#[cfg(test)]
mod tests;
