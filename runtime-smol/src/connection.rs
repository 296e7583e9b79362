//! Client connections: accept within the connection limit, move bytes between the socket and
//! [`InboundFrames`] / [`WriteBatch`], pause reading when the core asks, close idle connections.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use krest_core::config::Limits;
use krest_core::driver::{connection_limit_refusal, Event, InboundFrames, Outbound, WriteBatch};
use krest_core::ids::ConnId;
use smol::channel;
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

use crate::event_loop::{Event as LoopEvent, Outbox};
use crate::Executor;

/// How long a refused client gets to read why.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts clients until cancelled.
pub async fn accept(
    executor: Executor,
    listener: TcpListener,
    events: channel::Sender<LoopEvent>,
    limits: Limits,
) {
    let active = Rc::new(Cell::new(0usize));
    let mut next_conn = 1;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if active.get() >= limits.max_connections as usize {
            tracing::warn!(%peer, "refusing a connection: at limits.max_connections");
            executor
                .spawn(refuse(stream, connection_limit_refusal(&limits)))
                .detach();
            continue;
        }
        active.set(active.get() + 1);
        let conn = ConnId(next_conn);
        next_conn += 1;
        let events = events.clone();
        let active = active.clone();
        let inbound = InboundFrames::new(conn, &limits);
        let task = async move {
            tracing::debug!(%conn, %peer, "client connected");
            serve(conn, stream, events, inbound).await;
            active.set(active.get() - 1);
        };
        executor.spawn(task).detach();
    }
}

/// Tells a client over the connection limit why, then closes.
async fn refuse(mut stream: TcpStream, frame: bytes::Bytes) {
    let _ = stream
        .write_all(&frame)
        .or(async {
            Timer::after(REFUSAL_WRITE_TIMEOUT).await;
            Ok(())
        })
        .await;
    let _ = stream.close().await;
}

/// What woke a connection task.
enum Wake {
    Outbound(Option<Outbound>),
    Read(std::io::Result<usize>),
    Idle,
}

async fn serve(
    conn: ConnId,
    stream: TcpStream,
    events: channel::Sender<LoopEvent>,
    mut inbound: InboundFrames,
) {
    let (outbox, outbound) = channel::unbounded();
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
    let mut reader = stream.clone();
    let mut writer = stream;
    let mut chunk = vec![0u8; InboundFrames::READ_CHUNK_BYTES];
    let mut buffer = BytesMut::with_capacity(InboundFrames::READ_CHUNK_BYTES);
    let mut inputs = Vec::new();
    let mut batch = WriteBatch::default();
    let idle_timeout = inbound.idle_timeout();
    let mut idle_deadline = Instant::now() + idle_timeout;
    // One timer for the connection's life, moved only when it fires early: activity just moves
    // `idle_deadline` (registering a timer with the reactor on every read costs a wake-up).
    let mut idle_timer = Timer::at(idle_deadline);
    let mut reading = true;
    loop {
        let may_read = reading && !inbound.failed();
        // Outbound first: what the core sends is never starved by a busy reader.
        let wake = async { Wake::Outbound(outbound.recv().await.ok()) }
            .or(async {
                match may_read {
                    true => Wake::Read(reader.read(&mut chunk).await),
                    false => future::pending().await,
                }
            })
            .or(async {
                match may_read {
                    true => {
                        (&mut idle_timer).await;
                        Wake::Idle
                    }
                    false => future::pending().await,
                }
            })
            .await;
        match wake {
            Wake::Outbound(None) => break,
            Wake::Outbound(Some(message)) => {
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
                    idle_deadline = Instant::now() + idle_timeout;
                }
                reading = reading_change.unwrap_or(reading);
                if let Some(reason) = close {
                    tracing::debug!(%conn, %reason, "closing client");
                    let _ = writer.flush().await;
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    break;
                }
            }
            Wake::Read(Ok(0) | Err(_)) => break,
            Wake::Read(Ok(read)) => {
                idle_deadline = Instant::now() + idle_timeout;
                buffer.extend_from_slice(&chunk[..read]);
                inbound.on_bytes(&mut buffer, &mut inputs);
                for input in inputs.drain(..) {
                    if events.send(Event::Input(input)).await.is_err() {
                        return;
                    }
                }
            }
            Wake::Idle if Instant::now() < idle_deadline => idle_timer.set_at(idle_deadline),
            Wake::Idle => {
                let _ = events.send(Event::Input(inbound.on_idle())).await;
            }
        }
    }
    tracing::debug!(%conn, "client disconnected");
    let _ = events.send(Event::Input(inbound.disconnected())).await;
}
