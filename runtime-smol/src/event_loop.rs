//! The event loop: the one task that owns the node (through [`Driver`]).
//!
//! It waits for the next event, the storage worker's completions, the core's next deadline or
//! shutdown, feeds the driver, and hands the storage requests it gathered to the worker.
//! Connection and admin tasks talk to it only through the bounded event channel, so a flood of
//! input slows the senders down instead of growing a queue.

use std::future::Future;
use std::time::{Duration, Instant};

use krest_core::config::Limits;
use krest_core::driver::{self, AdminResponder, AdminResponse, ConnectionOutbox, Driver, Outbound};
use krest_core::Node;
use krest_storage_file::server::SystemClock;
use krest_storage_file::{Completions, StorageWorker};
use smol::channel;
use smol::future::{self, FutureExt as _};
use smol::net::TcpListener;
use smol::Timer;

use crate::{admin, connection, Executor};

/// Events queued for the event loop, at most; senders wait when it is full.
const EVENT_QUEUE_CAPACITY: usize = 4_096;
/// How long clients get to close after shutdown asked them to.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A connection task's inbox.
pub struct Outbox(pub channel::Sender<Outbound>);
/// An admin task's answer slot.
pub struct Responder(pub channel::Sender<AdminResponse>);
/// What tasks send to the loop.
pub type Event = driver::Event<Outbox, Responder>;

impl ConnectionOutbox for Outbox {
    fn push(&self, message: Outbound) {
        // Unbounded, so this fails only when the connection task is gone.
        let _connection_gone = self.0.try_send(message);
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl AdminResponder for Responder {
    fn respond(self, response: AdminResponse) {
        let _requester_gone = self.0.try_send(response);
    }
}

/// Everything the loop runs.
pub struct Parts {
    pub executor: Executor,
    pub node: Node,
    pub storage: StorageWorker,
    pub clock: SystemClock,
    pub limits: Limits,
    pub client_listener: TcpListener,
    pub admin_listener: TcpListener,
}

/// What woke the loop.
enum Wake {
    Storage(Completions),
    Event(Option<Event>),
    Timer,
    Shutdown,
}

/// Runs until `shutdown` completes and storage has stopped.
pub async fn run(parts: Parts, shutdown: impl Future<Output = ()>) {
    let Parts {
        executor,
        node,
        storage,
        clock,
        limits,
        client_listener,
        admin_listener,
    } = parts;
    let (events, receiver) = channel::bounded::<Event>(EVENT_QUEUE_CAPACITY);
    let accept_clients = executor.spawn(connection::accept(
        executor.clone(),
        client_listener,
        events.clone(),
        limits,
    ));
    let accept_admin = executor.spawn(admin::accept(
        executor.clone(),
        admin_listener,
        events.clone(),
    ));
    let mut accepting = Some((accept_clients, accept_admin));
    drop(events);
    let mut driver: Driver<Outbox, Responder> = Driver::new(node);
    storage.submit(driver.take_storage_requests());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut events_open = true;
    // One timer, moved only when the core's deadline changes: creating one per wake-up
    // registered (and removed) it with the reactor for every event.
    let mut timer = Timer::never();
    let mut timer_deadline: Option<Instant> = None;
    loop {
        let deadline = driver
            .poll_timeout()
            .map(|deadline| clock.deadline(deadline));
        if deadline != timer_deadline {
            match deadline {
                Some(deadline) => timer.set_at(deadline),
                None => timer = Timer::never(),
            }
            timer_deadline = deadline;
        }
        let shutting_down = accepting.is_none();
        let wake = async { Wake::Storage(storage.completions().await) }
            .or(async {
                match events_open {
                    true => Wake::Event(receiver.recv().await.ok()),
                    false => future::pending().await,
                }
            })
            .or(async {
                match deadline {
                    Some(_) => {
                        (&mut timer).await;
                        Wake::Timer
                    }
                    None => future::pending().await,
                }
            })
            .or(async {
                match shutting_down {
                    false => {
                        shutdown.as_mut().await;
                        Wake::Shutdown
                    }
                    true => future::pending().await,
                }
            })
            .await;
        match wake {
            Wake::Storage(Completions::Done(done)) => driver.on_storage_done(clock.now(), done),
            Wake::Storage(Completions::Stopped) => break,
            Wake::Event(Some(event)) => {
                driver.on_event_burst(clock.now(), event, || receiver.try_recv().ok());
            }
            Wake::Event(None) => events_open = false,
            Wake::Timer => {
                // A fired timer does not fire again: the next deadline, even the same one,
                // needs a fresh `set_at`.
                timer_deadline = None;
                driver.on_timer(clock.now());
            }
            Wake::Shutdown => {
                tracing::info!("shutting down: no new connections; finishing storage work");
                // Dropping the accept tasks cancels them.
                accepting = None;
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
    // Off the executor's thread: while the last fsyncs finish, this thread stays free to run
    // the task that exits at once on a second signal.
    smol::unblock(move || storage.join()).await;
    let linger = Instant::now() + CLOSE_LINGER;
    while !driver.all_connections_closed() && Instant::now() < linger {
        Timer::after(Duration::from_millis(10)).await;
    }
    tracing::info!("stopped");
}
