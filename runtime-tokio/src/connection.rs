//! Client connections: accept within the connection limit, move bytes between the socket and
//! [`InboundFrames`] / [`WriteBatch`], pause reading when the core asks, close idle connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use krest_core::config::Limits;
use krest_core::driver::{connection_limit_refusal, Event, InboundFrames, WriteBatch};
use krest_core::ids::ConnId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::event_loop::{Event as LoopEvent, Outbox};

/// How long a refused client gets to read why.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts clients until aborted.
pub async fn accept(listener: TcpListener, events: mpsc::Sender<LoopEvent>, limits: Limits) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut next_conn = 1;
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
            tokio::spawn(refuse(stream, connection_limit_refusal(&limits)));
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let conn = ConnId(next_conn);
        next_conn += 1;
        let events = events.clone();
        let active = active.clone();
        let inbound = InboundFrames::new(conn, &limits);
        tokio::spawn(async move {
            tracing::debug!(%conn, %peer, "client connected");
            serve(conn, stream, events, inbound).await;
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Tells a client over the connection limit why, then closes.
async fn refuse(mut stream: TcpStream, frame: bytes::Bytes) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}

async fn serve(
    conn: ConnId,
    stream: TcpStream,
    events: mpsc::Sender<LoopEvent>,
    mut inbound: InboundFrames,
) {
    let (outbox, mut outbound) = mpsc::unbounded_channel();
    if events
        .send(Event::Connected {
            conn,
            outbox: Outbox(outbox),
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = BytesMut::with_capacity(InboundFrames::READ_CHUNK_BYTES);
    let mut inputs = Vec::new();
    let mut batch = WriteBatch::default();
    let idle_timeout = inbound.idle_timeout();
    let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
    // One timer for the connection's life, moved only when it fires early: activity just moves
    // `idle_deadline` (a new timer per read would be registered and removed every time).
    let idle_timer = tokio::time::sleep_until(idle_deadline);
    tokio::pin!(idle_timer);
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            message = outbound.recv() => {
                let Some(message) = message else { break };
                // Gather whatever else is queued into one write.
                let mut gathering = batch.add(message);
                while gathering {
                    match outbound.try_recv() {
                        Ok(message) => gathering = batch.add(message),
                        Err(_) => break,
                    }
                }
                if !batch.bytes().is_empty() && writer.write_all(batch.bytes()).await.is_err() {
                    break;
                }
                let (reading_change, close) = batch.finish();
                if reading_change == Some(true) && !reading {
                    // Paused by back-pressure is not idle: the timer starts again now.
                    idle_deadline = tokio::time::Instant::now() + idle_timeout;
                }
                reading = reading_change.unwrap_or(reading);
                if let Some(reason) = close {
                    tracing::debug!(%conn, %reason, "closing client");
                    let _ = writer.shutdown().await;
                    break;
                }
            }
            read = reader.read_buf(&mut buffer), if reading && !inbound.failed() => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                idle_deadline = tokio::time::Instant::now() + idle_timeout;
                inbound.on_bytes(&mut buffer, &mut inputs);
                for input in inputs.drain(..) {
                    if events.send(Event::Input(input)).await.is_err() {
                        return;
                    }
                }
            }
            _ = &mut idle_timer, if reading && !inbound.failed() => {
                if tokio::time::Instant::now() < idle_deadline {
                    idle_timer.as_mut().reset(idle_deadline);
                    continue;
                }
                // Once: the core answers with a close. Until then the timer waits a full period.
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                let _ = events.send(Event::Input(inbound.on_idle())).await;
            }
        }
    }
    tracing::debug!(%conn, "client disconnected");
    let _ = events.send(Event::Input(inbound.disconnected())).await;
}
