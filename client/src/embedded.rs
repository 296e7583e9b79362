//! A broker inside the test process, in virtual time (feature `embedded`, on tokio).
//!
//! [`VirtualBroker`] runs the real broker core (`krest-core`, the same state machine the
//! servers run) with storage in memory and a clock that moves only when the test calls
//! [`VirtualBroker::advance`]. Clients from [`VirtualBroker::client`] are ordinary
//! [`Client`]s whose driver passes frames to the broker instead of a socket, and whose
//! timeouts run on the same virtual clock. So "deliver in 3 days" or "an ack timeout of 12 h"
//! takes one `advance` call and no real time, and the same test always sees the same order.
//!
//! ```no_run
//! # async fn example() -> Result<(), krest_client::ClientError> {
//! use std::time::Duration;
//! use krest_client::embedded::VirtualBroker;
//! use krest_client::{QueueKind, QueueSettings};
//!
//! let broker = VirtualBroker::start(Default::default());
//! let client = broker.client().await?;
//! let delay = QueueSettings { kind: QueueKind::Delay as i32, ..Default::default() };
//! client.declare_queue("reminders", delay).await?;
//! client.producer("reminders").send_delayed("pay", Duration::from_secs(3 * 86_400)).await?;
//! broker.advance(Duration::from_secs(3 * 86_400)).await; // due now, delivered at once
//! # Ok(())
//! # }
//! ```
//!
//! Storage completes at once (every sync succeeds): this is for testing applications, not the
//! broker's durability, which the simulator and the black-box tests cover.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use krest_core::ids::ConnId;
use krest_core::memory_storage::MemoryStorage;
use krest_core::router::{Event, Mailbox, MailboxRouter, Outbound};
use krest_core::{Input, Node, Now, Recovered};
use krest_proto::frame::FrameDecoder;
use tokio::sync::{mpsc, oneshot, watch};

pub use krest_core::Config;

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::machine::Action;
use crate::runtime::DriverTask;
use crate::shared::{Clock, Shared};

/// The virtual clock: an origin and the virtual time elapsed since, moved only by `advance`.
#[derive(Clone)]
struct VirtualClock {
    origin: Instant,
    wall_origin_ms: u64,
    elapsed: Arc<watch::Sender<Duration>>,
}

impl VirtualClock {
    fn now(&self) -> Instant {
        self.origin + *self.elapsed.borrow()
    }

    fn core_now(&self) -> Now {
        let elapsed_ms = self.elapsed.borrow().as_millis() as u64;
        Now {
            monotonic: krest_core::Instant(elapsed_ms),
            wall: krest_core::UnixMillis(self.wall_origin_ms + elapsed_ms),
        }
    }

    /// Resolves once virtual time reached `deadline`.
    async fn reached(&self, deadline: Instant) {
        let mut elapsed = self.elapsed.subscribe();
        let target = deadline.saturating_duration_since(self.origin);
        let _closed = elapsed.wait_for(|elapsed| *elapsed >= target).await;
    }
}

/// What clients' drivers and the test tell the broker task.
enum BrokerEvent {
    Connected {
        conn: ConnId,
        inbox: mpsc::UnboundedSender<Bytes>,
    },
    Bytes {
        conn: ConnId,
        bytes: Bytes,
    },
    Disconnected {
        conn: ConnId,
    },
    /// The clock moved: fire what is due, then answer.
    Advanced {
        done: oneshot::Sender<()>,
    },
}

/// A broker in this process, in virtual time. See the module documentation.
pub struct VirtualBroker {
    clock: VirtualClock,
    events: mpsc::UnboundedSender<BrokerEvent>,
    next_conn: Arc<AtomicU64>,
    next_producer_id: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VirtualBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VirtualBroker {
    /// Starts a broker with `config` (its `server` section is ignored: nothing listens) on the
    /// current tokio runtime. Virtual time starts now and stands still until
    /// [`VirtualBroker::advance`].
    pub fn start(config: Config) -> VirtualBroker {
        let wall_origin_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let clock = VirtualClock {
            origin: Instant::now(),
            wall_origin_ms,
            elapsed: Arc::new(watch::Sender::new(Duration::ZERO)),
        };
        let node = Node::new(config, Recovered::default(), 1, clock.core_now())
            .expect("an empty node always starts");
        let (events, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_broker(node, clock.clone(), receiver));
        VirtualBroker {
            clock,
            events,
            next_conn: Arc::new(AtomicU64::new(1)),
            next_producer_id: AtomicU64::new(1),
            task,
        }
    }

    /// How much virtual time has passed since the start.
    pub fn elapsed(&self) -> Duration {
        *self.clock.elapsed.borrow()
    }

    /// Moves virtual time forward by `duration`: every broker timer due by then fires (delayed
    /// messages become due, leases expire and redeliver), then client timers due by then fire.
    pub async fn advance(&self, duration: Duration) {
        self.clock
            .elapsed
            .send_modify(|elapsed| *elapsed += duration);
        let (done, answered) = oneshot::channel();
        if self.events.send(BrokerEvent::Advanced { done }).is_ok() {
            let _ = answered.await;
        }
        // Let client drivers take what the broker sent before the caller looks.
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// A client of this broker; its requests, timeouts and retries run in virtual time.
    pub async fn client(&self) -> Result<Client, ClientError> {
        let config = ClientConfig {
            servers: vec!["embedded".into()],
            client_name: "embedded".into(),
            ..ClientConfig::default()
        };
        let virtual_clock = self.clock.clone();
        let clock: Clock = Arc::new(move || virtual_clock.now());
        let shared = Arc::new(Shared::new(
            config,
            self.next_producer_id.fetch_add(1, Ordering::Relaxed),
            clock,
        ));
        let link = Link {
            clock: self.clock.clone(),
            events: self.events.clone(),
            next_conn: Arc::clone(&self.next_conn),
        };
        let task = DriverTask::Tokio(tokio::spawn(drive(Arc::clone(&shared), link)));
        Client::start(shared, task, 1).await
    }
}

/// What a client's driver needs of the broker.
struct Link {
    clock: VirtualClock,
    events: mpsc::UnboundedSender<BrokerEvent>,
    next_conn: Arc<AtomicU64>,
}

/// The driver of an embedded client: the machine's writes go to the broker as frames, the
/// broker's frames come back through an inbox, deadlines wait for virtual time.
async fn drive(shared: Arc<Shared>, link: Link) {
    let mut current: Option<ConnId> = None;
    let (inbox_sender, mut inbox) = mpsc::unbounded_channel::<Bytes>();
    let mut actions = Vec::new();
    loop {
        let (deadline, closed) = shared.driver_actions(&mut actions);
        for action in actions.drain(..) {
            match action {
                Action::Connect { attempt, .. } => {
                    if let Some(conn) = current.take() {
                        let _ = link.events.send(BrokerEvent::Disconnected { conn });
                    }
                    let conn = ConnId(link.next_conn.fetch_add(1, Ordering::Relaxed));
                    current = Some(conn);
                    let inbox = inbox_sender.clone();
                    let _ = link.events.send(BrokerEvent::Connected { conn, inbox });
                    let now = link.clock.now();
                    shared.driver_input(|machine| machine.on_connected(now, attempt));
                }
                Action::Write(bytes) => {
                    let length = bytes.len();
                    if let Some(conn) = current {
                        let _ = link.events.send(BrokerEvent::Bytes { conn, bytes });
                    }
                    shared.driver_input(|machine| machine.on_written(length));
                }
                Action::Close => {
                    if let Some(conn) = current.take() {
                        let _ = link.events.send(BrokerEvent::Disconnected { conn });
                    }
                }
            }
        }
        if closed {
            if let Some(conn) = current.take() {
                let _ = link.events.send(BrokerEvent::Disconnected { conn });
            }
            return;
        }
        tokio::select! {
            () = shared.driver_woken() => {}
            Some(bytes) = inbox.recv() => {
                let now = link.clock.now();
                shared.driver_input(|machine| machine.on_bytes(now, &bytes));
            }
            () = wait_for(&link.clock, deadline) => {
                let now = link.clock.now();
                shared.driver_input(|machine| machine.on_timeout(now));
            }
        }
    }
}

async fn wait_for(clock: &VirtualClock, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => clock.reached(deadline).await,
        None => std::future::pending().await,
    }
}

/// The broker task: the node behind the command router, its in-memory storage, the
/// connections' inboxes.
async fn run_broker(
    node: Node,
    clock: VirtualClock,
    mut events: mpsc::UnboundedReceiver<BrokerEvent>,
) {
    let mut connections: BTreeMap<ConnId, (mpsc::UnboundedSender<Bytes>, FrameDecoder)> =
        BTreeMap::new();
    let mailbox = Mailbox::default();
    let mut router = MailboxRouter::new(node);
    let mut storage = MemoryStorage::default();
    let max_frame_bytes = krest_proto::frame::DEFAULT_MAX_FRAME_BYTES;
    while let Some(event) = events.recv().await {
        let now = clock.core_now();
        match event {
            BrokerEvent::Connected { conn, inbox } => {
                connections.insert(conn, (inbox, FrameDecoder::new(max_frame_bytes)));
                let outbox = mailbox.outbox(conn);
                router.on_event(now, Event::Connected { conn, outbox });
            }
            BrokerEvent::Bytes { conn, bytes } => {
                if let Some((_, decoder)) = connections.get_mut(&conn) {
                    let mut buffer = BytesMut::from(&bytes[..]);
                    while let Ok(Some(body)) = decoder.decode(&mut buffer) {
                        let frame = Input::ClientFrame { conn, body };
                        router.on_event(now, Event::Input(frame));
                    }
                }
            }
            BrokerEvent::Disconnected { conn } => {
                if connections.remove(&conn).is_some() {
                    let gone = Input::ClientDisconnected { conn };
                    router.on_event(now, Event::Input(gone));
                }
            }
            BrokerEvent::Advanced { done } => {
                router.on_timer(now);
                let _ = done.send(());
            }
        }
        // Carry out what the node asked, and everything that causes, until it is quiet.
        loop {
            let mut closed = Vec::new();
            for (conn, message) in mailbox.take().to_connections {
                match message {
                    Outbound::Frame(frame) => {
                        if let Some((inbox, _)) = connections.get(&conn) {
                            let _ = inbox.send(frame);
                        }
                    }
                    Outbound::Close { .. } => {
                        if connections.remove(&conn).is_some() {
                            closed.push(conn);
                        }
                    }
                    Outbound::Reading(_) => {}
                }
            }
            let done = storage.run(router.take_storage_requests(), true);
            if done.is_empty() && closed.is_empty() {
                break;
            }
            router.on_storage_done(now, done);
            for conn in closed {
                let gone = Input::ClientDisconnected { conn };
                router.on_event(now, Event::Input(gone));
            }
        }
    }
}
