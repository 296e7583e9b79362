//! The event loop: the one task that owns the node.
//!
//! It waits for the next event or the core's next deadline, feeds the core, and carries out every
//! command the core emits, in order. Connection tasks and the storage thread talk to it only
//! through the bounded event channel, so a flood of input slows the senders down instead of
//! growing a queue.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use krest_core::ids::{AdminRequestId, ConnId};
use krest_core::{
    AdminHttpRequest, Command, Config, Input, Instant, Node, Now, StorageRequest, UnixMillis,
};
use krest_storage_file::StorageExecutor;
use tokio::net::TcpListener;
use tokio::sync::{mpsc as async_mpsc, oneshot};

use crate::connection::{self, Outbound};
use crate::{admin, storage_thread};

/// Events from connection tasks, admin tasks and the storage thread.
pub enum Event {
    /// A connection task started; frames for it go to `outbound`.
    Connected {
        conn: ConnId,
        outbound: async_mpsc::UnboundedSender<Outbound>,
    },
    /// Something for the core.
    Input(Input),
    /// An admin request and where to send its answer.
    Admin {
        http: AdminHttpRequest,
        respond: oneshot::Sender<admin::Response>,
    },
    /// The storage thread finished everything and exited.
    StorageStopped,
}

/// The node's clocks, read only here.
#[derive(Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
    tokio_start: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: std::time::Instant::now(),
            tokio_start: tokio::time::Instant::now(),
        }
    }

    /// Both clocks now, in the core's units.
    pub fn now(&self) -> Now {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0);
        Now {
            monotonic: Instant(self.start.elapsed().as_millis() as u64),
            wall: UnixMillis(wall),
        }
    }

    /// When the core's `deadline` falls, on tokio's clock.
    fn deadline(&self, deadline: Instant) -> tokio::time::Instant {
        self.tokio_start + Duration::from_millis(deadline.0)
    }

    /// A seed for the core's random numbers.
    pub fn seed(&self) -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    }
}

struct Loop {
    node: Node,
    clock: Clock,
    storage: Option<mpsc::Sender<StorageRequest>>,
    connections: BTreeMap<ConnId, async_mpsc::UnboundedSender<Outbound>>,
    admin_waiting: BTreeMap<AdminRequestId, oneshot::Sender<admin::Response>>,
    next_admin_request: u64,
}

/// Runs until `shutdown` completes and storage has stopped.
pub async fn run(
    node: Node,
    clock: Clock,
    executor: StorageExecutor,
    client_listener: TcpListener,
    admin_listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let (events, mut receiver) = async_mpsc::channel::<Event>(4_096);
    let (storage, storage_thread) = storage_thread::spawn(executor, events.clone());
    let accept_clients = tokio::spawn(connection::accept(
        client_listener,
        events.clone(),
        config.limits.clone(),
    ));
    let accept_admin = tokio::spawn(admin::accept(admin_listener, events.clone()));
    drop(events);
    let mut state = Loop {
        node,
        clock,
        storage: Some(storage),
        connections: BTreeMap::new(),
        admin_waiting: BTreeMap::new(),
        next_admin_request: 1,
    };
    state.execute_commands();
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    loop {
        let deadline = state
            .node
            .poll_timeout()
            .map(|deadline| state.clock.deadline(deadline));
        tokio::select! {
            event = receiver.recv() => match event {
                Some(Event::StorageStopped) | None => break,
                Some(event) => state.on_event(event),
            },
            _ = sleep_until(deadline), if deadline.is_some() => state.handle(Input::Tick),
            _ = &mut shutdown, if !shutting_down => {
                tracing::info!("shutting down: no new connections; finishing storage work");
                shutting_down = true;
                accept_clients.abort();
                accept_admin.abort();
                // Storage finishes what it was given, reports it, then stops.
                state.storage = None;
            }
        }
    }
    // Confirms for everything storage finished were sent above; now let clients go.
    while let Ok(event) = receiver.try_recv() {
        if !matches!(event, Event::StorageStopped) {
            state.on_event(event);
        }
    }
    for outbound in state.connections.values() {
        let _ = outbound.send(Outbound::Close);
    }
    let _ = storage_thread.join();
    let linger = tokio::time::Instant::now() + Duration::from_secs(2);
    while !state
        .connections
        .values()
        .all(|outbound| outbound.is_closed())
        && tokio::time::Instant::now() < linger
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("stopped");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Loop {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected { conn, outbound } => {
                self.connections.insert(conn, outbound);
                self.handle(Input::ClientConnected { conn });
            }
            Event::Input(input) => {
                if let Input::ClientDisconnected { conn } = &input {
                    self.connections.remove(conn);
                }
                self.handle(input);
            }
            Event::Admin { http, respond } => {
                let request = AdminRequestId(self.next_admin_request);
                self.next_admin_request += 1;
                self.admin_waiting.insert(request, respond);
                self.handle(Input::Admin { request, http });
            }
            Event::StorageStopped => {}
        }
    }

    fn handle(&mut self, input: Input) {
        self.node.handle(self.clock.now(), input);
        self.execute_commands();
    }

    fn execute_commands(&mut self) {
        while let Some(command) = self.node.poll_command() {
            match command {
                Command::SendToClient { conn, frame } => {
                    if let Some(outbound) = self.connections.get(&conn) {
                        let _ = outbound.send(Outbound::Frame(frame));
                    }
                }
                Command::CloseClient { conn, reason } => {
                    tracing::debug!(%conn, %reason, "closing client");
                    if let Some(outbound) = self.connections.get(&conn) {
                        let _ = outbound.send(Outbound::Close);
                    }
                }
                Command::SetReading { conn, enabled } => {
                    if let Some(outbound) = self.connections.get(&conn) {
                        let _ = outbound.send(Outbound::Reading(enabled));
                    }
                }
                Command::Storage(request) => match &self.storage {
                    Some(storage) => {
                        if storage.send(request).is_err() {
                            tracing::error!("the storage thread is gone");
                        }
                    }
                    None => {
                        tracing::debug!(?request, "storage request after shutdown began; dropped")
                    }
                },
                Command::AdminResponse {
                    request,
                    status,
                    content_type,
                    body,
                } => {
                    if let Some(respond) = self.admin_waiting.remove(&request) {
                        let _ = respond.send(admin::Response {
                            status,
                            content_type,
                            body,
                        });
                    }
                }
            }
        }
    }
}
