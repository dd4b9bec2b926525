//! posguard-proto: the data that crosses a boundary (disk, socket, network) and the code that
//! verifies it. Pure: no I/O, no clocks, no randomness of its own.
//!
//! Modules:
//! - [`version`]: protocol and format version numbers.
//! - [`text`]: validated strings ([`text::ClerkId`], [`text::DeviceId`], [`text::SafeText`],
//!   [`text::ShortCode`], [`text::Currency`]); no free text reaches an event any other way, and
//!   none of them can hold a card number.
//! - [`event`]: typed audit events ([`event::Event`] = stamp, actor, peer, severity,
//!   [`event::EventKind`]) and which kinds a full journal keeps.
//! - [`codec`]: the canonical postcard encoding, size bounds and [`codec::DecodeError`].
//! - [`chain`]: domain tags, genesis hash, record hash and [`chain::ChainHead`].
//! - [`keys`]: the device identity key ([`keys::DikPublicKey`], ECDSA P-256) and Ed25519
//!   journal-key verification.
//! - [`ed25519`]: the one Ed25519 signature rule every verifier applies (keys of prime order,
//!   strict signature encodings, the cofactored equation), single and grouped alike.
//! - [`local_api`]: the local API's newline-delimited JSON envelope and error codes.
//! - [`record`]: [`record::Record`], built by the journal and decoded from stored bytes.
//! - [`cert`]: [`cert::JournalKeyCert`], the DIK's certificate for a journal key.
//! - [`checkpoint`]: [`checkpoint::Checkpoint`], the DIK's signature over the head and the TPM
//!   counter.
//! - [`verify`]: [`verify::verify_run`] and the incremental [`verify::ChainVerifier`], failing
//!   with a [`verify::VerifyError`] that names the first bad record.
//! - [`uplink`]: the agent → collector batch ([`uplink::UplinkBatch`]), the collector's
//!   acknowledgement ([`uplink::UplinkAck`]) and operator-signed commands
//!   ([`uplink::SignedCommand`]).
//!
//! The byte layouts are specified in `docs/audit-format.md`.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]

pub mod cert;
pub mod chain;
pub mod checkpoint;
pub mod codec;
pub mod ed25519;
pub mod event;
pub mod keys;
pub mod local_api;
pub mod record;
pub mod text;
pub mod uplink;
pub mod verify;
pub mod version;

#[cfg(test)]
mod testkit;
