//! The admin HTTP request parser and response encoder.
//!
//! The body, and what it checks, is `krest_proto::fuzzing::admin_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_proto::fuzzing::admin_http(data));
