//! `krest-sim`: runs the deterministic simulator.
//!
//! ```text
//! krest-sim --seed 42            replay one seed, printing what happened
//! krest-sim --seed 42 --nodes 3  ... on a cluster of three (without --nodes each seed draws
//!                                1, 3 or 5 nodes; 1 runs the single-node simulator, 3 and 5
//!                                the cluster simulation of krest_core::cluster::simulation)
//! krest-sim --seeds 0..500       run a range of seeds
//! krest-sim --minutes 3          run random seeds for three minutes (--jobs N threads; one
//!                                per core by default)
//! krest-sim --regressions FILE   run every seed listed in FILE (one per line, # comments)
//! krest-sim --planted-bugs       run each planted bug until a checker catches it (needs the
//!                                planted-bugs feature); prints "caught X/Y"
//! krest-sim --determinism 0..20  run each seed twice, on two threads at once, and check that
//!                                both runs have the same trace hash and event count
//! ```
//!
//! A failing seed prints its violations and the one command that replays it; the exit status
//! is then 1. With `KREST_SIM_DEBUG=1` in the environment, every event is printed to stderr.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use krest_core::planted::PlantedBug;
use krest_tests::sim::{self, Ending, Options, Report};

/// Seeds each planted bug gets before it counts as missed.
const PLANTED_SEEDS_MAX: u64 = 200;

#[derive(Debug, Parser)]
#[command(name = "krest-sim", about = "Krest-MQ's deterministic simulator")]
struct Arguments {
    /// Replay this seed and print what it did.
    #[arg(long)]
    seed: Option<u64>,
    /// Run the seeds A..B (B excluded).
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Run random seeds for this many minutes (fractions allowed).
    #[arg(long)]
    minutes: Option<f64>,
    /// Run every seed listed in this file.
    #[arg(long)]
    regressions: Option<PathBuf>,
    /// Run every planted bug and report which the checkers caught.
    #[arg(long)]
    planted_bugs: bool,
    /// Run each of the seeds A..B twice, side by side, and compare their traces.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    determinism: Option<Range<u64>>,
    /// Switch on one planted bug by name for the seeds run.
    #[arg(long, value_name = "NAME")]
    planted: Option<String>,
    /// Simulated seconds of chaos per seed.
    #[arg(long, default_value_t = 20)]
    chaos_seconds: u64,
    /// Threads running seeds side by side (--seeds, --minutes, --regressions).
    #[arg(long, default_value_t = default_jobs())]
    jobs: usize,
    /// Nodes per seed (1, 3 or 5); drawn from each seed when not given.
    #[arg(long, value_parser = parse_nodes)]
    nodes: Option<usize>,
}

fn parse_nodes(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(nodes @ (1 | 3 | 5)) => Ok(nodes),
        _ => Err(format!("'{text}' nodes: choose 1, 3 or 5")),
    }
}

/// One thread per core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("'{text}' is not a range like 0..100"))?;
    let start: u64 = start
        .parse()
        .map_err(|_| format!("'{start}' is not a seed"))?;
    let end: u64 = end.parse().map_err(|_| format!("'{end}' is not a seed"))?;
    if start >= end {
        return Err(format!("the range {text} is empty"));
    }
    Ok(start..end)
}

fn main() -> ExitCode {
    match run(Arguments::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("krest-sim: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs what was asked; `Ok(false)` when a seed failed or a planted bug escaped.
fn run(arguments: Arguments) -> anyhow::Result<bool> {
    // The node's assertions become violations in the report; their default printing would
    // only repeat them.
    std::panic::set_hook(Box::new(|_| {}));
    let planted = match &arguments.planted {
        Some(name) => Some(
            PlantedBug::from_name(name)
                .with_context(|| format!("no planted bug is called '{name}'"))?,
        ),
        None => None,
    };
    if (planted.is_some() || arguments.planted_bugs) && !krest_core::planted::COMPILED_IN {
        bail!("planted bugs need a build with them: add --features planted-bugs");
    }
    let options = |seed| Options {
        chaos_ms: arguments.chaos_seconds * 1_000,
        planted,
        nodes: arguments.nodes,
        ..Options::new(seed)
    };
    let mut all_passed = true;
    if arguments.planted_bugs {
        all_passed &= run_planted(options(0));
    }
    if let Some(range) = arguments.determinism.clone() {
        all_passed &= run_determinism(range, &options);
    }
    if let Some(seed) = arguments.seed {
        let report = sim::run(options(seed));
        print_report(&report);
        all_passed &= report.passed();
    }
    if let Some(range) = arguments.seeds.clone() {
        all_passed &= run_many(range, None, &options, &arguments);
    }
    if let Some(path) = &arguments.regressions {
        // The seeds listed were found on one node; they stay there unless --nodes says.
        let single = |seed| Options {
            nodes: Some(arguments.nodes.unwrap_or(1)),
            ..options(seed)
        };
        let seeds = read_regressions(path)?;
        all_passed &= run_many(seeds.into_iter(), None, &single, &arguments);
    }
    if let Some(minutes) = arguments.minutes {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let mut rng = krest_core::rng::Rng::from_seed(start);
        let random = std::iter::repeat_with(move || rng.next_u64());
        let budget = Duration::from_secs_f64(minutes * 60.0);
        all_passed &= run_many(random, Some(budget), &options, &arguments);
    }
    Ok(all_passed)
}

/// Runs every seed twice at once, on two threads, and checks that the two runs are one run:
/// the same trace hash (every node input and command, in order), event count and verdict.
fn run_determinism(range: Range<u64>, options: &(dyn Fn(u64) -> Options + Sync)) -> bool {
    let started = Instant::now();
    let mut differing = 0;
    let count = range.end - range.start;
    for seed in range {
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| sim::run(options(seed)));
            let second = scope.spawn(|| sim::run(options(seed)));
            (
                first.join().expect("a run reports, it does not panic"),
                second.join().expect("a run reports, it does not panic"),
            )
        });
        let same = first.trace_hash == second.trace_hash
            && first.events == second.events
            && first.violations == second.violations;
        if !same {
            differing += 1;
            println!(
                "NOT DETERMINISTIC seed {seed}: trace {:016x} / {:016x}, events {} / {}",
                first.trace_hash, second.trace_hash, first.events, second.events
            );
        }
    }
    println!(
        "determinism: {} of {count} seeds replayed identically ({:.0} s)",
        count - differing,
        started.elapsed().as_secs_f64()
    );
    differing == 0
}

fn read_regressions(path: &PathBuf) -> anyhow::Result<Vec<u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut seeds = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let seed = line.parse().with_context(|| {
            format!("{}:{}: '{line}' is not a seed", path.display(), number + 1)
        })?;
        seeds.push(seed);
    }
    Ok(seeds)
}

/// What a batch of seeds added up to.
#[derive(Default)]
struct Tally {
    runs: u64,
    failed: u64,
    events: u64,
    corrupt: u64,
    faults: BTreeMap<&'static str, u64>,
}

/// Runs seeds on `jobs` threads until they run out or `budget` passes; prints one line per
/// failure (as found) and a summary. Each run is independent (its own disk, node and clients),
/// so threads only share the seed source and the tally.
fn run_many(
    seeds: impl Iterator<Item = u64> + Send,
    budget: Option<Duration>,
    options: &(dyn Fn(u64) -> Options + Sync),
    arguments: &Arguments,
) -> bool {
    let started = Instant::now();
    let seeds = Mutex::new(seeds);
    let tally = Mutex::new(Tally::default());
    let worker = || loop {
        if budget.is_some_and(|budget| started.elapsed() >= budget) {
            return;
        }
        let Some(seed) = seeds.lock().expect("no panics hold it").next() else {
            return;
        };
        let report = sim::run(options(seed));
        let mut tally = tally.lock().expect("no panics hold it");
        tally.runs += 1;
        tally.events += report.events;
        for (fault, count) in &report.faults {
            *tally.faults.entry(fault).or_default() += count;
        }
        if matches!(report.ending, Ending::CorruptionDetected(_)) {
            tally.corrupt += 1;
        }
        if !report.passed() {
            tally.failed += 1;
            print_failure(&report, arguments);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..arguments.jobs.max(1) {
            scope.spawn(worker);
        }
    });
    let tally = tally.into_inner().expect("no panics hold it");
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} seeds, {} failed; {:.0} seeds/minute, {:.0} events/second on {} threads; {} ended at detected corruption",
        tally.runs,
        tally.failed,
        tally.runs as f64 * 60.0 / seconds,
        tally.events as f64 / seconds,
        arguments.jobs.max(1),
        tally.corrupt
    );
    let fired: Vec<String> = tally
        .faults
        .iter()
        .map(|(fault, count)| format!("{fault} {count}"))
        .collect();
    println!("faults fired: {}", fired.join(", "));
    tally.failed == 0
}

fn print_failure(report: &Report, arguments: &Arguments) {
    println!(
        "FAILED seed {}: {} violation(s); first: {}",
        report.seed,
        report.violations.len(),
        report.violations[0].text
    );
    println!("  replay: {}", replay_command(report.seed, arguments));
}

fn replay_command(seed: u64, arguments: &Arguments) -> String {
    let mut command = String::from("cargo run --release -p krest-tests");
    if arguments.planted.is_some() {
        command.push_str(" --features planted-bugs");
    }
    command.push_str(&format!(" --bin krest-sim -- --seed {seed}"));
    if let Some(name) = &arguments.planted {
        command.push_str(&format!(" --planted {name}"));
    }
    if arguments.chaos_seconds != 20 {
        command.push_str(&format!(" --chaos-seconds {}", arguments.chaos_seconds));
    }
    if let Some(nodes) = arguments.nodes {
        command.push_str(&format!(" --nodes {nodes}"));
    }
    command
}

fn print_report(report: &Report) {
    println!(
        "seed {}: {} node(s), {} events, {:.1} s simulated, trace {:016x}, ending {:?}",
        report.seed,
        report.nodes,
        report.events,
        report.virtual_ms as f64 / 1000.0,
        report.trace_hash,
        report.ending
    );
    if let Some((declares, peer_frames, redirects)) = report.cluster {
        println!(
            "  declares confirmed at the end {declares}, publishes confirmed {} (after \
             {redirects} NOT_LEADER redirects followed), peer frames sent {peer_frames}",
            report.publishes_confirmed
        );
    } else {
        println!(
        "  publishes confirmed {}, deliveries {}, acks confirmed {}, operations with unknown outcome {}",
        report.publishes_confirmed,
        report.deliveries,
            report.acks_confirmed,
            report.operations_unknown
        );
    }
    let fired: Vec<String> = report
        .faults
        .iter()
        .map(|(fault, count)| format!("{fault} {count}"))
        .collect();
    println!("  faults: {}", fired.join(", "));
    if !report.passed() {
        println!("  the history's last operations:");
        for line in &report.history_tail {
            println!("    {line}");
        }
    }
    for violation in &report.violations {
        println!("  VIOLATION at {} ms: {}", violation.at_ms, violation.text);
    }
    println!("  {}", if report.passed() { "passed" } else { "FAILED" });
}

/// Runs each planted bug over seeds 0.. until a checker catches it, at most
/// [`PLANTED_SEEDS_MAX`] seeds; prints a line per bug and `caught X/Y`.
fn run_planted(template: Options) -> bool {
    let mut caught = 0;
    for bug in PlantedBug::ALL {
        let mut found = None;
        for seed in 0..PLANTED_SEEDS_MAX {
            let report = sim::run(Options {
                seed,
                planted: Some(bug),
                ..template
            });
            if let Some(violation) = report.violations.first() {
                found = Some((seed, violation.text.clone()));
                break;
            }
        }
        match found {
            Some((seed, text)) => {
                caught += 1;
                println!("caught  {:<36} seed {seed:>3}: {text}", bug.name());
            }
            None => println!(
                "MISSED  {:<36} no violation in {PLANTED_SEEDS_MAX} seeds",
                bug.name()
            ),
        }
    }
    println!("caught {caught}/{}", PlantedBug::ALL.len());
    caught == PlantedBug::ALL.len()
}
