//! The event loop: the one task that owns the node (through [`Driver`]).
//!
//! It waits for the next event, the storage worker's completions, the core's next deadline or
//! shutdown, feeds the driver, and hands the storage requests it gathered to the worker.
//! Connection and admin tasks talk to it only through the bounded event channel, so a flood of
//! input slows the senders down instead of growing a queue.

use std::future::Future;
use std::time::Duration;

use krest_core::config::Limits;
use krest_core::driver::{self, AdminResponder, AdminResponse, ConnectionOutbox, Driver, Outbound};
use krest_core::Node;
use krest_storage_file::server::SystemClock;
use krest_storage_file::{Completions, StorageWorker};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::{admin, connection};

/// Events queued for the event loop, at most; senders wait when it is full.
const EVENT_QUEUE_CAPACITY: usize = 4_096;
/// How long clients get to close after shutdown asked them to.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A connection task's inbox.
pub struct Outbox(pub mpsc::UnboundedSender<Outbound>);
/// An admin task's answer slot.
pub struct Responder(pub oneshot::Sender<AdminResponse>);
/// What tasks send to the loop.
pub type Event = driver::Event<Outbox, Responder>;

impl ConnectionOutbox for Outbox {
    fn push(&self, message: Outbound) {
        let _connection_gone = self.0.send(message);
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl AdminResponder for Responder {
    fn respond(self, response: AdminResponse) {
        let _requester_gone = self.0.send(response);
    }
}

/// Everything the loop runs.
pub struct Parts {
    pub node: Node,
    pub storage: StorageWorker,
    pub clock: SystemClock,
    pub limits: Limits,
    pub client_listener: TcpListener,
    pub admin_listener: TcpListener,
}

/// Runs until `shutdown` completes and storage has stopped.
pub async fn run(parts: Parts, shutdown: impl Future<Output = ()>) {
    let Parts {
        node,
        storage,
        clock,
        limits,
        client_listener,
        admin_listener,
    } = parts;
    let (events, mut receiver) = mpsc::channel::<Event>(EVENT_QUEUE_CAPACITY);
    let accept_clients = tokio::spawn(connection::accept(client_listener, events.clone(), limits));
    let accept_admin = tokio::spawn(admin::accept(admin_listener, events.clone()));
    drop(events);
    let mut driver: Driver<Outbox, Responder> = Driver::new(node);
    storage.submit(driver.take_storage_requests());
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    let mut events_open = true;
    // One timer, moved only when the core's deadline changes (not a new one per wake-up).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut timer_deadline: Option<tokio::time::Instant> = None;
    loop {
        let deadline = driver
            .poll_timeout()
            .map(|deadline| tokio::time::Instant::from_std(clock.deadline(deadline)));
        if let Some(deadline) = deadline {
            if timer_deadline != Some(deadline) {
                timer.as_mut().reset(deadline);
            }
        }
        timer_deadline = deadline;
        tokio::select! {
            completions = storage.completions() => match completions {
                Completions::Done(done) => driver.on_storage_done(clock.now(), done),
                Completions::Stopped => break,
            },
            event = receiver.recv(), if events_open => match event {
                Some(event) => {
                    driver.on_event_burst(clock.now(), event, || receiver.try_recv().ok());
                }
                None => events_open = false,
            },
            _ = &mut timer, if deadline.is_some() => {
                // An elapsed timer stays ready: make the next deadline reset it, even if equal.
                timer_deadline = None;
                driver.on_timer(clock.now());
            }
            _ = &mut shutdown, if !shutting_down => {
                tracing::info!("shutting down: no new connections; finishing storage work");
                shutting_down = true;
                accept_clients.abort();
                accept_admin.abort();
                // Storage finishes what it was given, hands back the completions, then stops.
                storage.close();
            }
        }
        let refused = storage.submit(driver.take_storage_requests());
        if refused > 0 {
            tracing::debug!(refused, "storage requests after shutdown began; dropped");
        }
    }
    // Confirms for everything storage finished were sent above; now let clients go.
    while let Ok(event) = receiver.try_recv() {
        driver.on_event(clock.now(), event);
    }
    driver.close_all_connections("the server is shutting down");
    // Off the event-loop thread: while the last fsyncs finish, this thread stays free to run
    // the task that exits at once on a second signal.
    let _joined = tokio::task::spawn_blocking(move || storage.join()).await;
    let linger = tokio::time::Instant::now() + CLOSE_LINGER;
    while !driver.all_connections_closed() && tokio::time::Instant::now() < linger {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("stopped");
}
