//! posguard-proto: the data that crosses a boundary (disk, socket, network) and the code that
//! verifies it. Pure: no I/O, no clocks, no randomness of its own.
//!
//! Modules:
//! - [`version`]: protocol and format version numbers.
#![forbid(unsafe_code)]

pub mod version;
