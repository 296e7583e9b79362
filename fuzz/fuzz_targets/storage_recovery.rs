//! Recovery of a data directory whose segment files hold arbitrary bytes.
//!
//! The body, and what it checks, is `krest_storage_file::fuzzing::storage_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_storage_file::fuzzing::storage_recovery(data));
