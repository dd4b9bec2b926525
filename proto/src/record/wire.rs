//! Byte layout of records, per format.
//!
//! Format 1, in postcard terms (varint = LEB128 unsigned; arrays are raw bytes):
//! `format: varint u16 (= 1) | seq: varint u64 | prev_hash: [u8; 32] | journal_key_id: [u8; 8]
//! | body: varint length + bytes (≤ 16 KiB) | hash: [u8; 32] | signature: [u8; 64]`.

use serde::Deserialize;

use super::Record;
use crate::codec::{self, DecodeError, MAX_BODY_LEN, MAX_RECORD_LEN, Writer, byte_array};
use crate::version::RECORD_FORMAT;

/// Format 1 after its format number, for postcard to read.
#[derive(Deserialize)]
struct V1 {
    seq: u64,
    #[serde(with = "byte_array")]
    prev_hash: [u8; 32],
    #[serde(with = "byte_array")]
    journal_key_id: [u8; 8],
    body: Vec<u8>,
    #[serde(with = "byte_array")]
    hash: [u8; 32],
    #[serde(with = "byte_array")]
    signature: [u8; 64],
}

pub(super) fn encode_v1(r: &Record) -> Vec<u8> {
    // Format, seq and body length (varints of at most 10 bytes each), the fixed-size fields and
    // the body: the collector re-encodes every record it receives to check it is canonical.
    let fixed = 2 + 10 + 32 + 8 + 10 + 32 + 64;
    let mut w = Writer::with_capacity(fixed + r.body.len());
    w.u16(RECORD_FORMAT);
    w.varint(r.seq);
    w.raw(&r.prev_hash);
    w.raw(&r.journal_key_id);
    w.bytes(&r.body);
    w.raw(&r.hash);
    w.raw(&r.signature);
    w.into_vec()
}

pub(super) fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    codec::check_len(bytes, MAX_RECORD_LEN)?;
    let (format, rest) = codec::take_format(bytes)?;
    match format {
        RECORD_FORMAT => decode_v1(bytes, rest),
        other => Err(DecodeError::UnsupportedFormat(other)),
    }
}

fn decode_v1(all: &[u8], rest: &[u8]) -> Result<Record, DecodeError> {
    let v1: V1 = codec::decode_exact(rest)?;
    if v1.body.len() > MAX_BODY_LEN {
        return Err(DecodeError::OutOfRange("body longer than 16 KiB"));
    }
    let mut record = Record {
        format: RECORD_FORMAT,
        seq: v1.seq,
        prev_hash: v1.prev_hash,
        journal_key_id: v1.journal_key_id,
        body: v1.body,
        hash: v1.hash,
        signature: v1.signature,
        encoded: Vec::new(),
    };
    let again = encode_v1(&record);
    codec::ensure_canonical(all, &again)?;
    record.encoded = again;
    Ok(record)
}
