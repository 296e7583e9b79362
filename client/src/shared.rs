//! The memory the handles ([`crate::Client`], producers, consumers) share with the driver task:
//! the [`ClientMachine`] behind one mutex, plus the slots where answers and deliveries wait
//! for their callers. It uses only a mutex and [`Waker`]s, so it works the same under tokio
//! (also multi-threaded) and smol; loom checks the hand-off (`RUSTFLAGS="--cfg loom"`).
//!
//! Invariants:
//! - the mutex is never held across an `.await`, and nothing inside it blocks;
//! - after any change a handle makes to the machine, the driver is woken, so the actions the
//!   change produced are carried out and a new deadline is slept on;
//! - every event the machine emits is routed in the same critical section that produced it:
//!   an answer goes to its request's slot (and wakes the waiter), deliveries to their
//!   consumer's queue; an answer for a request whose caller stopped waiting is dropped;
//! - a waiter registers its waker in the same critical section in which it finds its slot
//!   empty, so no answer can arrive unseen between the look and the registration.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use krest_proto::client::{client_frame, server_frame, Deliveries, Subscribe};

// The handles hold the shared state in a std `Arc` (it needs to be a method receiver); the
// memory threads race on is behind the mutex, which loom models.
#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::machine::{Action, ClientMachine, ConsumerKey, Event, RequestKey};

/// Where the handles read the time: the system's monotonic clock, or a virtual one
/// ([`crate::embedded`]).
pub(crate) type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The system's monotonic clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(Instant::now)
}

/// The answer to one request: the server's result body, or why there is none.
pub(crate) type Response = Result<server_frame::Body, ClientError>;

/// What a consumer receives.
#[derive(Debug)]
pub(crate) enum ConsumerEvent {
    /// Pushed deliveries of the consumer's current subscription.
    Deliveries(Deliveries),
    /// The subscription ended for good.
    Ended(ClientError),
}

#[derive(Default)]
struct AnswerSlot {
    answer: Option<Response>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct ConsumerSlot {
    events: VecDeque<ConsumerEvent>,
    /// No more events will come (the consumer ended or the client closed).
    finished: bool,
    waker: Option<Waker>,
}

struct State {
    machine: ClientMachine,
    answers: BTreeMap<RequestKey, AnswerSlot>,
    consumers: BTreeMap<ConsumerKey, ConsumerSlot>,
    /// Handles waiting for write room.
    write_room_waiters: Vec<Waker>,
    /// Handles waiting for the link's status to change (connecting).
    status_waiters: Vec<Waker>,
    /// The driver task, parked until there is something for it.
    driver_waker: Option<Waker>,
    driver_woken: bool,
}

/// State shared by the handles and the driver. See the module documentation.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) producer_id: u64,
    /// The next idempotency sequence for a publish; starts at 1.
    pub(crate) next_producer_sequence: AtomicU64,
    clock: Clock,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: ClientConfig, producer_id: u64, clock: Clock) -> Shared {
        let machine = ClientMachine::new(config.clone(), producer_id, clock());
        Shared {
            config,
            producer_id,
            next_producer_sequence: AtomicU64::new(1),
            clock,
            state: Mutex::new(State {
                machine,
                answers: BTreeMap::new(),
                consumers: BTreeMap::new(),
                write_room_waiters: Vec::new(),
                status_waiters: Vec::new(),
                driver_waker: None,
                driver_woken: true,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the tables consistent before anything that can panic,
        // so a poisoned lock still guards usable state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` for a handle, routes the events it produced and wakes the driver. A
    /// change that starts a request makes its answer slot inside `change`, before routing.
    fn change<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        let output = change(&mut state);
        route_events(&mut state);
        state.driver_woken = true;
        let driver = state.driver_waker.take();
        drop(state);
        if let Some(driver) = driver {
            driver.wake();
        }
        output
    }

    /// Starts a request and returns the handle to its answer.
    pub(crate) fn start(
        self: &Arc<Self>,
        body: client_frame::Body,
        timeout: Duration,
        attempts_max: u32,
    ) -> InFlight {
        self.change(|state| {
            let key = state
                .machine
                .start_request((self.clock)(), body, timeout, attempts_max);
            self.in_flight(state, key)
        })
    }

    /// Sends one request and waits for its answer.
    pub(crate) async fn request(self: &Arc<Self>, body: client_frame::Body) -> Response {
        let attempts = self.config.reconnect_attempts_per_request;
        self.start(body, self.config.request_timeout, attempts)
            .await
    }

    /// Waits until fewer than the machine's bound of bytes wait to be written.
    pub(crate) async fn write_room(&self) {
        std::future::poll_fn(|context| {
            let mut state = self.lock();
            if state.machine.has_write_room() || state.machine.is_closed() {
                return Poll::Ready(());
            }
            state.write_room_waiters.push(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until a first session is up (`Ok`), or `attempts_max` connection attempts failed
    /// (the last one's error), or the client closed.
    pub(crate) async fn connected(&self, attempts_max: u64) -> Result<(), ClientError> {
        std::future::poll_fn(|context| {
            let mut state = self.lock();
            let status = state.machine.status();
            if status.sessions > 0 {
                return Poll::Ready(Ok(()));
            }
            if state.machine.is_closed() {
                return Poll::Ready(Err(ClientError::Closed));
            }
            if status.failed_attempts >= attempts_max {
                let error = state.machine.last_error().map(ClientError::duplicate);
                return Poll::Ready(Err(error.unwrap_or(ClientError::Disconnected)));
            }
            state.status_waiters.push(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends a request nobody waits for.
    pub(crate) fn send_ignored(&self, body: client_frame::Body) {
        self.change(|state| state.machine.send_ignored(body));
    }

    /// Sleeps for `duration` on the machine's timers (no runtime timer needed).
    pub(crate) async fn sleep(self: &Arc<Self>, duration: Duration) {
        let timer = self.change(|state| {
            let key = state.machine.start_timer((self.clock)(), duration);
            self.in_flight(state, key)
        });
        let _ended = timer.await;
    }

    /// Registers a consumer, starts its subscribe, and returns its key and the subscribe's
    /// answer handle.
    pub(crate) fn add_consumer(
        self: &Arc<Self>,
        subscribe: Subscribe,
        timeout: Duration,
    ) -> (ConsumerKey, InFlight) {
        self.change(|state| {
            let (consumer, key) = state
                .machine
                .add_consumer((self.clock)(), subscribe, timeout);
            state.consumers.entry(consumer).or_default();
            (consumer, self.in_flight(state, key))
        })
    }

    /// Forgets a consumer; returns its subscription id on the current link, if any.
    pub(crate) fn remove_consumer(&self, consumer: ConsumerKey) -> Option<u64> {
        let mut state = self.lock();
        state.consumers.remove(&consumer);
        state.machine.remove_consumer(consumer)
    }

    /// The consumer's subscription id on the current link (see
    /// [`ClientMachine::subscription_id`]).
    pub(crate) fn subscription_id(&self, consumer: ConsumerKey) -> Result<u64, ClientError> {
        self.lock().machine.subscription_id(consumer)
    }

    /// The next event for a consumer; `None` once there will be none.
    pub(crate) fn poll_consumer(
        &self,
        consumer: ConsumerKey,
        context: &mut Context<'_>,
    ) -> Poll<Option<ConsumerEvent>> {
        let mut state = self.lock();
        let Some(slot) = state.consumers.get_mut(&consumer) else {
            return Poll::Ready(None);
        };
        if let Some(event) = slot.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if slot.finished {
            return Poll::Ready(None);
        }
        slot.waker = Some(context.waker().clone());
        Poll::Pending
    }

    /// Closes the client: requests fail with `Closed`, consumers end.
    pub(crate) fn close(&self) {
        self.change(|state| state.machine.close());
    }

    /// The server and node the client is connected to, if it is.
    pub(crate) fn connected_to(&self) -> Option<(String, u64)> {
        let state = self.lock();
        let status = state.machine.status();
        Some((status.connected_to.clone()?, status.node_id?))
    }

    fn in_flight(self: &Arc<Self>, state: &mut State, key: RequestKey) -> InFlight {
        state.answers.entry(key).or_default();
        InFlight {
            shared: Arc::clone(self),
            key,
        }
    }

    fn poll_answer(&self, key: RequestKey, context: &mut Context<'_>) -> Poll<Response> {
        let mut state = self.lock();
        let Some(slot) = state.answers.get_mut(&key) else {
            return Poll::Ready(Err(ClientError::Closed));
        };
        if let Some(answer) = slot.answer.take() {
            state.answers.remove(&key);
            return Poll::Ready(answer);
        }
        slot.waker = Some(context.waker().clone());
        Poll::Pending
    }

    fn cancel(&self, key: RequestKey) {
        let mut state = self.lock();
        if state.answers.remove(&key).is_some() {
            state.machine.cancel(key);
        }
    }

    // ---- the driver's side ----

    /// For the driver: takes the actions to carry out, and says when to call
    /// [`Shared::on_timeout`] next and whether the client is closed.
    pub(crate) fn driver_actions(&self, actions: &mut Vec<Action>) -> (Option<Instant>, bool) {
        let mut state = self.lock();
        while let Some(action) = state.machine.poll_action() {
            actions.push(action);
        }
        (state.machine.poll_timeout(), state.machine.is_closed())
    }

    /// For the driver: feeds what the socket or the clock did to the machine and routes the
    /// events.
    pub(crate) fn driver_input(&self, input: impl FnOnce(&mut ClientMachine)) {
        let mut state = self.lock();
        input(&mut state.machine);
        route_events(&mut state);
        let mut waiters = std::mem::take(&mut state.status_waiters);
        if state.machine.has_write_room() {
            waiters.append(&mut state.write_room_waiters);
        }
        drop(state);
        for waiter in waiters {
            waiter.wake();
        }
    }

    /// For the driver: resolves when a handle changed the machine since the last time.
    pub(crate) fn driver_woken(&self) -> DriverWoken<'_> {
        DriverWoken { shared: self }
    }
}

/// Hands each event the machine emitted to its waiter.
fn route_events(state: &mut State) {
    while let Some(event) = state.machine.poll_event() {
        let (waker, _consumer) = match event {
            Event::Answer { request, result } => match state.answers.get_mut(&request) {
                Some(slot) => {
                    slot.answer = Some(result);
                    (slot.waker.take(), None::<ConsumerKey>)
                }
                None => (None, None),
            },
            Event::Deliveries {
                consumer,
                deliveries,
            } => match state.consumers.get_mut(&consumer) {
                Some(slot) => {
                    slot.events.push_back(ConsumerEvent::Deliveries(deliveries));
                    (slot.waker.take(), Some(consumer))
                }
                None => (None, None),
            },
            Event::ConsumerEnded { consumer, error } => match state.consumers.get_mut(&consumer) {
                Some(slot) => {
                    slot.events.push_back(ConsumerEvent::Ended(error));
                    slot.finished = true;
                    (slot.waker.take(), Some(consumer))
                }
                None => (None, None),
            },
        };
        if let Some(waker) = waker {
            // Waking under the lock is fine: a waker only schedules a task.
            waker.wake();
        }
    }
    if state.machine.is_closed() {
        for slot in state.consumers.values_mut() {
            slot.finished = true;
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
        for waiter in std::mem::take(&mut state.write_room_waiters) {
            waiter.wake();
        }
    }
}

/// A request that was started and waits for its answer. Dropping it forgets the request, so a
/// late answer is discarded.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    key: RequestKey,
}

impl Future for InFlight {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Response> {
        self.shared.poll_answer(self.key, context)
    }
}

impl InFlight {
    /// Lets the request run to its end (written, retried after a reconnect, answered or timed
    /// out) with nobody waiting: its answer is dropped when it comes.
    pub(crate) fn detach(self) {
        self.shared.lock().answers.remove(&self.key);
        // Dropping `self` now cancels nothing: the answer slot is gone.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.cancel(self.key);
    }
}

/// The future of [`Shared::driver_woken`].
pub(crate) struct DriverWoken<'shared> {
    shared: &'shared Shared,
}

impl Future for DriverWoken<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.driver_woken {
            state.driver_woken = false;
            return Poll::Ready(());
        }
        state.driver_waker = Some(context.waker().clone());
        Poll::Pending
    }
}

/// The producer sequence for the next message.
pub(crate) fn next_producer_sequence(shared: &Shared) -> u64 {
    shared
        .next_producer_sequence
        .fetch_add(1, Ordering::Relaxed)
}

/// Model checks of the hand-off between the driver and the handles: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p krest-client --no-default-features --features smol
/// --release --lib loom_tests`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::machine::Action;
    use krest_proto::client::{HelloOk, Ping, Pong, ServerFrame, SubscribeOk};
    use krest_proto::frame::{frame_bytes, FrameDecoder};

    /// A client whose link is up, as the driver would have made it.
    fn connected() -> Arc<Shared> {
        let shared = Arc::new(Shared::new(ClientConfig::new(["a:1"]), 1, system_clock()));
        let mut actions = Vec::new();
        shared.driver_actions(&mut actions);
        let Some(Action::Connect { attempt, .. }) = actions.pop() else {
            panic!("expected a connect");
        };
        shared.driver_input(|machine| machine.on_connected(Instant::now(), attempt));
        let hello_ok = server_frame(0, server_frame::Body::HelloOk(HelloOk::default()));
        shared.driver_input(|machine| machine.on_bytes(Instant::now(), &hello_ok));
        shared.driver_actions(&mut actions);
        shared
    }

    fn server_frame(request_id: u64, body: server_frame::Body) -> Vec<u8> {
        frame_bytes(&ServerFrame {
            request_id,
            body: Some(body),
        })
        .to_vec()
    }

    /// A driver thread that hands `bytes` from the server to the machine.
    fn driver_receives(shared: &Arc<Shared>, bytes: Vec<u8>) -> loom::thread::JoinHandle<()> {
        let shared = Arc::clone(shared);
        loom::thread::spawn(move || {
            shared.driver_input(|machine| machine.on_bytes(Instant::now(), &bytes))
        })
    }

    /// The request id of the last request the machine wrote.
    fn last_request_id(shared: &Shared) -> u64 {
        let mut actions = Vec::new();
        shared.driver_actions(&mut actions);
        let mut bytes = bytes::BytesMut::new();
        for action in actions {
            if let Action::Write(chunk) = action {
                bytes.extend_from_slice(&chunk);
            }
        }
        let mut decoder = FrameDecoder::new(u32::MAX);
        let mut last = 0;
        while let Some(frame) = decoder
            .decode_message::<krest_proto::client::ClientFrame>(&mut bytes)
            .unwrap()
        {
            last = frame.request_id;
        }
        last
    }

    /// The driver thread answers while the caller polls: the caller gets the answer exactly
    /// once whatever the interleaving, and a lost wake-up would deadlock the model.
    #[test]
    fn an_answer_reaches_its_waiter_across_threads() {
        loom::model(|| {
            let shared = connected();
            let ping = client_frame::Body::Ping(Ping {});
            let in_flight = shared.start(ping, Duration::from_secs(60), 1);
            let request_id = last_request_id(&shared);
            let pong = server_frame(request_id, server_frame::Body::Pong(Pong {}));
            let driver = driver_receives(&shared, pong);
            let answer = loom::future::block_on(in_flight);
            assert!(matches!(answer, Ok(server_frame::Body::Pong(_))));
            driver.join().unwrap();
            assert!(shared.lock().answers.is_empty(), "the slot is gone");
        });
    }

    /// A caller that gives up (drops its request) while the answer arrives leaves nothing
    /// behind, whichever happens first.
    #[test]
    fn a_cancelled_request_leaves_no_slot_behind() {
        loom::model(|| {
            let shared = connected();
            let ping = client_frame::Body::Ping(Ping {});
            let in_flight = shared.start(ping, Duration::from_secs(60), 1);
            let request_id = last_request_id(&shared);
            let pong = server_frame(request_id, server_frame::Body::Pong(Pong {}));
            let driver = driver_receives(&shared, pong);
            drop(in_flight);
            driver.join().unwrap();
            assert!(shared.lock().answers.is_empty());
        });
    }

    /// Deliveries pushed by the driver reach a consumer parked on its slot.
    #[test]
    fn deliveries_reach_a_parked_consumer() {
        loom::model(|| {
            let shared = connected();
            let subscribe = Subscribe::default();
            let (consumer, subscribing) = shared.add_consumer(subscribe, Duration::from_secs(60));
            let request_id = last_request_id(&shared);
            let ok = SubscribeOk { subscription_id: 5 };
            let ok = server_frame(request_id, server_frame::Body::SubscribeOk(ok));
            shared.driver_input(|machine| machine.on_bytes(Instant::now(), &ok));
            assert!(loom::future::block_on(subscribing).is_ok());
            let deliveries = Deliveries {
                subscription_id: 5,
                ..Deliveries::default()
            };
            let pushed = server_frame(0, server_frame::Body::Deliveries(deliveries));
            let driver = driver_receives(&shared, pushed);
            let event = loom::future::block_on(std::future::poll_fn(|context| {
                shared.poll_consumer(consumer, context)
            }));
            assert!(matches!(event, Some(ConsumerEvent::Deliveries(_))));
            driver.join().unwrap();
        });
    }
}
