//! One append-only log, split into segment files inside its own directory.
//!
//! Invariants kept by [`SegmentedLog`]:
//!
//! - `segments` is sorted and its indexes are consecutive: each segment's first index is one past
//!   the previous segment's last. Only the newest (active) segment may be empty.
//! - `active_file` is an append handle to the newest segment whenever there is one.
//! - Every segment other than the newest is whole on disk: before a new segment is created the
//!   active one is fsynced, and the new file's directory entry is fsynced as it is created. This
//!   is what lets recovery call any bad record outside the newest segment corruption.
//! - `synced_index` never exceeds the last index, and every record up to it is durable.
//! - After an fsync fails, or a failed write cannot be undone, the files' contents are unknown
//!   and `failed_operation` makes every later call return [`StorageError::Unusable`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{io_error, StorageError};
use crate::file_system::{AppendFile, FileSystem, OsFileSystem};
use crate::files;
use crate::reader::{offset_of, SegmentReader};
use crate::record::{encode, StoredRecord, HEADER_BYTES, MAX_BODY_BYTES};
use crate::recovery::scan_segment;
use crate::segment::{list_segment_files_in, segment_path, Segment};

/// The write buffer is kept between appends, but not beyond this size after a large record.
const WRITE_BUFFER_RETAINED_BYTES: usize = 1024 * 1024;

/// How a log is cut into segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment is started when the next record would make the active one larger than
    /// this. A record larger than this on its own gets a segment of its own.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    /// 64 MiB segments.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One append-only log split into segment files in its own directory, on the file system `F`
/// (the operating system's unless said otherwise).
///
/// The log does not lock its directory: open it through [`crate::DataDir`], which does, or make
/// sure no one else opens the same directory.
#[derive(Debug)]
pub struct SegmentedLog<F: FileSystem = OsFileSystem> {
    file_system: F,
    directory: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    active_file: Option<F::AppendFile>,
    /// The active file has writes that no fsync has covered yet.
    active_needs_sync: bool,
    /// Segment files were deleted since the directory was last fsynced.
    directory_needs_sync: bool,
    synced_index: Option<u64>,
    failed_operation: Option<&'static str>,
    write_buffer: Vec<u8>,
    /// The data directory's lock, held for as long as any of its logs is alive.
    directory_lock: Option<Arc<F::Lock>>,
}

impl SegmentedLog {
    /// [`SegmentedLog::open_with`] on the operating system's file system.
    pub fn open(
        directory: &Path,
        config: LogConfig,
    ) -> Result<(SegmentedLog, Vec<StoredRecord>), StorageError> {
        SegmentedLog::open_with(OsFileSystem, directory, config)
    }
}

impl<F: FileSystem> SegmentedLog<F> {
    /// Creates the directory if needed, recovers, and returns the log and every valid record in
    /// index order.
    ///
    /// A torn write at the tail of the newest segment is cut off (and the cut fsynced); any other
    /// bad record, gap or index going backwards is [`StorageError::Corrupt`]. What is recovered is
    /// fsynced before this returns, so [`SegmentedLog::synced_index`] starts at the last index.
    pub fn open_with(
        file_system: F,
        directory: &Path,
        config: LogConfig,
    ) -> Result<(SegmentedLog<F>, Vec<StoredRecord>), StorageError> {
        let mut records = Vec::new();
        let log = SegmentedLog::open_with_each(file_system, directory, config, &mut |segment| {
            records.extend(segment)
        })?;
        Ok((log, records))
    }

    /// [`SegmentedLog::open_with`], handing the valid records to `each` one segment file at a
    /// time, oldest first, as each is read: only one segment's data is in memory at once.
    /// Records already handed over stay valid if a later segment turns out corrupt (the open
    /// then fails).
    pub fn open_with_each(
        file_system: F,
        directory: &Path,
        config: LogConfig,
        each: &mut dyn FnMut(Vec<StoredRecord>),
    ) -> Result<SegmentedLog<F>, StorageError> {
        // Segments given up by an earlier log on this directory (in this process) are gone
        // before it is read, or the failure is reported.
        file_system
            .wait_for_removals(directory)
            .map_err(io_error(directory, "delete old segments in"))?;
        files::create_directory_durably(&file_system, directory)?;
        let segment_files = list_segment_files_in(&file_system, directory)?;
        let mut segments: Vec<Segment> = Vec::with_capacity(segment_files.len());
        // One buffer for every segment: a fresh 64 MiB allocation per segment is fresh memory
        // the kernel must fault in and zero, page by page (a quarter of a warm recovery's CPU).
        let mut buffer: Vec<u8> = Vec::new();
        for (position, (first_index, path)) in segment_files.iter().enumerate() {
            if let Some(previous) = segments.last() {
                check_follows(previous, *first_index, path)?;
            }
            let is_newest = position + 1 == segment_files.len();
            if let Some((_, next)) = segment_files.get(position + 1) {
                file_system.will_read(next);
            }
            files::read_whole(&file_system, path, &mut buffer)?;
            let data = Bytes::from(std::mem::take(&mut buffer));
            let scanned = scan_segment(path, *first_index, data.clone(), is_newest)?;
            if let Some(torn_tail) = &scanned.torn_tail {
                let mut file = files::open_for_append(&file_system, path)?;
                files::cut_and_sync(&mut file, path, torn_tail.offset)?;
            }
            if !scanned.records.is_empty() {
                each(scanned.records);
            }
            segments.push(scanned.segment);
            // Back for the next segment if `each` kept no record of this one (the core copies
            // what it keeps); otherwise the next read allocates.
            if let Ok(unshared) = data.try_into_mut() {
                buffer = Vec::from(unshared);
            }
        }
        let active_file = match segments.last() {
            Some(newest) => {
                let mut file = files::open_for_append(&file_system, &newest.path)?;
                // A previous process may have written without syncing; make it durable now.
                file.sync_data().map_err(io_error(&newest.path, "fsync"))?;
                Some(file)
            }
            None => None,
        };
        files::sync_directory(&file_system, directory)?;
        let mut log = SegmentedLog {
            file_system,
            directory: directory.to_path_buf(),
            config,
            segments,
            active_file,
            active_needs_sync: false,
            directory_needs_sync: false,
            synced_index: None,
            failed_operation: None,
            write_buffer: Vec::new(),
            directory_lock: None,
        };
        log.synced_index = log.last_index();
        Ok(log)
    }

    /// Writes one record. It sits in the operating system's page cache until the next
    /// [`SegmentedLog::sync`]. `index` must be `last_index() + 1`; when the log is empty any
    /// index is accepted and becomes the first index.
    pub fn append(&mut self, term: u64, index: u64, body: &[u8]) -> Result<(), StorageError> {
        self.append_many([(term, index, body)])
    }

    /// Writes consecutive records as [`SegmentedLog::append`] does, but gathers them into as few
    /// writes as possible: one per segment they land in (and per [`WRITE_BUFFER_RETAINED_BYTES`]
    /// of records), instead of one per record. A record is accounted for only once the write
    /// holding it succeeded; on an error, the records before the failed write are in the log
    /// and none after.
    pub fn append_many<'body>(
        &mut self,
        records: impl IntoIterator<Item = (u64, u64, &'body [u8])>,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        self.write_buffer.clear();
        // Sizes of the records encoded in `write_buffer`, not yet written.
        let mut pending: Vec<u64> = Vec::new();
        let mut last_index = self.last_index();
        for (term, index, body) in records {
            if body.len() > MAX_BODY_BYTES {
                self.write_pending(&mut pending)?;
                return Err(StorageError::BodyTooLarge {
                    path: self.directory.clone(),
                    body_bytes: body.len(),
                });
            }
            if let Some(last_index) = last_index {
                assert!(last_index < u64::MAX, "the log's index space is exhausted");
                if index != last_index + 1 {
                    self.write_pending(&mut pending)?;
                    return Err(StorageError::OutOfOrder {
                        path: self.directory.clone(),
                        expected_index: last_index + 1,
                        got_index: index,
                    });
                }
            }
            let record_bytes = (HEADER_BYTES + body.len()) as u64;
            let active_bytes = self.segments.last().map_or(0, |active| active.size_bytes);
            let pending_bytes = self.write_buffer.len() as u64;
            let fits = active_bytes + pending_bytes + record_bytes <= self.config.segment_bytes;
            if !pending.is_empty()
                && (!fits || self.write_buffer.len() >= WRITE_BUFFER_RETAINED_BYTES)
            {
                self.write_pending(&mut pending)?;
            }
            if pending.is_empty() {
                // The first record of a write: the active segment may have to change for it.
                self.prepare_active_segment(index, record_bytes)?;
            }
            encode(&mut self.write_buffer, term, index, body);
            pending.push(record_bytes);
            last_index = Some(index);
        }
        self.write_pending(&mut pending)?;
        self.write_buffer.shrink_to(WRITE_BUFFER_RETAINED_BYTES);
        Ok(())
    }

    /// Writes the records encoded in `write_buffer` (of the sizes in `pending`) to the active
    /// segment in one write, and accounts for them.
    fn write_pending(&mut self, pending: &mut Vec<u64>) -> Result<(), StorageError> {
        if pending.is_empty() {
            return Ok(());
        }
        let result = self.write_buffer_to_active_segment();
        self.write_buffer.clear();
        result?;
        let active = self
            .segments
            .last_mut()
            .expect("prepared for the first record");
        for record_bytes in pending.drain(..) {
            active.push_record(record_bytes);
        }
        self.active_needs_sync = true;
        Ok(())
    }

    /// Makes every record appended so far durable: one fdatasync of the active segment (older
    /// segments were synced when the log moved past them) and, when segment files were deleted,
    /// one fsync of the directory. One call covers any number of appends (group commit). Returns
    /// the last durable index, `None` for an empty log.
    ///
    /// If the fsync fails, the log becomes unusable: the kernel may have dropped the unwritten
    /// pages, so only a reopen can tell what is on disk.
    pub fn sync(&mut self) -> Result<Option<u64>, StorageError> {
        self.check_usable()?;
        if self.active_needs_sync {
            self.sync_active_segment()?;
        }
        if self.directory_needs_sync {
            let result = files::sync_directory(&self.file_system, &self.directory);
            self.fail_on_error(result, "fsync the directory")?;
            self.directory_needs_sync = false;
        }
        self.synced_index = self.last_index();
        Ok(self.synced_index)
    }

    /// Removes every record with an index above `index` (all of them if `index` is below the
    /// first). Segment files past the cut are deleted, newest first, and the segment holding
    /// `index` is cut; all of it is durable when this returns, so removed records never come
    /// back after a crash. Any failure here leaves the log unusable until it is reopened.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), StorageError> {
        self.check_usable()?;
        match self.last_index() {
            Some(last_index) if index < last_index => {}
            _ => return Ok(()),
        }
        let result = self.remove_records_after(index);
        self.fail_on_error(result, "truncate")?;
        self.synced_index = self.synced_index.min(self.last_index());
        Ok(())
    }

    /// Deletes the segment files all of whose records have an index below `index`, oldest first,
    /// never the newest (active) segment. Returns how many files it gave up. The files are
    /// removed by [`FileSystem::remove_files_in_order`] (in the background, on the real file
    /// system); if a crash comes first, the old segments simply come back.
    pub fn delete_segments_below(&mut self, index: u64) -> Result<usize, StorageError> {
        self.check_usable()?;
        // The records of segments[0] end just before segments[1] begins.
        let mut below = 0;
        while below + 1 < self.segments.len() && self.segments[below + 1].first_index <= index {
            below += 1;
        }
        if below == 0 {
            return Ok(0);
        }
        // Oldest first, each durable before the next: a crash that kept the removal of a newer
        // segment but lost that of an older one would leave a gap, which recovery must call
        // corruption.
        let paths = self
            .segments
            .drain(..below)
            .map(|segment| segment.path)
            .collect();
        self.file_system
            .remove_files_in_order(&self.directory, paths)
            .map_err(io_error(&self.directory, "delete segments in"))?;
        Ok(below)
    }

    /// Reads the records with indexes `from_index..=to_index`, which must all be in the log,
    /// stopping early once the bodies read would exceed `max_body_bytes` (at least one record is
    /// always returned). Each record is checked again as it is read.
    pub fn read_range(
        &self,
        from_index: u64,
        to_index: u64,
        max_body_bytes: u64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        self.check_usable()?;
        let (first_index, last_index) = (self.first_index(), self.last_index());
        let within = matches!((first_index, last_index),
            (Some(first), Some(last)) if first <= from_index && from_index <= to_index && to_index <= last);
        if !within {
            return Err(StorageError::OutOfRange {
                path: self.directory.clone(),
                from_index,
                to_index,
                first_index,
                last_index,
            });
        }
        let mut records = Vec::new();
        let mut body_bytes = 0u64;
        let mut index = from_index;
        let first_position = self
            .segments
            .partition_point(|segment| segment.first_index <= index)
            - 1;
        for segment in &self.segments[first_position..] {
            let checkpoint = segment.checkpoint_for(index);
            let mut reader = SegmentReader::open_at(&self.file_system, segment, checkpoint)?;
            for _ in checkpoint.index..index {
                reader.skip_record()?;
            }
            while index <= to_index && segment.contains(index) {
                let record = reader.read_record()?;
                body_bytes += record.body.len() as u64;
                if body_bytes > max_body_bytes && !records.is_empty() {
                    return Ok(records);
                }
                records.push(record);
                index += 1;
            }
            if index > to_index {
                break;
            }
        }
        Ok(records)
    }

    /// The index of the oldest record, `None` when the log is empty.
    pub fn first_index(&self) -> Option<u64> {
        let oldest = self.segments.first()?;
        (oldest.record_count > 0).then_some(oldest.first_index)
    }

    /// The index of the newest record, `None` when the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        // Only the newest segment can be empty, so this looks at two segments at most.
        self.segments.iter().rev().find_map(Segment::last_index)
    }

    /// The last index covered by a completed sync (or recovered at open), `None` if none is.
    pub fn synced_index(&self) -> Option<u64> {
        self.synced_index
    }

    /// How many segment files the log has, counting an empty active one.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The total size of the segment files in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    /// The directory holding the log's segment files.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> LogConfig {
        self.config
    }

    /// Removes the log's directory and all its files. The directory is first renamed to
    /// `<name>.deleting` (and that rename fsynced), so a crash part-way through never leaves a
    /// log with missing segments behind; [`crate::DataDir::open`] finishes such removals.
    pub fn destroy(self) -> Result<(), StorageError> {
        let SegmentedLog {
            file_system,
            directory,
            active_file,
            ..
        } = self;
        drop(active_file);
        // No removal handed over earlier may reach a directory made later at the same path.
        // Its failure no longer matters: everything goes.
        let _ = file_system.wait_for_removals(&directory);
        let Some(tombstone) = tombstone_path(&directory) else {
            return files::remove_directory_all(&file_system, &directory);
        };
        if file_system.is_directory(&tombstone) {
            files::remove_directory_all(&file_system, &tombstone)?;
        }
        file_system
            .rename(&directory, &tombstone)
            .map_err(io_error(&directory, "rename"))?;
        files::sync_parent_directory(&file_system, &directory)?;
        files::remove_directory_all(&file_system, &tombstone)
    }

    /// Keeps the data directory's lock alive for as long as this log is.
    pub(crate) fn hold_directory_lock(&mut self, lock: Arc<F::Lock>) {
        self.directory_lock = Some(lock);
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match self.failed_operation {
            None => Ok(()),
            Some(failed_operation) => Err(StorageError::Unusable {
                path: self.directory.clone(),
                failed_operation,
            }),
        }
    }

    /// Passes `result` through, marking the log unusable if it is an error.
    fn fail_on_error<T>(
        &mut self,
        result: Result<T, StorageError>,
        operation: &'static str,
    ) -> Result<T, StorageError> {
        if result.is_err() && self.failed_operation.is_none() {
            self.failed_operation = Some(operation);
        }
        result
    }

    /// Makes sure the active segment is the right one for a record of `record_bytes` with
    /// `index`, starting a new segment when there is none or the record does not fit.
    fn prepare_active_segment(
        &mut self,
        index: u64,
        record_bytes: u64,
    ) -> Result<(), StorageError> {
        let Some(active) = self.segments.last() else {
            return self.start_segment(index);
        };
        if active.record_count == 0 {
            if active.first_index == index {
                return Ok(());
            }
            // The log is empty and its leftover empty segment is named for another index.
            assert_eq!(
                self.segments.len(),
                1,
                "only an empty log has an empty segment at a new index"
            );
            self.active_file = None;
            let result = files::remove_file(&self.file_system, &self.segments[0].path);
            self.fail_on_error(result, "replace an empty segment")?;
            self.segments.clear();
            return self.start_segment(index);
        }
        if active.size_bytes + record_bytes <= self.config.segment_bytes {
            return Ok(());
        }
        // Older segments must be whole on disk before a newer one exists (see the module doc).
        if self.active_needs_sync {
            self.sync_active_segment()?;
        }
        self.start_segment(index)
    }

    /// Creates the segment file for `first_index`, makes its name durable, and makes it active.
    fn start_segment(&mut self, first_index: u64) -> Result<(), StorageError> {
        let path = segment_path(&self.directory, first_index);
        let file = files::create_for_append(&self.file_system, &path)?;
        self.segments.push(Segment::empty(path, first_index));
        self.active_file = Some(file);
        self.active_needs_sync = false;
        let result = files::sync_directory(&self.file_system, &self.directory);
        self.fail_on_error(result, "fsync the directory")
    }

    /// Writes the encoded records in `write_buffer` to the end of the active segment with one
    /// `write_all`. On failure the file is cut back, so the next append does not land after half
    /// a record; if even that fails, the log becomes unusable.
    fn write_buffer_to_active_segment(&mut self) -> Result<(), StorageError> {
        let active = self.segments.last().expect("an active segment");
        let file = self
            .active_file
            .as_mut()
            .expect("the active segment is open");
        let Err(source) = file.append(&self.write_buffer) else {
            return Ok(());
        };
        if file.set_len(active.size_bytes).is_err() {
            self.failed_operation = Some("undo a partial write");
        }
        Err(StorageError::Io {
            path: active.path.clone(),
            operation: "append a record to",
            source,
        })
    }

    /// fdatasyncs the active segment; a failure makes the log unusable.
    fn sync_active_segment(&mut self) -> Result<(), StorageError> {
        let active = self.segments.last().expect("an active segment");
        let file = self
            .active_file
            .as_mut()
            .expect("the active segment is open");
        let result = file.sync_data().map_err(io_error(&active.path, "fsync"));
        self.fail_on_error(result, "fsync a segment")?;
        self.active_needs_sync = false;
        Ok(())
    }

    /// The body of [`SegmentedLog::truncate_after`], for a log holding records past `index`.
    fn remove_records_after(&mut self, index: u64) -> Result<(), StorageError> {
        let mut removed_any = false;
        while let Some(newest) = self.segments.last() {
            if newest.first_index <= index {
                break;
            }
            self.active_file = None;
            files::remove_file(&self.file_system, &newest.path)?;
            self.segments.pop();
            removed_any = true;
        }
        if removed_any {
            files::sync_directory(&self.file_system, &self.directory)?;
        }
        let Some(newest) = self.segments.last_mut() else {
            self.active_needs_sync = false;
            return Ok(());
        };
        let cut_offset = offset_of(&self.file_system, newest, index + 1)?;
        let mut file = match self.active_file.take() {
            Some(file) => file,
            None => files::open_for_append(&self.file_system, &newest.path)?,
        };
        files::cut_and_sync(&mut file, &newest.path, cut_offset)?;
        newest.forget_from(index + 1, cut_offset);
        self.active_file = Some(file);
        Ok(())
    }
}

/// Checks that the segment starting at `first_index` (at `path`) can follow `previous`.
fn check_follows(previous: &Segment, first_index: u64, path: &Path) -> Result<(), StorageError> {
    if previous.record_count == 0 {
        return Err(StorageError::Corrupt {
            path: previous.path.clone(),
            offset: 0,
            reason: "the segment is empty but is not the newest".to_string(),
        });
    }
    if previous.next_index() != Some(first_index) {
        let previous_last = previous.last_index().expect("checked not empty above");
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "the segment starts at index {first_index} but the previous segment ends at index \
                 {previous_last}"
            ),
        });
    }
    Ok(())
}

/// `<parent>/<name>.deleting` for a log directory `<parent>/<name>`.
fn tombstone_path(directory: &Path) -> Option<PathBuf> {
    let mut name = directory.file_name()?.to_os_string();
    name.push(crate::data_dir::TOMBSTONE_SUFFIX);
    Some(directory.with_file_name(name))
}

#[cfg(test)]
mod memory_disk_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
