//! Configuration text, environment variables and flags.
//!
//! The body, and what it checks, is `krest_core::fuzzing::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_core::fuzzing::config_toml(data));
