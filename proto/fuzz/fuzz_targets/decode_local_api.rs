//! Local API request lines: parsing arbitrary bytes never panics, and every refusal is a
//! well-formed response that serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posguard_proto::local_api::parse_request;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let _ = request.method.len();
        }
        Err(response) => {
            assert!(!response.ok);
            assert!(response.error.is_some());
            let _ = serde_json::to_vec(&response).expect("responses serialize");
        }
    }
});
