//! A scripted stand-in for the server: a TCP listener on 127.0.0.1 that completes the
//! handshake and then lets the test read each client frame and write each answer by hand.

use bytes::BytesMut;
use krest_proto::client::{client_frame, server_frame, ClientFrame, Hello, HelloOk, ServerFrame};
use krest_proto::frame::{frame_bytes, FrameDecoder, DEFAULT_MAX_FRAME_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Accepts connections and hands each one over after the handshake.
pub(crate) struct FakeServer {
    pub(crate) address: String,
    connections: mpsc::UnboundedReceiver<FakeConnection>,
    accept_task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl FakeServer {
    pub(crate) async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let (sender, connections) = mpsc::unbounded_channel();
        let accept_task = tokio::spawn(async move {
            let mut connection_id = 0;
            while let Ok((stream, _)) = listener.accept().await {
                connection_id += 1;
                let connection = FakeConnection::handshake(stream, connection_id).await;
                if sender.send(connection).is_err() {
                    return;
                }
            }
        });
        FakeServer {
            address,
            connections,
            accept_task,
        }
    }

    /// The next connection that said Hello.
    pub(crate) async fn accept(&mut self) -> FakeConnection {
        self.connections
            .recv()
            .await
            .expect("the accept task ended")
    }
}

/// One client connection, after the handshake.
pub(crate) struct FakeConnection {
    pub(crate) hello: Hello,
    stream: TcpStream,
    buffer: BytesMut,
    decoder: FrameDecoder,
}

impl FakeConnection {
    async fn handshake(stream: TcpStream, connection_id: u64) -> FakeConnection {
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let mut connection = FakeConnection {
            hello: Hello::default(),
            stream,
            buffer: BytesMut::new(),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES),
        };
        let (request_id, body) = connection.next_request().await;
        let client_frame::Body::Hello(hello) = body else {
            panic!("the first frame was not Hello: {body:?}");
        };
        connection.hello = hello;
        let hello_ok = HelloOk {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            node_id: 1,
            connection_id,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: DEFAULT_MAX_FRAME_BYTES / 2,
        };
        connection
            .answer(request_id, server_frame::Body::HelloOk(hello_ok))
            .await;
        connection
    }

    /// The next frame from the client; `None` once the client closed the connection.
    pub(crate) async fn next_frame(&mut self) -> Option<ClientFrame> {
        loop {
            let frame = self.decoder.decode_message::<ClientFrame>(&mut self.buffer);
            if let Some(frame) = frame.expect("the client sent a malformed frame") {
                return Some(frame);
            }
            self.buffer.reserve(4096);
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next request (request id and body); panics if the connection closed.
    pub(crate) async fn next_request(&mut self) -> (u64, client_frame::Body) {
        let frame = self
            .next_frame()
            .await
            .expect("the client closed the connection");
        assert_ne!(frame.request_id, 0, "every request carries a request id");
        (
            frame.request_id,
            frame.body.expect("a request without a body"),
        )
    }

    /// Answers request `request_id`.
    pub(crate) async fn answer(&mut self, request_id: u64, body: server_frame::Body) {
        let frame = ServerFrame {
            request_id,
            body: Some(body),
        };
        self.stream
            .write_all(&frame_bytes(&frame))
            .await
            .expect("write to the client");
    }

    /// Sends a frame of the server's own (request id 0).
    pub(crate) async fn push(&mut self, body: server_frame::Body) {
        self.answer(0, body).await;
    }
}
