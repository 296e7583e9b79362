//! Helpers shared by this crate's tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the directories of tests running at the same time in one process.
static NEXT_DIRECTORY_NUMBER: AtomicU64 = AtomicU64::new(0);

/// A fresh, not yet created directory under the system's temporary directory, named after the
/// process id and a counter, and removed with everything in it when dropped.
pub(crate) struct TemporaryDirectory {
    path: PathBuf,
}

impl TemporaryDirectory {
    /// A new directory path containing `label` for easier debugging.
    pub(crate) fn new(label: &str) -> TemporaryDirectory {
        let number = NEXT_DIRECTORY_NUMBER.fetch_add(1, Ordering::Relaxed);
        let name = format!("krest-storage-file-{}-{number}-{label}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // A leftover from an earlier process with the same pid would confuse the test.
        let _ = std::fs::remove_dir_all(&path);
        TemporaryDirectory { path }
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
