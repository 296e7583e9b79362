//! Client frames: the frame decoder fed in chunks, then `ClientFrame` bodies.
//!
//! The body, and what it checks, is `krest_proto::fuzzing::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_proto::fuzzing::client_frame(data));
