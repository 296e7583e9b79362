//! Replays the checked-in fuzz inputs of one target as an ordinary test: every file of
//! `fuzz/corpus/<target>/` (seeds and minimized finds) and of `fuzz/regressions/<target>/`
//! (every crash ever found, kept so it stays fixed).
//!
//! Included with `#[path]` by `tests/fuzz_corpus.rs` of proto, core and storage-file, so the
//! one copy sits next to the inputs it reads.

use std::path::{Path, PathBuf};

/// Runs `body` on every corpus and regression input of `target`. Fails if the corpus is
/// missing or empty (a replay of nothing proves nothing) or if the regressions directory is
/// missing; names the input that failed.
pub fn replay(target: &str, body: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ holds no inputs; run `python3 fuzz/seeds.py`"
    );
    let regressions = inputs(&fuzz.join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
        let outcome = std::panic::catch_unwind(|| body(&data));
        if outcome.is_err() {
            panic!("fuzz input {path:?} fails (its panic is printed above)");
        }
    }
}

/// The input files of a directory, in name order; `README*` files describe, they are not inputs.
fn inputs(directory: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot list {directory:?}: {error}"));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("README"))
        })
        .collect();
    paths.sort();
    paths
}
