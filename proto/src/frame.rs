//! Length-prefixed frames: a u32 big-endian length, then that many bytes of protobuf.
//!
//! The decoder is sans-IO: the caller appends whatever bytes arrived to a `BytesMut` and asks
//! for complete frames. The declared length is checked against the maximum before anything is
//! reserved, so a hostile prefix (say, 4 GiB) costs nothing but an error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The default largest frame body, 8 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// Why a byte stream is not a valid sequence of frames. Every variant is final for the
/// connection: the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {declared_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// What the prefix said.
        declared_bytes: u64,
        /// The configured limit.
        max_bytes: u32,
    },
    /// The body is not a valid protobuf message of the expected type.
    #[error("frame body is not a valid protobuf message: {reason}")]
    Malformed {
        /// What the protobuf decoder reported.
        reason: String,
    },
}

/// Splits a byte stream into frame bodies.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self { max_frame_bytes }
    }

    /// The configured maximum.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Takes one complete frame body off the front of `buffer`, if there is one. `Ok(None)`
    /// means more bytes are needed; the buffer is left as it was.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buffer.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let declared = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        if declared > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                declared_bytes: u64::from(declared),
                max_bytes: self.max_frame_bytes,
            });
        }
        let total = LENGTH_PREFIX_BYTES + declared as usize;
        if buffer.len() < total {
            // Reserve only what the (already bounded) frame still needs.
            buffer.reserve(total - buffer.len());
            return Ok(None);
        }
        buffer.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(buffer.split_to(declared as usize).freeze()))
    }

    /// Decodes one message of type `M`, if a complete frame is buffered.
    pub fn decode_message<M: Message + Default>(
        &mut self,
        buffer: &mut BytesMut,
    ) -> Result<Option<M>, FrameError> {
        match self.decode(buffer)? {
            None => Ok(None),
            Some(body) => decode_body(body).map(Some),
        }
    }
}

/// Decodes one frame body.
pub fn decode_body<M: Message + Default>(body: Bytes) -> Result<M, FrameError> {
    M::decode(body).map_err(|error| FrameError::Malformed {
        reason: error.to_string(),
    })
}

/// Appends `message` as one frame to `out`.
pub fn encode_frame<M: Message>(message: &M, out: &mut BytesMut) {
    let length = message.encoded_len();
    assert!(
        length <= u32::MAX as usize,
        "frame length overflows the u32 prefix"
    );
    out.reserve(LENGTH_PREFIX_BYTES + length);
    out.put_u32(length as u32);
    message
        .encode(out)
        .expect("BytesMut grows, encoding cannot run out of space");
}

/// `message` as one frame, in a buffer of its own.
pub fn frame_bytes<M: Message>(message: &M) -> Bytes {
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + message.encoded_len());
    encode_frame(message, &mut out);
    out.freeze()
}

/// Encodes many small messages into shared blocks: each result is a `Bytes` of its own, but
/// they are cut from one allocation of [`SharedEncoder::BLOCK_BYTES`] until it is full, so a
/// broker encoding a record and a reply per message does not call the allocator per message.
/// A result keeps its whole block alive until it is dropped: use it for what is short-lived
/// (frames on their way to a socket, records on their way to a file).
#[derive(Debug, Default)]
pub struct SharedEncoder {
    block: BytesMut,
}

impl SharedEncoder {
    /// Bytes of each block (a message larger than that gets a block of its own size).
    pub const BLOCK_BYTES: usize = 64 * 1024;

    /// An encoder; its first block is allocated on first use.
    pub fn new() -> SharedEncoder {
        SharedEncoder::default()
    }

    /// Room for `bytes` more in the current block, or a new block.
    fn make_room(&mut self, bytes: usize) {
        if self.block.capacity() < bytes {
            self.block = BytesMut::with_capacity(bytes.max(Self::BLOCK_BYTES));
        }
    }

    /// `message`, encoded.
    pub fn encode<M: Message>(&mut self, message: &M) -> Bytes {
        self.make_room(message.encoded_len());
        message
            .encode(&mut self.block)
            .expect("room was made for the message");
        self.block.split().freeze()
    }

    /// `message` as one frame (length prefix included).
    pub fn frame<M: Message>(&mut self, message: &M) -> Bytes {
        self.make_room(LENGTH_PREFIX_BYTES + message.encoded_len());
        encode_frame(message, &mut self.block);
        self.block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{client_frame, ClientFrame, Ping};
    use proptest::prelude::*;

    fn ping(request_id: u64) -> ClientFrame {
        ClientFrame {
            request_id,
            body: Some(client_frame::Body::Ping(Ping {})),
        }
    }

    #[test]
    fn a_shared_encoder_gives_each_message_its_own_bytes_from_one_block() {
        let mut encoder = SharedEncoder::new();
        let frames: Vec<Bytes> = (0..1_000).map(|id| encoder.frame(&ping(id))).collect();
        for (id, frame) in frames.iter().enumerate() {
            assert_eq!(frame, &frame_bytes(&ping(id as u64)), "frame {id}");
        }
        let first = frames[0].as_ptr() as usize;
        let second = frames[1].as_ptr() as usize;
        assert_eq!(second, first + frames[0].len(), "cut from the same block");
        let large = crate::client::ClientFrame {
            request_id: 1,
            body: Some(client_frame::Body::Publish(crate::client::Publish {
                queue: "q".into(),
                messages: vec![crate::client::OutgoingMessage {
                    payload: Bytes::from(vec![7u8; 3 * SharedEncoder::BLOCK_BYTES]),
                    ..Default::default()
                }],
            })),
        };
        assert_eq!(encoder.encode(&large), Bytes::from(large.encode_to_vec()));
        assert_eq!(encoder.frame(&ping(5)), frame_bytes(&ping(5)));
    }

    #[test]
    fn a_frame_round_trips_when_it_arrives_one_byte_at_a_time() {
        let bytes = frame_bytes(&ping(7));
        let mut decoder = FrameDecoder::new(1024);
        let mut buffer = BytesMut::new();
        for (position, byte) in bytes.iter().enumerate() {
            buffer.put_u8(*byte);
            let decoded: Option<ClientFrame> = decoder.decode_message(&mut buffer).unwrap();
            if position + 1 < bytes.len() {
                assert!(decoded.is_none());
            } else {
                assert_eq!(decoded, Some(ping(7)));
            }
        }
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_declared_length_over_the_maximum_is_refused_before_any_allocation() {
        let mut decoder = FrameDecoder::new(1024);
        let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let capacity_before = buffer.capacity();
        let error = decoder.decode(&mut buffer).unwrap_err();
        assert_eq!(
            error,
            FrameError::TooLarge {
                declared_bytes: u64::from(u32::MAX),
                max_bytes: 1024
            }
        );
        assert_eq!(buffer.capacity(), capacity_before);
    }

    #[test]
    fn garbage_inside_a_well_formed_length_is_a_malformed_error() {
        let mut decoder = FrameDecoder::new(1024);
        let mut buffer = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        let result: Result<Option<ClientFrame>, _> = decoder.decode_message(&mut buffer);
        assert!(matches!(result, Err(FrameError::Malformed { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_reserve_past_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut decoder = FrameDecoder::new(64);
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(body)) = decoder.decode(&mut buffer) {
                prop_assert!(body.len() <= 64);
                let _ = decode_body::<ClientFrame>(body);
            }
            prop_assert!(buffer.capacity() <= 256 + 64 + LENGTH_PREFIX_BYTES);
        }

        #[test]
        fn frames_split_anywhere_decode_to_the_same_sequence(
            ids in proptest::collection::vec(1u64..u64::MAX, 1..20),
            split in 0usize..400,
        ) {
            let mut stream = BytesMut::new();
            for id in &ids {
                encode_frame(&ping(*id), &mut stream);
            }
            let split = split.min(stream.len());
            let mut decoder = FrameDecoder::new(1024);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buffer.extend_from_slice(chunk);
                while let Some(frame) = decoder.decode_message::<ClientFrame>(&mut buffer).unwrap() {
                    decoded.push(frame.request_id);
                }
            }
            prop_assert_eq!(decoded, ids);
        }
    }
}
