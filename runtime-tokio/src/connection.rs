//! Client connections: accept within the connection limit, cut the byte stream into frames,
//! write what the core sends, pause reading when the core asks, and close idle connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use krest_core::config::Limits;
use krest_core::ids::ConnId;
use krest_core::Input;
use krest_proto::client::{server_frame, ErrorCode, ServerFrame};
use krest_proto::frame::{frame_bytes, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::event_loop::Event;

/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the event loop tells a connection task.
pub enum Outbound {
    /// Write this frame.
    Frame(Bytes),
    /// Start or stop reading (back-pressure).
    Reading(bool),
    /// Flush and close.
    Close,
}

/// Accepts clients until aborted.
pub async fn accept(listener: TcpListener, events: mpsc::Sender<Event>, limits: Limits) {
    let active = Arc::new(AtomicUsize::new(0));
    let next_conn = AtomicU64::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::Acquire) >= limits.max_connections as usize {
            tracing::warn!(%peer, "refusing a connection: at limits.max_connections");
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let conn = ConnId(next_conn.fetch_add(1, Ordering::Relaxed));
        let events = events.clone();
        let active = active.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            tracing::debug!(%conn, %peer, "client connected");
            serve(conn, stream, events, &limits).await;
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Tells a client over the connection limit why, then closes.
async fn refuse(mut stream: TcpStream, limit: u32) {
    let frame = frame_bytes(&ServerFrame {
        request_id: 0,
        body: Some(server_frame::Body::Error(krest_proto::client::Error {
            code: ErrorCode::LimitReached as i32,
            message: format!(
                "the server is at its connection limit ({limit}, limits.max_connections)"
            ),
            leader_address: String::new(),
        })),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}

async fn serve(conn: ConnId, stream: TcpStream, events: mpsc::Sender<Event>, limits: &Limits) {
    let (outbound_sender, mut outbound) = mpsc::unbounded_channel();
    if events
        .send(Event::Connected {
            conn,
            outbound: outbound_sender,
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = FrameDecoder::new(limits.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
    let mut reading = true;
    let mut stream_failed = false;
    let mut pending_writes = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            message = outbound.recv() => {
                let Some(message) = message else { break };
                let mut close = false;
                match message {
                    Outbound::Frame(frame) => pending_writes.extend_from_slice(&frame),
                    Outbound::Reading(enabled) => reading = enabled,
                    Outbound::Close => close = true,
                }
                // Gather whatever else is queued into one write.
                while !close && pending_writes.len() < WRITE_BATCH_BYTES {
                    match outbound.try_recv() {
                        Ok(Outbound::Frame(frame)) => pending_writes.extend_from_slice(&frame),
                        Ok(Outbound::Reading(enabled)) => reading = enabled,
                        Ok(Outbound::Close) => close = true,
                        Err(_) => break,
                    }
                }
                if !pending_writes.is_empty() {
                    if writer.write_all(&pending_writes).await.is_err() {
                        break;
                    }
                    pending_writes.clear();
                }
                if close {
                    let _ = writer.shutdown().await;
                    break;
                }
            }
            read = reader.read_buf(&mut buffer), if reading && !stream_failed => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                idle_deadline = tokio::time::Instant::now() + idle_timeout;
                loop {
                    match decoder.decode(&mut buffer) {
                        Ok(Some(body)) => {
                            if events.send(Event::Input(Input::ClientFrame { conn, body })).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            stream_failed = true;
                            let _ = events.send(Event::Input(Input::ClientStreamError { conn, reason: error.to_string() })).await;
                            break;
                        }
                    }
                }
                if buffer.capacity() - buffer.len() < 1024 {
                    buffer.reserve(READ_CHUNK_BYTES);
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if !stream_failed => {
                stream_failed = true;
                let reason = format!("no data from the client for {} ms (limits.idle_timeout_ms)", idle_timeout.as_millis());
                let _ = events.send(Event::Input(Input::ClientStreamError { conn, reason })).await;
            }
        }
    }
    tracing::debug!(%conn, "client disconnected");
    let _ = events
        .send(Event::Input(Input::ClientDisconnected { conn }))
        .await;
}
