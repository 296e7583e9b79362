//! The checked-in fuzz inputs of the recovery target, replayed as ordinary tests.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn storage_recovery_corpus_and_regressions_pass() {
    // Every stored data directory recovers cleanly and idempotently, or is refused with the
    // file and offset of the corruption.
    replay::replay(
        "storage_recovery",
        krest_storage_file::fuzzing::storage_recovery,
    );
}
