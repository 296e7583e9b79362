//! The checked-in fuzz inputs of the core's targets, replayed as ordinary tests.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn config_toml_corpus_and_regressions_pass() {
    // Every stored configuration text loads valid and round-trips, or is refused with a reason.
    replay::replay("config_toml", krest_core::fuzzing::config_toml);
}

#[test]
fn core_inputs_corpus_and_regressions_pass() {
    // Every stored input sequence keeps the node's invariants after each input, and answers
    // every request once.
    replay::replay("core_inputs", krest_core::fuzzing::core_inputs);
}

#[test]
fn peer_frames_corpus_and_regressions_pass() {
    // Every stored peer input keeps the node's invariants, counts every frame and trusts none.
    replay::replay("peer_frames", krest_core::fuzzing::peer_frames);
}

/// Prints what one input does, input by input: `KREST_FUZZ_INPUT=$PWD/<file> cargo test -p
/// krest-core --test fuzz_corpus trace_one_core_input -- --ignored --nocapture` (the test runs
/// in `core/`, so give an absolute path).
#[test]
#[ignore = "a debugging aid: needs KREST_FUZZ_INPUT"]
fn trace_one_core_input() {
    // The trace of the input named by KREST_FUZZ_INPUT, printed as it runs.
    let path = std::env::var_os("KREST_FUZZ_INPUT").expect("KREST_FUZZ_INPUT names an input");
    let data = std::fs::read(&path).expect("the input can be read");
    krest_core::fuzzing::core_inputs_traced(&data, &mut |line| println!("{line}"));
}
