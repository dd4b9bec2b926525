//! Uplink batches and acknowledgements: decoding arbitrary bytes never panics, and whatever
//! decodes re-encodes within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posguard_proto::uplink::{UplinkAck, UplinkBatch};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = UplinkBatch::from_bytes(data) {
        assert!(batch.records.len() <= posguard_proto::uplink::MAX_BATCH_RECORDS);
        let _ = batch.to_bytes();
    }
    if let Ok(ack) = UplinkAck::from_bytes(data) {
        assert!(ack.commands.len() <= posguard_proto::uplink::MAX_ACK_COMMANDS);
        let _ = ack.to_bytes();
    }
});
