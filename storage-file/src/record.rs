//! The byte layout of one record, and the checks a record must pass to be believed.
//!
//! A record is a 24-byte header followed by its body:
//!
//! ```text
//! [u32 LE body_len][u32 LE crc32c][u64 LE term][u64 LE index][body_len bytes of body]
//! ```
//!
//! The CRC-32C covers `body_len`, `term`, `index` and the body, in that order (every byte of
//! the record except the checksum itself). Nothing here does I/O: encoding appends to a buffer
//! and decoding reads from a slice, so both are easy to test and to reuse from the recovery scan
//! and from the reader.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

/// Bytes of a record header.
pub(crate) const HEADER_BYTES: usize = 24;

/// The largest body a record can carry: its length must fit the header's `u32`.
pub const MAX_BODY_BYTES: usize = u32::MAX as usize;

/// One record of a log, as appended and as recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The Raft term the record was written in; stored and returned, never interpreted here.
    pub term: u64,
    /// The record's position in the log; consecutive across the whole log.
    pub index: u64,
    /// The payload, opaque to this crate.
    pub body: Bytes,
}

/// The fixed-size part in front of every body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) body_len: u32,
    pub(crate) checksum: u32,
    pub(crate) term: u64,
    pub(crate) index: u64,
}

impl Header {
    /// Parses the 24 header bytes; any bit pattern is a header, checks come later.
    pub(crate) fn parse(bytes: &[u8; HEADER_BYTES]) -> Header {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Header {
            body_len: u32_at(0),
            checksum: u32_at(4),
            term: u64_at(8),
            index: u64_at(16),
        }
    }

    /// Bytes the whole record takes on disk.
    pub(crate) fn record_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.body_len)
    }

    /// The checksum this header and `body` should carry.
    pub(crate) fn expected_checksum(&self, body: &[u8]) -> u32 {
        let mut covered = [0u8; HEADER_BYTES - 4];
        covered[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        covered[4..12].copy_from_slice(&self.term.to_le_bytes());
        covered[12..20].copy_from_slice(&self.index.to_le_bytes());
        crc32c::crc32c_append(crc32c::crc32c(&covered), body)
    }
}

/// Appends the encoding of one record to `buffer`. The caller has checked the body's size.
pub(crate) fn encode(buffer: &mut Vec<u8>, term: u64, index: u64, body: &[u8]) {
    let body_len = u32::try_from(body.len()).expect("caller checks MAX_BODY_BYTES");
    let header = Header {
        body_len,
        checksum: 0,
        term,
        index,
    };
    let checksum = header.expected_checksum(body);
    buffer.reserve(HEADER_BYTES + body.len());
    buffer.extend_from_slice(&body_len.to_le_bytes());
    buffer.extend_from_slice(&checksum.to_le_bytes());
    buffer.extend_from_slice(&term.to_le_bytes());
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(body);
}

/// Why the bytes at some offset are not the record that should be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Fewer than 24 bytes remain.
    ShortHeader { available_bytes: u64 },
    /// The header announces a body longer than what remains.
    BodyPastEnd { body_len: u32, available_bytes: u64 },
    /// The stored checksum does not match the bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The record is intact but does not carry the index that must come next.
    WrongIndex {
        expected_index: u64,
        found_index: u64,
    },
    /// Bytes follow the record with index `u64::MAX`, the last a log can hold.
    PastIndexSpace,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ShortHeader { available_bytes } => {
                write!(
                    formatter,
                    "only {available_bytes} bytes remain, short of a header"
                )
            }
            Problem::BodyPastEnd {
                body_len,
                available_bytes,
            } => write!(
                formatter,
                "the header announces a {body_len}-byte body but only {available_bytes} bytes \
                 follow it"
            ),
            Problem::ChecksumMismatch { stored, computed } => write!(
                formatter,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Problem::WrongIndex {
                expected_index,
                found_index,
            } => write!(
                formatter,
                "index {found_index} where index {expected_index} must come next"
            ),
            Problem::PastIndexSpace => write!(
                formatter,
                "bytes follow the record with index {}, the last a log can hold",
                u64::MAX
            ),
        }
    }
}

/// A record that passed every check, located inside the slice it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) header: Header,
    /// Where the body lies in the slice.
    pub(crate) body: Range<usize>,
}

impl Decoded {
    /// The offset just past this record.
    pub(crate) fn end(&self) -> usize {
        self.body.end
    }
}

/// Decodes the record starting at `offset` of `data`, which must carry `expected_index`.
pub(crate) fn decode_at(
    data: &[u8],
    offset: usize,
    expected_index: u64,
) -> Result<Decoded, Problem> {
    let decoded = decode_unchecked_index(data, offset)?;
    if decoded.header.index != expected_index {
        return Err(Problem::WrongIndex {
            expected_index,
            found_index: decoded.header.index,
        });
    }
    Ok(decoded)
}

/// Decodes the record starting at `offset` of `data`, checking length and checksum only.
pub(crate) fn decode_unchecked_index(data: &[u8], offset: usize) -> Result<Decoded, Problem> {
    let header = read_header(data, offset)?;
    let body_start = offset + HEADER_BYTES;
    let available_bytes = (data.len() - body_start) as u64;
    if u64::from(header.body_len) > available_bytes {
        return Err(Problem::BodyPastEnd {
            body_len: header.body_len,
            available_bytes,
        });
    }
    let body = body_start..body_start + header.body_len as usize;
    let computed = header.expected_checksum(&data[body.clone()]);
    if computed != header.checksum {
        return Err(Problem::ChecksumMismatch {
            stored: header.checksum,
            computed,
        });
    }
    Ok(Decoded { header, body })
}

/// Parses the header at `offset`, or says how many bytes were there instead.
pub(crate) fn read_header(data: &[u8], offset: usize) -> Result<Header, Problem> {
    let remaining = data.get(offset..).unwrap_or_default();
    match remaining.first_chunk::<HEADER_BYTES>() {
        Some(bytes) => Ok(Header::parse(bytes)),
        None => Err(Problem::ShortHeader {
            available_bytes: remaining.len() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(term: u64, index: u64, body: &[u8]) -> Vec<u8> {
        let mut buffer = Vec::new();
        encode(&mut buffer, term, index, body);
        buffer
    }

    // An encoded record decodes to the same term, index and body, and is header plus body long.
    #[test]
    fn encode_then_decode_round_trips() {
        let bytes = encoded(3, 42, b"hello");
        assert_eq!(bytes.len(), HEADER_BYTES + 5);
        let decoded = decode_at(&bytes, 0, 42).expect("valid record");
        assert_eq!(decoded.header.term, 3);
        assert_eq!(decoded.header.index, 42);
        assert_eq!(&bytes[decoded.body.clone()], b"hello");
        assert_eq!(decoded.end(), bytes.len());
    }

    // The header fields sit where the format says, little-endian.
    #[test]
    fn header_layout_matches_the_documented_format() {
        let bytes = encoded(0x0102, 0x0304, b"abc");
        assert_eq!(&bytes[0..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x0304u64.to_le_bytes());
        let mut covered = Vec::new();
        covered.extend_from_slice(&bytes[0..4]);
        covered.extend_from_slice(&bytes[8..]);
        assert_eq!(&bytes[4..8], &crc32c::crc32c(&covered).to_le_bytes());
    }

    // Every single-bit flip anywhere in a record is caught by one of the checks.
    #[test]
    fn every_bit_flip_is_detected() {
        let original = encoded(7, 9, b"some body bytes");
        for bit in 0..original.len() * 8 {
            let mut flipped = original.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_at(&flipped, 0, 9).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    // A zero-filled region never decodes as a record, whatever index is expected.
    #[test]
    fn zeros_are_not_a_record() {
        let zeros = [0u8; 64];
        for expected_index in [0, 1, 2] {
            assert!(matches!(
                decode_at(&zeros, 0, expected_index),
                Err(Problem::ChecksumMismatch { .. })
            ));
        }
    }

    // Truncated headers and bodies are told apart from checksum failures.
    #[test]
    fn short_data_is_reported_as_such() {
        let bytes = encoded(1, 1, b"0123456789");
        assert_eq!(
            decode_at(&bytes[..10], 0, 1),
            Err(Problem::ShortHeader {
                available_bytes: 10
            })
        );
        assert_eq!(
            decode_at(&bytes[..30], 0, 1),
            Err(Problem::BodyPastEnd {
                body_len: 10,
                available_bytes: 6
            })
        );
        assert_eq!(
            decode_at(&bytes, 0, 2),
            Err(Problem::WrongIndex {
                expected_index: 2,
                found_index: 1
            })
        );
    }
}
