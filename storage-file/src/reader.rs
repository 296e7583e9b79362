//! Reading records of a segment back from disk after recovery, for range reads and truncation.
//!
//! Reads start at a [`Checkpoint`], so a lookup reads at most one checkpoint interval plus one
//! record. Every record read is checked again (length, checksum, index): a record that passed at
//! open but fails now has rotted on disk, and is reported as [`StorageError::Corrupt`], never
//! returned.

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{io_error, StorageError};
use crate::file_system::FileSystem;
use crate::record::{Header, Problem, StoredRecord, HEADER_BYTES};
use crate::segment::{Checkpoint, Segment, CHECKPOINT_INTERVAL_BYTES};

/// A forward-only cursor over the records of one segment file.
pub(crate) struct SegmentReader<F: FileSystem> {
    path: PathBuf,
    reader: BufReader<F::ReadFile>,
    /// The byte offset of the next record.
    offset: u64,
    /// The index the next record must carry.
    next_index: u64,
    /// The segment's size when the reader was opened: no record read extends past it.
    segment_bytes: u64,
}

impl<F: FileSystem> SegmentReader<F> {
    /// Opens `segment`'s file positioned at the record `checkpoint` names.
    pub(crate) fn open_at(
        file_system: &F,
        segment: &Segment,
        checkpoint: Checkpoint,
    ) -> Result<Self, StorageError> {
        let path = segment.path.clone();
        let mut file = file_system
            .open_for_reading(&path)
            .map_err(io_error(&path, "open for reading"))?;
        file.seek(SeekFrom::Start(checkpoint.offset))
            .map_err(io_error(&path, "seek in"))?;
        Ok(SegmentReader {
            reader: BufReader::with_capacity(CHECKPOINT_INTERVAL_BYTES as usize, file),
            path,
            offset: checkpoint.offset,
            next_index: checkpoint.index,
            segment_bytes: segment.size_bytes,
        })
    }

    /// The byte offset of the next record.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads and checks the next record.
    pub(crate) fn read_record(&mut self) -> Result<StoredRecord, StorageError> {
        let header = self.read_header()?;
        // Checked before allocating: a flipped bit in the length must not ask for 4 GiB.
        let available_bytes = self
            .segment_bytes
            .saturating_sub(self.offset + HEADER_BYTES as u64);
        if u64::from(header.body_len) > available_bytes {
            return Err(self.corrupt(Problem::BodyPastEnd {
                body_len: header.body_len,
                available_bytes,
            }));
        }
        let mut body = vec![0u8; header.body_len as usize];
        self.read_exactly(&mut body, "body")?;
        let computed = header.expected_checksum(&body);
        if computed != header.checksum {
            return Err(self.corrupt(Problem::ChecksumMismatch {
                stored: header.checksum,
                computed,
            }));
        }
        self.advance(&header);
        Ok(StoredRecord {
            term: header.term,
            index: header.index,
            body: Bytes::from(body),
        })
    }

    /// Steps over the next record, checking only its index (its body is not read).
    pub(crate) fn skip_record(&mut self) -> Result<(), StorageError> {
        let header = self.read_header()?;
        let body_bytes = i64::from(header.body_len);
        self.reader
            .seek_relative(body_bytes)
            .map_err(io_error(&self.path, "seek in"))?;
        self.advance(&header);
        Ok(())
    }

    fn read_header(&mut self) -> Result<Header, StorageError> {
        let mut bytes = [0u8; HEADER_BYTES];
        self.read_exactly(&mut bytes, "header")?;
        let header = Header::parse(&bytes);
        if header.index != self.next_index {
            return Err(self.corrupt(Problem::WrongIndex {
                expected_index: self.next_index,
                found_index: header.index,
            }));
        }
        Ok(header)
    }

    fn read_exactly(&mut self, buffer: &mut [u8], part: &str) -> Result<(), StorageError> {
        match self.reader.read_exact(buffer) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                Err(StorageError::Corrupt {
                    path: self.path.clone(),
                    offset: self.offset,
                    reason: format!(
                        "the file ends inside the record's {part}, though it was whole at open"
                    ),
                })
            }
            Err(error) => Err(io_error(&self.path, "read")(error)),
        }
    }

    fn advance(&mut self, header: &Header) {
        self.offset += header.record_bytes();
        self.next_index += 1;
    }

    fn corrupt(&self, problem: Problem) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            reason: format!("{problem}, found on read though the record was whole at open"),
        }
    }
}

/// The byte offset at which the record with `index` starts in `segment`; `index` may also be
/// one past the segment's last record, which gives the segment's size.
pub(crate) fn offset_of<F: FileSystem>(
    file_system: &F,
    segment: &Segment,
    index: u64,
) -> Result<u64, StorageError> {
    if segment.next_index() == Some(index) {
        return Ok(segment.size_bytes);
    }
    let checkpoint = segment.checkpoint_for(index);
    let mut reader = SegmentReader::open_at(file_system, segment, checkpoint)?;
    for _ in checkpoint.index..index {
        reader.skip_record()?;
    }
    Ok(reader.offset())
}
