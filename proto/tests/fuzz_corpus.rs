//! The checked-in fuzz inputs of the wire-format targets, replayed as ordinary tests.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn client_frame_corpus_and_regressions_pass() {
    // The frame decoder splits every stored stream the same way in any chunks, within bounds.
    replay::replay("client_frame", krest_proto::fuzzing::client_frame);
}

#[test]
fn admin_http_corpus_and_regressions_pass() {
    // Every stored admin request parses, or is refused, as the codec promises.
    replay::replay("admin_http", krest_proto::fuzzing::admin_http);
}
