//! Records as read from disk or the network: decoding never panics, and whatever decodes is
//! canonical (re-encodes to the same bytes) and can be fed to a verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posguard_proto::chain::ChainHead;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use posguard_proto::verify::ChainVerifier;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = Record::from_bytes(data) else {
        return;
    };
    assert_eq!(record.as_bytes(), data, "decoded but not canonical");
    let _ = record.event();
    let Ok(device) = DeviceId::new("term-0001") else {
        return;
    };
    let Ok(dik) = DikPublicKey::from_der_or_point(&[4; 65]) else {
        return;
    };
    let anchor = ChainHead {
        seq: record.seq().saturating_sub(1),
        hash: *record.prev_hash(),
    };
    if let Ok(mut v) = ChainVerifier::new(&dik, &device, &[], anchor) {
        // No certified key: must be refused, never accepted.
        assert!(v.push(&record).is_err());
    }
});
