//! The body of `POST /v1/enroll` and `/v1/renew`: JSON with a token and a PEM CSR, parsed the
//! way the server does, and the CSR checks (PEM, DER, signature, key type, requested identity)
//! on whatever CSR text it holds. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(csr) = body.get("csr_pem").and_then(serde_json::Value::as_str) {
            let _ = posguard_collector::pki::csr::check(csr, "till-1");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = posguard_collector::pki::csr::check(text, "till-1");
    }
});
