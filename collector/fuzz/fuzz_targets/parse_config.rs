//! `collector.toml`: any bytes give a configuration or an error naming the problem, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = posguard_collector::config::Config::parse(text) {
            assert!(!e.to_string().is_empty());
        }
    }
});
