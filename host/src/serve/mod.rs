//! Serving a node, written once for every runtime: the event loop that owns the node (through
//! the core's [`Router`]), the client connection tasks ([`connection`]) and the admin HTTP
//! tasks ([`admin`]). The runtime lends only what [`Runtime`] names.
//!
//! # The event loop
//!
//! One task owns the router. It waits for the first ready of, in this priority:
//!
//! 1. the storage worker's completions (they release confirms and deliveries, and free memory),
//! 2. the core's timer,
//! 3. events from connection and admin tasks (a burst of at most
//!    [`EVENTS_PER_WAKE_MAX`](krest_core::router::EVENTS_PER_WAKE_MAX)),
//! 4. the shutdown signal,
//!
//! feeds it to the router, and hands the storage requests the router gathered to the storage
//! worker in one go. Connection and admin tasks talk to it only through the bounded event
//! channel, so a flood of input slows the senders down instead of growing a queue.
//!
//! On shutdown it stops accepting, lets storage finish what it was given (sending the confirms
//! that earns), tells every client why and closes them, and returns.

pub mod admin;
pub mod connection;
pub mod peers;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::{self, FutureExt as _};
use krest_core::config::Limits;
use krest_core::router::{self, AdminResponder, AdminResponse, ConnectionOutbox, Outbound, Router};
use krest_core::Node;
use krest_storage_file::{Completions, StorageWorker};

use crate::open::SystemClock;
use crate::runtime::Runtime;

/// Events queued for the event loop, at most; senders wait when it is full.
const EVENT_QUEUE_CAPACITY: usize = 4_096;
/// How long clients get to close after shutdown asked them to.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A connection task's inbox.
pub struct Outbox(async_channel::Sender<Outbound>);
/// An admin task's answer slot.
pub struct Responder(async_channel::Sender<AdminResponse>);
/// What tasks send to the loop.
pub type Event = router::Event<Outbox, Responder>;
/// Where tasks send it.
pub type Events = async_channel::Sender<Event>;

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
pub struct Parts<R: Runtime> {
    /// The runtime it runs on.
    pub runtime: R,
    /// The recovered node.
    pub node: Node,
    /// The storage worker thread.
    pub storage: StorageWorker,
    /// The clock the node runs on.
    pub clock: SystemClock,
    /// The connection limits.
    pub limits: Limits,
    /// The client protocol listener, adopted by the runtime.
    pub client_listener: R::Listener,
    /// The admin HTTP listener, adopted by the runtime.
    pub admin_listener: R::Listener,
    /// In a cluster: the peer listener, adopted by the runtime, and the peers.
    pub peering: Option<(R::Listener, peers::PeerSetup)>,
}

/// What woke the loop.
enum Wake {
    Storage(Completions),
    Timer,
    Event(Option<Event>),
    Shutdown,
}

/// Runs until `shutdown` completes and storage has stopped.
pub async fn run<R: Runtime>(parts: Parts<R>, shutdown: impl Future<Output = ()>) {
    let Parts {
        runtime,
        node,
        storage,
        clock,
        limits,
        client_listener,
        admin_listener,
        peering,
    } = parts;
    let (events, receiver) = async_channel::bounded::<Event>(EVENT_QUEUE_CAPACITY);
    // Dropping `stop_accepting` ends both accept loops (and closes their listeners).
    let (stop_accepting, accepting_stopped) = async_channel::bounded::<()>(1);
    let accept_clients =
        connection::accept(runtime.clone(), client_listener, events.clone(), limits);
    runtime.spawn(until_closed(accept_clients, accepting_stopped.clone()));
    if let Some((listener, setup)) = peering {
        peers::dial_all(&runtime, &setup, &events);
        let accept_peers = peers::accept(runtime.clone(), listener, events.clone(), setup);
        runtime.spawn(until_closed(accept_peers, accepting_stopped.clone()));
    }
    let accept_admin = admin::accept(runtime.clone(), admin_listener, events);
    runtime.spawn(until_closed(accept_admin, accepting_stopped));
    let mut stop_accepting = Some(stop_accepting);
    let mut router: Router<Outbox, Responder> = Router::new(node);
    storage.submit(router.take_storage_requests());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut events_open = true;
    // One timer, replaced only when the core's deadline changes (not a new one per wake-up).
    let mut timer: Option<Pin<Box<R::Sleep>>> = None;
    let mut timer_deadline = None;
    loop {
        let deadline = router.poll_timeout();
        if deadline != timer_deadline {
            timer = deadline.map(|at| Box::pin(runtime.sleep_until(clock.deadline(at))));
            timer_deadline = deadline;
        }
        let shutting_down = stop_accepting.is_none();
        let wake = async { Wake::Storage(storage.completions().await) }
            .or(async {
                match timer.as_mut() {
                    Some(timer) => {
                        timer.await;
                        Wake::Timer
                    }
                    None => future::pending().await,
                }
            })
            .or(async {
                match events_open {
                    true => Wake::Event(receiver.recv().await.ok()),
                    false => future::pending().await,
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
            Wake::Storage(Completions::Done(done)) => router.on_storage_done(clock.now(), done),
            Wake::Storage(Completions::Stopped) => break,
            Wake::Timer => {
                // A fired timer does not fire again: the next deadline, even the same one,
                // needs a new timer.
                timer = None;
                timer_deadline = None;
                router.on_timer(clock.now());
            }
            Wake::Event(Some(event)) => {
                router.on_event_burst(clock.now(), event, || receiver.try_recv().ok());
            }
            Wake::Event(None) => events_open = false,
            Wake::Shutdown => {
                tracing::info!("shutting down: no new connections; finishing storage work");
                stop_accepting = None;
                // Storage finishes what it was given, hands back the completions, then stops.
                storage.close();
            }
        }
        let refused = storage.submit(router.take_storage_requests());
        if refused > 0 {
            tracing::debug!(refused, "storage requests after shutdown began; dropped");
        }
    }
    // Confirms for everything storage finished were sent above; now let clients go.
    while let Ok(event) = receiver.try_recv() {
        router.on_event(clock.now(), event);
    }
    router.close_all_connections("the server is shutting down");
    // Off the event-loop thread: while the last fsyncs finish, this thread stays free to run
    // the task that exits at once on a second signal.
    runtime.unblock(move || storage.join()).await;
    let linger = std::time::Instant::now() + CLOSE_LINGER;
    while !router.all_connections_closed() && std::time::Instant::now() < linger {
        let pause = std::time::Instant::now() + Duration::from_millis(10);
        runtime.sleep_until(pause).await;
    }
    tracing::info!("stopped");
}

/// Runs `task` until `stop`'s channel closes.
async fn until_closed(task: impl Future<Output = ()>, stop: async_channel::Receiver<()>) {
    task.or(async {
        let _closed = stop.recv().await;
    })
    .await;
}

/// Pauses after a failed accept (out of file descriptors, say) so the loop does not spin.
async fn pause_after_accept_error<R: Runtime>(runtime: &R) {
    let pause = std::time::Instant::now() + Duration::from_millis(50);
    runtime.sleep_until(pause).await;
}

/// How many client connection tasks are alive, shared by the accept loop and the tasks.
type ActiveConnections = Rc<std::cell::Cell<usize>>;
