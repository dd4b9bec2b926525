//! Journal records: an encoded event body chained to its predecessor by hash and signed by the
//! journal key.
//!
//! A [`Record`] keeps the exact bytes it was built from or decoded from; the body is decoded
//! from the stored bytes on demand, so what is hashed, signed, stored and shipped is one byte
//! string.

mod wire;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::{self, ChainHead};
use crate::codec::{DecodeError, EncodeError, encoded_bytes};
use crate::event::Event;
use crate::version::RECORD_FORMAT;

/// One signed link of a device's audit chain.
///
/// Fields are private: a `Record` is either built by [`Record::build`] or decoded by
/// [`Record::from_bytes`], both of which fix the encoding. Decoding checks the shape, not the
/// hash or signature: use [`crate::verify`] for that.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    format: u16,
    seq: u64,
    prev_hash: [u8; 32],
    journal_key_id: [u8; 8],
    body: Vec<u8>,
    hash: [u8; 32],
    signature: [u8; 64],
    encoded: Vec<u8>,
}

/// Why a record could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The event could not be encoded (or is larger than the body bound).
    #[error("cannot encode the event")]
    Encode(#[from] EncodeError),
    /// The head is at `u64::MAX`: no sequence number is left.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
}

impl Record {
    /// Builds the record that follows `head`: encodes `event`, computes the hash and asks `sign`
    /// for the Ed25519 signature of the message it is given (`RECORD_TAG || hash`).
    ///
    /// `journal_key_id` is [`chain::journal_key_id`] of the public half of the key `sign` uses.
    pub fn build(
        head: &ChainHead,
        journal_key_id: [u8; 8],
        event: &Event,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Self, BuildError> {
        let seq = head.next_seq().ok_or(BuildError::SeqExhausted)?;
        let body = event.to_body_bytes()?;
        let hash = chain::record_hash(&head.hash, seq, &journal_key_id, &body);
        let signature = sign(&chain::record_signing_message(&hash));
        let mut record = Self {
            format: RECORD_FORMAT,
            seq,
            prev_hash: head.hash,
            journal_key_id,
            body,
            hash,
            signature,
            encoded: Vec::new(),
        };
        record.encoded = wire::encode_v1(&record);
        Ok(record)
    }

    /// Decodes a record. Never panics; refuses input over
    /// [`MAX_RECORD_LEN`](crate::codec::MAX_RECORD_LEN), unknown format numbers, trailing bytes
    /// and non-canonical encodings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes)
    }

    /// The canonical encoding: the bytes to store and ship.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The canonical encoding, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.encoded
    }

    /// Format number (how the record and its body are laid out).
    pub fn format(&self) -> u16 {
        self.format
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Hash of the previous record (the genesis hash for the first).
    pub fn prev_hash(&self) -> &[u8; 32] {
        &self.prev_hash
    }

    /// Id of the journal key that signed the record.
    pub fn journal_key_id(&self) -> &[u8; 8] {
        &self.journal_key_id
    }

    /// The encoded event, exactly as hashed.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The hash the record claims (see [`Record::computed_hash`]).
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The journal key's Ed25519 signature over `RECORD_TAG || hash`.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The hash recomputed from the record's fields.
    pub fn computed_hash(&self) -> [u8; 32] {
        chain::record_hash(&self.prev_hash, self.seq, &self.journal_key_id, &self.body)
    }

    /// The chain point this record ends at (its seq and claimed hash).
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// Decodes the body.
    pub fn event(&self) -> Result<Event, DecodeError> {
        Event::from_body_bytes(&self.body)
    }
}

/// In serde (an uplink batch, say) a record is its canonical encoding as a byte string.
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        encoded_bytes::serialize(&self.encoded, s)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = encoded_bytes::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
