//! The hash chain: domain tags, the genesis hash, the record hash and what the journal key signs.
//!
//! ```text
//! genesis = SHA-256("posguard/genesis/v1" || device id (UTF-8))
//! hash    = SHA-256("posguard/record/v1" || prev_hash (32) || seq (u64 big-endian)
//!                   || journal_key_id (8) || body bytes)
//! signed  = Ed25519(journal key, "posguard/record/v1" || hash)
//! ```
//! Every field before the body has a fixed size, so the concatenation is unambiguous.

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::codec::byte_array;
use crate::text::DeviceId;

/// Domain tag of the record hash and of the journal key's signature over it (format 1).
pub const RECORD_TAG: &[u8] = b"posguard/record/v1";
/// Domain tag of the genesis hash.
pub const GENESIS_TAG: &[u8] = b"posguard/genesis/v1";
/// Domain tag of what the device identity key signs for a journal-key certificate (format 1).
pub const JOURNAL_KEY_CERT_TAG: &[u8] = b"posguard/journal-key-cert/v1";
/// Domain tag of what the device identity key signs for a checkpoint (format 1).
pub const CHECKPOINT_TAG: &[u8] = b"posguard/checkpoint/v1";

/// Sequence number of the first record of a device's journal. Sequence 0 is the genesis point.
pub const FIRST_SEQ: u64 = 1;

/// A point in a chain: the sequence number of the last record and its hash.
///
/// `seq == 0` with the genesis hash is the point before the first record. The journal writer
/// keeps its head as a `ChainHead`; verifiers start from one (the genesis, or the last record they
/// trust) and report where they ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the last record (0 before the first record).
    pub seq: u64,
    /// Hash of the last record (the genesis hash before the first record).
    #[serde(with = "byte_array")]
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The point before a device's first record.
    pub fn genesis(device_id: &DeviceId) -> Self {
        Self {
            seq: 0,
            hash: genesis_hash(device_id),
        }
    }

    /// The sequence number the next record must carry; `None` if the counter is exhausted.
    pub fn next_seq(&self) -> Option<u64> {
        self.seq.checked_add(1)
    }
}

/// The `prev_hash` of a device's first record.
pub fn genesis_hash(device_id: &DeviceId) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(GENESIS_TAG);
    ctx.update(device_id.as_str().as_bytes());
    finish(ctx)
}

/// The hash of a record from its parts.
pub fn record_hash(
    prev_hash: &[u8; 32],
    seq: u64,
    journal_key_id: &[u8; 8],
    body: &[u8],
) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(RECORD_TAG);
    ctx.update(prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(journal_key_id);
    ctx.update(body);
    finish(ctx)
}

/// What the journal key signs for a record: the record tag followed by the record hash.
pub fn record_signing_message(hash: &[u8; 32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(RECORD_TAG.len().saturating_add(hash.len()));
    msg.extend_from_slice(RECORD_TAG);
    msg.extend_from_slice(hash);
    msg
}

/// The key id of a journal public key: the first 8 bytes of its SHA-256.
pub fn journal_key_id(public_key: &[u8; 32]) -> [u8; 8] {
    let d = digest::digest(&digest::SHA256, public_key);
    let mut id = [0u8; 8];
    for (out, b) in id.iter_mut().zip(d.as_ref()) {
        *out = *b;
    }
    id
}

fn finish(ctx: digest::Context) -> [u8; 32] {
    let d = ctx.finish();
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(parts: &[&[u8]]) -> Vec<u8> {
        digest::digest(&digest::SHA256, &parts.concat())
            .as_ref()
            .to_vec()
    }

    #[test]
    fn genesis_is_tag_then_device_id() {
        let dev = DeviceId::new("term-0001").unwrap();
        assert_eq!(
            genesis_hash(&dev).to_vec(),
            sha256(&[b"posguard/genesis/v1", b"term-0001"])
        );
        assert_ne!(
            genesis_hash(&dev),
            genesis_hash(&DeviceId::new("term-0002").unwrap())
        );
        assert_eq!(ChainHead::genesis(&dev).seq, 0);
    }

    #[test]
    fn record_hash_layout() {
        let prev = [1u8; 32];
        let kid = [2u8; 8];
        let h = record_hash(&prev, 0x0102_0304_0506_0708, &kid, b"body");
        assert_eq!(
            h.to_vec(),
            sha256(&[
                b"posguard/record/v1",
                &prev,
                &[1, 2, 3, 4, 5, 6, 7, 8],
                &kid,
                b"body"
            ])
        );
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        let pk = [9u8; 32];
        assert_eq!(journal_key_id(&pk).to_vec(), sha256(&[&pk])[..8].to_vec());
    }

    #[test]
    fn head_next_seq_saturates_to_none() {
        let head = ChainHead {
            seq: u64::MAX,
            hash: [0; 32],
        };
        assert_eq!(head.next_seq(), None);
    }
}
