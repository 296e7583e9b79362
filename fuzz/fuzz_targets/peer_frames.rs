//! Arbitrary peer frames and Raft messages from several peers, driven into a node.
//!
//! The body, and what it checks, is `krest_core::fuzzing::peer_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_core::fuzzing::peer_frames(data));
