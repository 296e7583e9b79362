//! Sequences of inputs driven into the broker core, its invariants checked after each.
//!
//! The body, and what it checks, is `krest_core::fuzzing::core_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| krest_core::fuzzing::core_inputs(data));
