//! Fuzz target bodies for the wire formats, public so that the cargo-fuzz targets in `fuzz/` and
//! the corpus replay test in `tests/fuzz_corpus.rs` run exactly the same checks.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the properties the
//! codec promises:
//!
//! - [`client_frame`]: the frame decoder splits a stream the same way whatever chunks it arrives
//!   in, never yields a body over the maximum, never lets a length prefix drive an allocation
//!   past the maximum, and every body that decodes as a `ClientFrame` survives a re-encoding.
//! - [`admin_http`]: the admin HTTP parser answers every input with a request, "read more" or an
//!   error; a parsed request is within the limits, is parsed the same from any longer prefix, and
//!   parses back to itself when written out again; responses parse back to what was encoded.
//!
//! [`client_frame`]: crate::fuzzing::client_frame
//! [`admin_http`]: crate::fuzzing::admin_http

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::client::ClientFrame;
use crate::frame::{
    decode_body, frame_bytes, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES,
    LENGTH_PREFIX_BYTES,
};
use crate::http::{encode_response, parse_request, HttpError, HttpRequest, MAX_BODY_BYTES};

/// Largest chunk the byte stream is cut into.
const CHUNK_BYTES_MAX: usize = 64;

/// Bytes in front of the stream: two for the maximum frame size, one for the chunking.
const CLIENT_FRAME_PREAMBLE_BYTES: usize = 3;

/// Feeds a byte stream to a [`FrameDecoder`] in chunks and decodes each body as a
/// [`ClientFrame`].
///
/// Layout of `data`: bytes 0..2 are the maximum frame size (u16 little-endian; `0xffff` stands
/// for [`DEFAULT_MAX_FRAME_BYTES`]), byte 2 picks the chunking (0: one chunk, 1: one byte at a
/// time, otherwise pseudo-random sizes from 1 to 64 seeded by it), and the rest is the stream.
pub fn client_frame(data: &[u8]) {
    let preamble_bytes = data.len().min(CLIENT_FRAME_PREAMBLE_BYTES);
    let (preamble, stream) = data.split_at(preamble_bytes);
    let mut preamble = preamble.to_vec();
    preamble.resize(CLIENT_FRAME_PREAMBLE_BYTES, 0);
    let max_frame_bytes = match u16::from_le_bytes([preamble[0], preamble[1]]) {
        u16::MAX => DEFAULT_MAX_FRAME_BYTES,
        small => u32::from(small),
    };
    let expected = split_in_one_go(stream, max_frame_bytes);
    let observed = split_in_chunks(stream, max_frame_bytes, preamble[2]);
    assert_eq!(
        observed.bodies, expected.bodies,
        "the frames do not depend on how the stream was chunked"
    );
    assert_eq!(
        observed.ending, expected.ending,
        "the stream ends the same way"
    );
    for body in observed.bodies {
        check_client_frame_body(body);
    }
}

/// How a stream ended once every complete frame was taken off it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// These bytes are the start of a frame that has not arrived in full.
    Incomplete(Vec<u8>),
    /// A length prefix over the maximum; nothing after it can be read.
    TooLarge { declared_bytes: u64 },
}

/// The frame bodies of a stream and how it ended.
#[derive(Debug)]
struct Split {
    bodies: Vec<Bytes>,
    ending: Ending,
}

/// The reference: splits the whole stream at once, straight from the format's definition.
fn split_in_one_go(stream: &[u8], max_frame_bytes: u32) -> Split {
    let mut bodies = Vec::new();
    let mut rest = stream;
    while let Some(prefix) = rest.first_chunk::<LENGTH_PREFIX_BYTES>() {
        let declared = u32::from_be_bytes(*prefix);
        if declared > max_frame_bytes {
            let ending = Ending::TooLarge {
                declared_bytes: u64::from(declared),
            };
            return Split { bodies, ending };
        }
        let total = LENGTH_PREFIX_BYTES + declared as usize;
        if rest.len() < total {
            break;
        }
        bodies.push(Bytes::copy_from_slice(&rest[LENGTH_PREFIX_BYTES..total]));
        rest = &rest[total..];
    }
    Split {
        bodies,
        ending: Ending::Incomplete(rest.to_vec()),
    }
}

/// Splits the stream with the real decoder, appending it chunk by chunk as a runtime would and
/// taking every complete frame after each chunk. Checks the decoder's bounds on every call.
fn split_in_chunks(stream: &[u8], max_frame_bytes: u32, chunking: u8) -> Split {
    // The buffer never holds more than one unfinished frame plus one chunk; amortised growth
    // keeps its capacity within a small multiple of that. A reservation driven by a hostile
    // length prefix (up to 4 GiB) would exceed it by orders of magnitude.
    let mut chunk_sizes = ChunkSizes::new(chunking, stream.len());
    let largest_frame_bytes = LENGTH_PREFIX_BYTES + max_frame_bytes as usize;
    let capacity_bound = 8 * (largest_frame_bytes + chunk_sizes.largest()) + 64;
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    let mut buffer = BytesMut::new();
    let mut bodies = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(chunk_sizes.next_size().min(rest.len()));
        rest = after;
        buffer.extend_from_slice(chunk);
        loop {
            let length_before = buffer.len();
            let capacity_before = buffer.capacity();
            match decoder.decode(&mut buffer) {
                Ok(Some(body)) => {
                    assert!(
                        body.len() <= max_frame_bytes as usize,
                        "a body of {} bytes passed a maximum of {max_frame_bytes}",
                        body.len()
                    );
                    assert_eq!(
                        buffer.len(),
                        length_before - LENGTH_PREFIX_BYTES - body.len()
                    );
                    bodies.push(body);
                }
                Ok(None) => {
                    assert_eq!(buffer.len(), length_before, "an incomplete frame stays put");
                    break;
                }
                Err(FrameError::TooLarge {
                    declared_bytes,
                    max_bytes,
                }) => {
                    assert_eq!(max_bytes, max_frame_bytes);
                    assert!(declared_bytes > u64::from(max_frame_bytes));
                    assert_eq!(buffer.len(), length_before);
                    assert_eq!(
                        buffer.capacity(),
                        capacity_before,
                        "a refused frame reserves nothing"
                    );
                    let ending = Ending::TooLarge { declared_bytes };
                    return Split { bodies, ending };
                }
                Err(error @ FrameError::Malformed { .. }) => {
                    panic!("splitting frames never looks inside a body: {error}")
                }
            }
            assert!(
                buffer.capacity() <= capacity_bound,
                "the buffer grew to {} bytes for frames of at most {largest_frame_bytes}",
                buffer.capacity()
            );
        }
    }
    Split {
        bodies,
        ending: Ending::Incomplete(buffer.to_vec()),
    }
}

/// Chunk sizes: the whole stream, single bytes, or a pseudo-random walk seeded by `chunking`.
struct ChunkSizes {
    chunking: u8,
    stream_bytes: usize,
    state: u64,
}

impl ChunkSizes {
    fn new(chunking: u8, stream_bytes: usize) -> ChunkSizes {
        ChunkSizes {
            chunking,
            stream_bytes,
            state: u64::from(chunking),
        }
    }

    /// The largest size [`ChunkSizes::next_size`] returns.
    fn largest(&self) -> usize {
        match self.chunking {
            0 => self.stream_bytes.max(1),
            _ => CHUNK_BYTES_MAX,
        }
    }

    fn next_size(&mut self) -> usize {
        match self.chunking {
            0 => self.stream_bytes.max(1),
            1 => 1,
            _ => {
                // A linear congruential generator (Knuth's MMIX constants): only variety matters.
                self.state = self
                    .state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                1 + (self.state >> 33) as usize % CHUNK_BYTES_MAX
            }
        }
    }
}

/// A body either is not a `ClientFrame` (with a reason) or is one that survives re-encoding.
fn check_client_frame_body(body: Bytes) {
    let frame = match decode_body::<ClientFrame>(body) {
        Ok(frame) => frame,
        Err(FrameError::Malformed { reason }) => {
            assert!(!reason.is_empty(), "a malformed body says why");
            return;
        }
        Err(error) => panic!("decoding a body can only find it malformed: {error}"),
    };
    let encoded = frame.encode_to_vec();
    let decoded_again = ClientFrame::decode(&encoded[..]).expect("an encoded frame decodes");
    assert_eq!(decoded_again, frame, "a decoded frame survives re-encoding");
    let mut framed = BytesMut::from(&frame_bytes(&frame)[..]);
    let mut decoder = FrameDecoder::new(u32::MAX);
    let reframed: Option<ClientFrame> = decoder
        .decode_message(&mut framed)
        .expect("a framed frame decodes");
    assert_eq!(reframed.as_ref(), Some(&frame));
    assert!(framed.is_empty(), "one frame, nothing after it");
}

/// Content types the admin listener answers with.
const CONTENT_TYPES: [&str; 3] = [
    "application/json",
    "text/plain; charset=utf-8",
    "text/plain; version=0.0.4; charset=utf-8",
];

/// Statuses the admin listener answers with, and one it has no reason phrase for.
const STATUSES: [u16; 11] = [200, 201, 204, 400, 404, 405, 409, 413, 429, 503, 599];

/// How many shorter prefixes of the input are parsed again.
const PREFIXES_CHECKED: usize = 16;

/// Parses `data` as an admin HTTP request and checks what came out.
///
/// - A request is within the limits, and every shorter prefix of the input is "read more" or
///   the same request (a request never depends on bytes after it, and a partial one is never an
///   error). Written out again in canonical form, it parses back to itself.
/// - An error has a status and a message.
/// - A response encoded with the input (or the parsed body) as its body parses back, with
///   `httparse`, to the same status, length and body.
pub fn admin_http(data: &[u8]) {
    let response_body = match parse_request(data) {
        Ok(Some(request)) => {
            check_request(data, &request);
            request.body
        }
        Ok(None) => data.to_vec(),
        Err(error) => {
            assert!(matches!(error.status(), 400 | 413));
            assert!(!error.to_string().is_empty());
            data.to_vec()
        }
    };
    let selector = data.first().copied().unwrap_or(0) as usize;
    let status = STATUSES[selector % STATUSES.len()];
    let content_type = CONTENT_TYPES[selector % CONTENT_TYPES.len()];
    check_response(status, content_type, &response_body);
}

fn check_request(data: &[u8], request: &HttpRequest) {
    assert!(request.body.len() <= MAX_BODY_BYTES);
    assert!(!request.method.is_empty());
    assert!(
        !request.path.contains('?'),
        "the query is split off the path"
    );
    let step = (data.len() / PREFIXES_CHECKED).max(1);
    for length in (0..data.len()).step_by(step) {
        match parse_request(&data[..length]) {
            Ok(None) => {}
            Ok(Some(shorter)) => assert_eq!(&shorter, request, "a prefix of {length} bytes"),
            Err(error) => panic!("a prefix of {length} bytes of a valid request: {error}"),
        }
    }
    // An empty path needs its `?` to keep the request line's target non-empty.
    let target = match request.query.is_empty() && !request.path.is_empty() {
        true => request.path.clone(),
        false => format!("{}?{}", request.path, request.query),
    };
    let mut canonical = format!("{} {target} HTTP/1.1\r\n", request.method).into_bytes();
    if !request.body.is_empty() {
        canonical
            .extend_from_slice(format!("content-length: {}\r\n", request.body.len()).as_bytes());
    }
    canonical.extend_from_slice(b"\r\n");
    let head_bytes = canonical.len();
    canonical.extend_from_slice(&request.body);
    match parse_request(&canonical) {
        Ok(Some(again)) => assert_eq!(&again, request, "a request written out parses back"),
        // The input may have used bare line feeds: the canonical head can be a little longer.
        Err(HttpError::TooLarge) if head_bytes > crate::http::MAX_HEAD_BYTES => {}
        other => panic!("the canonical form of {request:?} parsed as {other:?}"),
    }
}

fn check_response(status: u16, content_type: &str, body: &[u8]) {
    let encoded = encode_response(status, content_type, body);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    let head_bytes = match response.parse(&encoded) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        other => panic!("an encoded response parses: {other:?}"),
    };
    assert_eq!(response.code, Some(status));
    assert!(response.reason.is_some_and(|reason| !reason.is_empty()));
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.to_vec())
    };
    assert_eq!(
        header("content-type"),
        Some(content_type.as_bytes().to_vec())
    );
    assert_eq!(
        header("content-length"),
        Some(body.len().to_string().into_bytes())
    );
    assert_eq!(header("connection"), Some(b"close".to_vec()));
    assert_eq!(
        &encoded[head_bytes..],
        body,
        "the body follows the head unchanged"
    );
}
