//! Client connections: accept within the connection limit, move bytes between the socket and
//! [`InboundFrames`] / [`WriteBatch`], pause reading when the core asks, close idle connections.
//!
//! A connection task waits for the first ready of, in this priority: a message from the event
//! loop (so what the core sends is never starved by a busy reader), bytes from the socket, the
//! idle timer.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::future::{self, FutureExt as _};
use krest_core::config::Limits;
use krest_core::ids::ConnId;
use krest_core::router::{connection_limit_refusal, Event, InboundFrames, Outbound, WriteBatch};

use super::{pause_after_accept_error, ActiveConnections, Events, Outbox};
use crate::runtime::Runtime;

/// How long a refused client gets to read why.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts clients until dropped.
pub async fn accept<R: Runtime>(runtime: R, listener: R::Listener, events: Events, limits: Limits) {
    let active = ActiveConnections::default();
    let mut next_conn = 1;
    loop {
        let (reader, writer, peer) = match runtime.accept(&listener).await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                pause_after_accept_error(&runtime).await;
                continue;
            }
        };
        if active.get() >= limits.max_connections as usize {
            tracing::warn!(%peer, "refusing a connection: at limits.max_connections");
            let refusal = connection_limit_refusal(&limits);
            runtime.spawn(refuse(runtime.clone(), writer, refusal));
            continue;
        }
        active.set(active.get() + 1);
        let conn = ConnId(next_conn);
        next_conn += 1;
        let connection = Connection {
            runtime: runtime.clone(),
            conn,
            reader,
            writer,
            events: events.clone(),
            inbound: InboundFrames::new(conn, &limits),
        };
        let active = active.clone();
        runtime.spawn(async move {
            tracing::debug!(%conn, %peer, "client connected");
            connection.serve().await;
            active.set(active.get() - 1);
        });
    }
}

/// Tells a client over the connection limit why, then closes.
async fn refuse<R: Runtime>(runtime: R, mut writer: R::Writer, frame: bytes::Bytes) {
    let deadline = Instant::now() + REFUSAL_WRITE_TIMEOUT;
    let _ = R::write_all(&mut writer, &frame)
        .or(async {
            runtime.sleep_until(deadline).await;
            Ok(())
        })
        .await;
    R::close(&mut writer).await;
}

/// One client connection's task.
struct Connection<R: Runtime> {
    runtime: R,
    conn: ConnId,
    reader: R::Reader,
    writer: R::Writer,
    events: Events,
    inbound: InboundFrames,
}

/// What woke a connection task.
enum Wake {
    Outbound(Option<Outbound>),
    Read(std::io::Result<usize>),
    Idle,
}

impl<R: Runtime> Connection<R> {
    async fn serve(mut self) {
        let conn = self.conn;
        let (outbox, outbound) = async_channel::unbounded();
        let connected = Event::Connected {
            conn,
            outbox: Outbox(outbox),
        };
        if self.events.send(connected).await.is_err() {
            return;
        }
        let mut buffer = BytesMut::with_capacity(InboundFrames::READ_CHUNK_BYTES);
        let mut inputs = Vec::new();
        let mut batch = WriteBatch::default();
        let idle_timeout = self.inbound.idle_timeout();
        let mut idle_deadline = Instant::now() + idle_timeout;
        // One timer, replaced only when it fires early: activity just moves `idle_deadline` (a
        // new timer per read would be registered and removed every time).
        let mut idle_timer: Pin<Box<R::Sleep>> = Box::pin(self.runtime.sleep_until(idle_deadline));
        let mut reading = true;
        loop {
            let may_read = reading && !self.inbound.failed();
            let reader = &mut self.reader;
            let timer = idle_timer.as_mut();
            let wake = async { Wake::Outbound(outbound.recv().await.ok()) }
                .or(async {
                    match may_read {
                        true => Wake::Read(R::read(reader, &mut buffer).await),
                        false => future::pending().await,
                    }
                })
                .or(async {
                    match may_read {
                        true => {
                            timer.await;
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
                    let bytes = batch.bytes();
                    if !bytes.is_empty() && R::write_all(&mut self.writer, bytes).await.is_err() {
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
                        R::close(&mut self.writer).await;
                        break;
                    }
                }
                Wake::Read(Ok(0) | Err(_)) => break,
                Wake::Read(Ok(_)) => {
                    idle_deadline = Instant::now() + idle_timeout;
                    self.inbound.on_bytes(&mut buffer, &mut inputs);
                    for input in inputs.drain(..) {
                        if self.events.send(Event::Input(input)).await.is_err() {
                            return;
                        }
                    }
                }
                Wake::Idle => {
                    let now = Instant::now();
                    if now >= idle_deadline {
                        // Once: the core answers with a close. Until then the timer waits a
                        // full period.
                        let idle = self.inbound.on_idle();
                        let _ = self.events.send(Event::Input(idle)).await;
                        idle_deadline = now + idle_timeout;
                    }
                    idle_timer = Box::pin(self.runtime.sleep_until(idle_deadline));
                }
            }
        }
        tracing::debug!(%conn, "client disconnected");
        let _ = self
            .events
            .send(Event::Input(self.inbound.disconnected()))
            .await;
    }
}
