//! Raft state files: the term and vote of each log that is a Raft group's, one small file per
//! log under `<root>/raft/`, replaced whole and durably on every change.
//!
//! ```text
//! <root>/raft/<log name>         32 bytes: "KRS1", term, vote (0 = none), commit index (each
//!                                u64 LE), CRC-32C of the 28 bytes before it (u32 LE)
//! <root>/raft/<log name>.tmp     a replacement a crash interrupted; removed at open
//! ```
//!
//! A save writes the temporary file, fsyncs it, renames it over the old one and fsyncs the
//! directory: after a crash the file holds the old state or the new one, never a mix. A file
//! that fails its checksum was not written by a save this module finished, so opening refuses it
//! (a member that forgot its vote could vote twice in one term).

use std::path::{Path, PathBuf};

use krest_core::ids::{LogIndex, NodeId, Term};
use krest_core::RaftState;

use crate::error::{io_error, StorageError};
use crate::file_system::{AppendFile, EntryKind, FileSystem};
use crate::files;

/// The directory under the data directory's root.
pub(crate) const RAFT_DIRECTORY_NAME: &str = "raft";

const MAGIC: &[u8; 4] = b"KRS1";
const FILE_BYTES: usize = 32;
/// The bytes the checksum covers.
const CHECKED_BYTES: usize = FILE_BYTES - 4;
const TEMPORARY_SUFFIX: &str = ".tmp";

/// The bytes of a state file.
fn encode(state: RaftState) -> [u8; FILE_BYTES] {
    let mut bytes = [0u8; FILE_BYTES];
    bytes[..4].copy_from_slice(MAGIC);
    bytes[4..12].copy_from_slice(&state.term.0.to_le_bytes());
    let vote = state.voted_for.map_or(0, |node| node.0);
    bytes[12..20].copy_from_slice(&vote.to_le_bytes());
    bytes[20..28].copy_from_slice(&state.commit.0.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[..CHECKED_BYTES]);
    bytes[CHECKED_BYTES..].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

/// The state in `bytes`, or why they are not a state file.
fn decode(bytes: &[u8]) -> Result<RaftState, String> {
    if bytes.len() != FILE_BYTES {
        return Err(format!("{} bytes instead of {FILE_BYTES}", bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err("not a Raft state file (wrong magic)".into());
    }
    let word = |range: std::ops::Range<usize>| {
        u64::from_le_bytes(bytes[range].try_into().expect("eight bytes"))
    };
    let stored = u32::from_le_bytes(bytes[CHECKED_BYTES..].try_into().expect("four bytes"));
    if crc32c::crc32c(&bytes[..CHECKED_BYTES]) != stored {
        return Err("checksum mismatch".into());
    }
    let vote = word(12..20);
    Ok(RaftState {
        term: Term(word(4..12)),
        voted_for: (vote != 0).then_some(NodeId(vote)),
        commit: LogIndex(word(20..28)),
    })
}

/// Saves `state` as the state of log `name` in `directory`, durably (see the module
/// documentation).
pub(crate) fn save<F: FileSystem>(
    file_system: &F,
    directory: &Path,
    name: &str,
    state: RaftState,
) -> Result<(), StorageError> {
    let path = directory.join(name);
    let temporary = directory.join(format!("{name}{TEMPORARY_SUFFIX}"));
    if file_system.read(&temporary).is_ok() {
        files::remove_file(file_system, &temporary)?;
    }
    let mut file = files::create_for_append(file_system, &temporary)?;
    file.append(&encode(state))
        .map_err(io_error(&temporary, "write"))?;
    file.sync_all().map_err(io_error(&temporary, "fsync"))?;
    drop(file);
    file_system
        .rename(&temporary, &path)
        .map_err(io_error(&path, "rename into place"))?;
    files::sync_directory(file_system, directory)
}

/// Removes the state of log `name`, if it has one (the log is being deleted).
pub(crate) fn remove<F: FileSystem>(
    file_system: &F,
    directory: &Path,
    name: &str,
) -> Result<(), StorageError> {
    let path = directory.join(name);
    if file_system.read(&path).is_err() {
        return Ok(());
    }
    files::remove_file(file_system, &path)?;
    files::sync_directory(file_system, directory)
}

/// Every state in `directory` (created if missing) by log name, sorted; leftovers of
/// interrupted saves are removed. A file that is not a valid state file is an error.
pub(crate) fn load_all<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<Vec<(String, RaftState)>, StorageError> {
    files::create_directory_durably(file_system, directory)?;
    scan(file_system, directory, true)
}

/// [`load_all`] without changing anything (leftovers are skipped, a missing directory holds
/// no state): for reading the states before the data directory is opened.
pub(crate) fn read_all<F: FileSystem>(
    file_system: &F,
    directory: &Path,
) -> Result<Vec<(String, RaftState)>, StorageError> {
    if !file_system.is_directory(directory) {
        return Ok(Vec::new());
    }
    scan(file_system, directory, false)
}

fn scan<F: FileSystem>(
    file_system: &F,
    directory: &Path,
    remove_temporaries: bool,
) -> Result<Vec<(String, RaftState)>, StorageError> {
    let mut states = Vec::new();
    let mut removed = false;
    for entry in files::list_directory(file_system, directory)? {
        let path: PathBuf = entry.path;
        let name = files::entry_name(&path).filter(|_| entry.kind == EntryKind::File);
        let Some(name) = name else {
            return Err(StorageError::UnexpectedFile { path });
        };
        if name.ends_with(TEMPORARY_SUFFIX) {
            if remove_temporaries {
                files::remove_file(file_system, &path)?;
                removed = true;
            }
            continue;
        }
        if !crate::is_valid_log_name(&name) {
            return Err(StorageError::UnexpectedFile { path });
        }
        let mut bytes = Vec::new();
        files::read_whole(file_system, &path, &mut bytes)?;
        let state = decode(&bytes).map_err(|reason| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        states.push((name, state));
    }
    if removed {
        files::sync_directory(file_system, directory)?;
    }
    states.sort();
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_disk::{CrashMode, MemoryDisk};
    use krest_core::rng::Rng;

    fn state(term: u64, vote: Option<u64>) -> RaftState {
        RaftState {
            term: Term(term),
            voted_for: vote.map(NodeId),
            commit: LogIndex(term.wrapping_mul(10)),
        }
    }

    #[test]
    fn a_state_round_trips_and_a_flipped_bit_is_refused() {
        for sample in [
            state(0, None),
            state(7, Some(3)),
            state(u64::MAX, Some(u64::MAX)),
        ] {
            assert_eq!(decode(&encode(sample)), Ok(sample));
        }
        let mut bytes = encode(state(7, Some(3)));
        bytes[9] ^= 0x10;
        assert_eq!(decode(&bytes), Err("checksum mismatch".into()));
        assert!(decode(&bytes[..CHECKED_BYTES]).is_err());
    }

    /// A save is durable when it returns: a crash right after keeps it; a later save replaces
    /// it whole; a leftover temporary file is cleared at open; a removed state is gone.
    #[test]
    fn saves_survive_a_crash_and_replace_each_other_whole() {
        for mode in CrashMode::ALL {
            let mut rng = Rng::from_seed(9);
            let disk = MemoryDisk::new(rng.fork());
            let file_system = disk.file_system();
            let directory = Path::new("/data/raft");
            assert_eq!(read_all(&file_system, directory).unwrap(), []);
            assert_eq!(load_all(&file_system, directory).unwrap(), []);
            save(&file_system, directory, "meta", state(2, Some(1))).unwrap();
            save(&file_system, directory, "queue-4", state(5, None)).unwrap();
            save(&file_system, directory, "meta", state(3, None)).unwrap();
            disk.crash_with(mode, &mut rng);
            let file_system = disk.file_system();
            let stray = file_system
                .create_for_append(&directory.join("meta.tmp"))
                .map(drop);
            assert!(stray.is_ok());
            assert_eq!(
                read_all(&file_system, directory).unwrap(),
                load_all(&file_system, directory).unwrap(),
            );
            assert_eq!(
                load_all(&file_system, directory).unwrap(),
                [
                    ("meta".to_string(), state(3, None)),
                    ("queue-4".to_string(), state(5, None))
                ],
                "{mode:?}"
            );
            remove(&file_system, directory, "queue-4").unwrap();
            remove(&file_system, directory, "queue-9").unwrap();
            disk.crash_with(mode, &mut rng);
            assert_eq!(
                load_all(&disk.file_system(), directory).unwrap(),
                [("meta".to_string(), state(3, None))],
                "{mode:?}"
            );
        }
    }
}
