//! A blocking client that speaks raw frames, for bad-input tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use krest_proto::client::{client_frame, server_frame, ClientFrame, Hello, ServerFrame};
use krest_proto::frame::{frame_bytes, FrameDecoder};

/// One raw connection.
pub struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
    next_request: u64,
}

impl RawClient {
    /// Connects (no Hello yet).
    pub fn connect(address: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(address).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        RawClient {
            stream,
            buffer: BytesMut::new(),
            next_request: 1,
        }
    }

    /// Connects and completes the handshake.
    pub fn connect_hello(address: SocketAddr) -> RawClient {
        let mut client = RawClient::connect(address);
        let reply = client.request(client_frame::Body::Hello(Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: "raw-test".into(),
            producer_id: 0,
        }));
        assert!(
            matches!(reply.body, Some(server_frame::Body::HelloOk(_))),
            "{reply:?}"
        );
        client
    }

    /// Writes arbitrary bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one request and waits for the frame answering it (skipping pushed frames).
    pub fn request(&mut self, body: client_frame::Body) -> ServerFrame {
        let request_id = self.next_request;
        self.next_request += 1;
        let frame = frame_bytes(&ClientFrame {
            request_id,
            body: Some(body),
        });
        self.send_bytes(&frame).expect("request written");
        loop {
            let frame = self.read_frame().expect("a reply arrives");
            if frame.request_id == request_id {
                return frame;
            }
        }
    }

    /// Sends one request and returns the first frame the server sends back, or `None` if it
    /// closed the connection first (or the write failed).
    pub fn request_or_close(&mut self, body: client_frame::Body) -> Option<ServerFrame> {
        let request_id = self.next_request;
        self.next_request += 1;
        let frame = frame_bytes(&ClientFrame {
            request_id,
            body: Some(body),
        });
        self.send_bytes(&frame).ok()?;
        self.read_frame()
    }

    /// Reads the next frame; `None` when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<ServerFrame> {
        let mut decoder = FrameDecoder::new(64 * 1024 * 1024);
        loop {
            if let Some(frame) = decoder
                .decode_message::<ServerFrame>(&mut self.buffer)
                .expect("server frames are valid")
            {
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Whether the server closed the connection (reads until EOF or error, bounded by the
    /// read timeout).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(error) => {
                    return !matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}
