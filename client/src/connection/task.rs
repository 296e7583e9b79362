//! The background connection task: connect, handshake, read, write, reconnect.
//!
//! One task per [`crate::Client`]. It loops: pick the next server (round robin), wait the
//! reconnect delay, connect and say Hello with the client's producer id, then run the session
//! until the socket fails or the client closes. A session is three futures raced together: the
//! reader (frames to [`Shared::on_server_frame`]), the writer (drains the write queue and writes
//! everything queued with one write) and the re-subscriber (one subscribe per live consumer).
//! When the session ends, every pending request fails and the loop starts over.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use krest_proto::client::{client_frame, server_frame, ClientFrame, Hello, HelloOk, ServerFrame};
use krest_proto::frame::{decode_body, frame_bytes, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use crate::error::ClientError;

/// Bytes the writer gathers into one write, at most (one larger frame is written alone).
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Free space the reader makes before each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A session shorter than this counts as a failed attempt, so a server that accepts and then
/// drops every connection is not hammered without delay.
const SESSION_STABLE_AFTER: Duration = Duration::from_secs(1);

/// A connection that completed the handshake.
struct Session {
    stream: TcpStream,
    /// Bytes read past the HelloOk frame.
    leftover: BytesMut,
    hello_ok: HelloOk,
}

/// Runs until `shutdown` turns true (or its sender is dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut consecutive_failures: u32 = 0;
    let mut server_index: usize = 0;
    loop {
        let delay = shared.config.reconnect_delay(consecutive_failures);
        let address = shared.config.servers[server_index % shared.config.servers.len()].clone();
        server_index = server_index.wrapping_add(1);
        let attempt = async {
            tokio::time::sleep(delay).await;
            establish(&shared, &address).await
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = wait_for_shutdown(&mut shutdown) => break,
        };
        match outcome {
            Ok(session) => {
                tracing::debug!(%address, node_id = session.hello_ok.node_id, "connected");
                let started = Instant::now();
                let closing = run_session(&shared, session, &mut shutdown).await;
                if closing {
                    return;
                }
                if started.elapsed() >= SESSION_STABLE_AFTER {
                    consecutive_failures = 0;
                } else {
                    consecutive_failures = consecutive_failures.saturating_add(1);
                }
            }
            Err(error) => {
                tracing::debug!(%address, %error, "connection attempt failed");
                consecutive_failures = consecutive_failures.saturating_add(1);
                shared.status.send_modify(|status| {
                    status.failed_attempts += 1;
                    status.last_error = Some(Arc::new(error));
                });
            }
        }
    }
    // Closed while not connected: fail whatever waits and end the consumers' streams.
    shared.teardown(0, true);
}

/// Resolves when the client is closed.
async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _sender_gone = shutdown.wait_for(|closed| *closed).await;
}

/// Connects to `address` and completes the handshake, within the connect timeout.
async fn establish(shared: &Shared, address: &str) -> Result<Session, ClientError> {
    let timeout = shared.config.connect_timeout;
    match tokio::time::timeout(timeout, handshake(shared, address)).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("cannot connect to {address}: no handshake within {timeout:?}"),
        ))),
    }
}

async fn handshake(shared: &Shared, address: &str) -> Result<Session, ClientError> {
    let connect_error = |error: std::io::Error| {
        ClientError::Io(std::io::Error::new(
            error.kind(),
            format!("cannot connect to {address}: {error}"),
        ))
    };
    let mut stream = TcpStream::connect(address).await.map_err(connect_error)?;
    stream.set_nodelay(true).map_err(connect_error)?;
    let hello = ClientFrame {
        request_id: shared.next_request_id(),
        body: Some(client_frame::Body::Hello(Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: shared.config.client_name.clone(),
            producer_id: shared.producer_id,
        })),
    };
    stream
        .write_all(&frame_bytes(&hello))
        .await
        .map_err(connect_error)?;
    let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        let frame = decoder
            .decode_message::<ServerFrame>(&mut buffer)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        if let Some(frame) = frame {
            return match frame.body {
                Some(server_frame::Body::HelloOk(hello_ok)) => Ok(Session {
                    stream,
                    leftover: buffer,
                    hello_ok,
                }),
                Some(server_frame::Body::Error(error)) => Err(ClientError::from_wire(error)),
                _ => Err(ClientError::Protocol(
                    "the server did not answer Hello".into(),
                )),
            };
        }
        buffer.reserve(4096);
        if stream.read_buf(&mut buffer).await.map_err(connect_error)? == 0 {
            return Err(ClientError::Disconnected);
        }
    }
}

/// Runs one session to its end; returns whether the client is closing.
async fn run_session(
    shared: &Shared,
    session: Session,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let (read_half, write_half) = session.stream.into_split();
    let (generation, frames) = shared.install_link();
    let resubscribes = shared.resubscribe_frames();
    let max_frame_bytes = shared.config.max_frame_bytes;
    let (reason, closing) = tokio::select! {
        reason = read_loop(shared, read_half, session.leftover, max_frame_bytes) => (reason, false),
        reason = write_loop(write_half, resubscribes, frames) => (reason, false),
        _ = wait_for_shutdown(shutdown) => (ClientError::Closed, true),
    };
    tracing::debug!(%reason, "connection ended");
    shared.teardown(generation, closing);
    closing
}

/// Reads frames until the socket fails; returns why it stopped.
async fn read_loop(
    shared: &Shared,
    mut reader: OwnedReadHalf,
    mut buffer: BytesMut,
    max_frame_bytes: u32,
) -> ClientError {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    loop {
        loop {
            let body = match decoder.decode(&mut buffer) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(error) => return ClientError::Protocol(error.to_string()),
            };
            match decode_body::<ServerFrame>(body) {
                Ok(frame) => shared.on_server_frame(frame),
                Err(error) => return ClientError::Protocol(error.to_string()),
            }
        }
        buffer.reserve(READ_CHUNK_BYTES);
        match reader.read_buf(&mut buffer).await {
            Ok(0) => return ClientError::Disconnected,
            Ok(_) => {}
            Err(error) => return ClientError::Io(error),
        }
    }
}

/// Writes `first_frames`, then queued frames, gathering whatever is queued into one write;
/// returns why it stopped.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    first_frames: Vec<Bytes>,
    mut frames: mpsc::Receiver<Bytes>,
) -> ClientError {
    let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    for frame in first_frames {
        batch.extend_from_slice(&frame);
    }
    if let Err(error) = writer.write_all(&batch).await {
        return ClientError::Io(error);
    }
    batch.clear();
    while let Some(first) = frames.recv().await {
        let outcome = if first.len() >= WRITE_BATCH_BYTES {
            writer.write_all(&first).await
        } else {
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH_BYTES {
                match frames.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_empty_or_closed) => break,
                }
            }
            let outcome = writer.write_all(&batch).await;
            batch.clear();
            outcome
        };
        if let Err(error) = outcome {
            return ClientError::Io(error);
        }
    }
    ClientError::Closed
}
