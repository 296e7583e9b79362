//! The deterministic simulator, run as ordinary tests: a few short seeds pass every checker,
//! and a seed replays exactly. Longer runs, the regression seeds and the planted bugs run from
//! `.ci/run` through the release `krest-sim` binary.

use krest_tests::sim::{self, Ending, Options};

/// Short runs of one node: a debug build simulates about a second per second. (Clusters:
/// `krest_core::cluster::simulation`'s own tests, and `krest-sim` in CI.)
fn short(seed: u64) -> Options {
    Options {
        chaos_ms: 4_000,
        nodes: Some(1),
        ..Options::new(seed)
    }
}

// The same seed gives the same run: equal trace hashes (every node input and command) and
// equal event counts, run after run; another seed gives another trace.
#[test]
fn the_same_seed_replays_the_same_trace() {
    let first = sim::run(short(7));
    let again = sim::run(short(7));
    let other = sim::run(short(8));
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.violations, again.violations);
    assert_ne!(first.trace_hash, other.trace_hash);
    assert!(first.events > 1_000, "a run does something: {first:?}");
}

// A handful of seeds go through crashes and faults and pass every checker, including the
// liveness check at the end of the drain.
#[test]
fn short_seeds_pass_every_checker() {
    for seed in 0..4 {
        let report = sim::run(short(seed));
        assert!(
            report.passed(),
            "seed {seed} failed; replay with `cargo run --release -p krest-tests --bin krest-sim -- --seed {seed} --chaos-seconds 4`: {:#?}",
            report.violations
        );
        assert!(report.publishes_confirmed > 0 && report.acks_confirmed > 0);
        if report.ending == Ending::Drained {
            assert!(report.faults.get("node-started").copied().unwrap_or(0) >= 1);
        }
    }
}
