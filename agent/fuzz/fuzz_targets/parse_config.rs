//! The agent's configuration file: any bytes give a configuration or an error naming the
//! problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posguard_agent::config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match AgentConfig::parse(text, "fuzz.toml") {
            Ok(config) => {
                let _ = config.device_id();
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
