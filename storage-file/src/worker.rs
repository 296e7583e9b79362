//! The storage worker: blocking file I/O on a thread of its own, handed work by the event loop.
//!
//! The event loop (an async task on any runtime) submits [`StorageRequest`]s and awaits
//! completions; the worker thread takes everything submitted so far as one batch (so one fsync
//! serves every sync in it: group commit), executes it, and hands the completions back. The two
//! sides share one small `HandOff`: a mutex over two queues, a condition variable that wakes the
//! worker, and the event loop's [`Waker`]. The hand-off is runtime-agnostic, so tokio, smol and
//! the tests use the same code, and loom checks it (`RUSTFLAGS="--cfg loom"`, see `loom_tests`).
//!
//! Invariants the hand-off keeps (checked by the loom tests):
//! - every submitted request is executed exactly once, in submission order, unless it was
//!   submitted after [`StorageWorker::close`] (then it is refused and counted);
//! - every completion is handed to the event loop exactly once, in execution order;
//! - a completion never waits for a wake-up that does not come: the worker wakes the last
//!   registered waker after it publishes completions, and the event loop registers its waker
//!   in the same critical section in which it finds no completions;
//! - after `close`, the worker finishes what was submitted, hands back its completions, and only
//!   then reports [`Completions::Stopped`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use krest_core::{StorageDone, StorageRequest};

#[cfg(loom)]
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
use loom::thread;
#[cfg(not(loom))]
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::thread;

/// Most requests taken in one batch; the rest wait for the next one.
pub const MAX_BATCH_REQUESTS: usize = 8_192;

/// Executes a batch of storage requests. [`crate::StorageExecutor`] is the real one.
pub trait BatchExecutor: Send + 'static {
    /// Carries out `batch` in order and returns every completion it produced.
    fn execute_batch(&mut self, batch: Vec<StorageRequest>) -> Vec<StorageDone>;
}

impl BatchExecutor for crate::StorageExecutor {
    fn execute_batch(&mut self, batch: Vec<StorageRequest>) -> Vec<StorageDone> {
        crate::StorageExecutor::execute_batch(self, batch)
    }
}

/// What the event loop gets from [`StorageWorker::completions`].
#[derive(Debug)]
pub enum Completions {
    /// Completions, in the order the worker produced them (never empty).
    Done(Vec<StorageDone>),
    /// The worker finished everything it was given after `close` and stopped.
    Stopped,
}

#[derive(Default)]
struct State {
    /// Submitted, not yet taken by the worker.
    requests: Vec<StorageRequest>,
    /// Produced by the worker, not yet taken by the event loop.
    completions: Vec<StorageDone>,
    /// No more requests are accepted; the worker stops once `requests` is empty.
    closing: bool,
    /// The worker has stopped; nothing more will be produced.
    stopped: bool,
    /// The event loop's waker, registered when it found nothing to take.
    waker: Option<Waker>,
}

/// The memory both sides share.
struct HandOff {
    state: Mutex<State>,
    /// Signalled when requests arrive or `closing` is set.
    work_arrived: Condvar,
}

impl HandOff {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No critical section can panic half-way through an update, so a poisoned lock still
        // guards consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The handle the event loop holds. Dropping it closes the worker and waits for it.
pub struct StorageWorker {
    hand_off: Arc<HandOff>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StorageWorker {
    /// Starts the worker thread around `executor`.
    pub fn spawn(executor: impl BatchExecutor) -> StorageWorker {
        let hand_off = Arc::new(HandOff {
            state: Mutex::new(State::default()),
            work_arrived: Condvar::new(),
        });
        let worker_side = Arc::clone(&hand_off);
        let body = move || run_worker(&worker_side, executor);
        #[cfg(not(loom))]
        let thread = thread::Builder::new()
            .name("krest-storage".into())
            .spawn(body)
            .expect("the storage thread starts");
        #[cfg(loom)]
        let thread = thread::spawn(body);
        StorageWorker {
            hand_off,
            thread: Some(thread),
        }
    }

    /// Hands `requests` to the worker, in order. After [`StorageWorker::close`] they are
    /// refused: returns how many were refused (0 while open).
    pub fn submit(&self, requests: impl IntoIterator<Item = StorageRequest>) -> usize {
        let mut requests = requests.into_iter().peekable();
        if requests.peek().is_none() {
            return 0;
        }
        let mut state = self.hand_off.lock();
        if state.closing {
            return requests.count();
        }
        state.requests.extend(requests);
        drop(state);
        self.hand_off.work_arrived.notify_one();
        0
    }

    /// Takes the completions produced so far, or registers `context`'s waker to be woken when
    /// there are some (or the worker stopped).
    pub fn poll_completions(&self, context: &mut Context<'_>) -> Poll<Completions> {
        let mut state = self.hand_off.lock();
        if !state.completions.is_empty() {
            return Poll::Ready(Completions::Done(std::mem::take(&mut state.completions)));
        }
        if state.stopped {
            return Poll::Ready(Completions::Stopped);
        }
        let waker = context.waker();
        if !state.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        Poll::Pending
    }

    /// Resolves with the next completions; cancel-safe (dropping it loses nothing).
    pub fn completions(&self) -> NextCompletions<'_> {
        NextCompletions { worker: self }
    }

    /// Accepts no more requests; the worker finishes what it has, then stops.
    pub fn close(&self) {
        self.hand_off.lock().closing = true;
        self.hand_off.work_arrived.notify_one();
    }

    /// Closes the worker and waits for its thread to end.
    pub fn join(mut self) {
        self.close();
        if let Some(thread) = self.thread.take() {
            let _finished_or_panicked = thread.join();
        }
    }
}

impl Drop for StorageWorker {
    fn drop(&mut self) {
        self.close();
        if let Some(thread) = self.thread.take() {
            let _finished_or_panicked = thread.join();
        }
    }
}

/// The future of [`StorageWorker::completions`].
pub struct NextCompletions<'worker> {
    worker: &'worker StorageWorker,
}

impl Future for NextCompletions<'_> {
    type Output = Completions;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Completions> {
        self.worker.poll_completions(context)
    }
}

fn run_worker(hand_off: &HandOff, mut executor: impl BatchExecutor) {
    loop {
        let batch = {
            let mut state = hand_off.lock();
            while state.requests.is_empty() && !state.closing {
                state = hand_off
                    .work_arrived
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.requests.is_empty() {
                state.stopped = true;
                let waker = state.waker.take();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
            if state.requests.len() <= MAX_BATCH_REQUESTS {
                std::mem::take(&mut state.requests)
            } else {
                let rest = state.requests.split_off(MAX_BATCH_REQUESTS);
                std::mem::replace(&mut state.requests, rest)
            }
        };
        let done = executor.execute_batch(batch);
        if done.is_empty() {
            continue;
        }
        let waker = {
            let mut state = hand_off.lock();
            state.completions.extend(done);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What both test modules use: an executor that echoes numbered requests.
#[cfg(test)]
mod test_support {
    use super::*;
    use krest_core::ids::LogIndex;
    use krest_core::LogId;

    /// Answers each `DeleteSegmentsBelow { index }` with `Synced { through: index }`, so a test can
    /// number its requests; ignores everything else.
    pub(super) struct EchoSyncs;

    impl BatchExecutor for EchoSyncs {
        fn execute_batch(&mut self, batch: Vec<StorageRequest>) -> Vec<StorageDone> {
            batch
                .into_iter()
                .filter_map(|request| match request {
                    StorageRequest::DeleteSegmentsBelow { log, index } => {
                        Some(StorageDone::Synced {
                            log,
                            through: index,
                        })
                    }
                    _ => None,
                })
                .collect()
        }
    }

    /// A request the echo executor answers with `Synced { through: number }`.
    pub(super) fn numbered(number: u64) -> StorageRequest {
        StorageRequest::DeleteSegmentsBelow {
            log: LogId::Metadata,
            index: LogIndex(number),
        }
    }

    /// The numbers of the echoed completions, in order.
    pub(super) fn indexes(done: Vec<StorageDone>) -> Vec<u64> {
        done.into_iter()
            .filter_map(|done| match done {
                StorageDone::Synced { through, .. } => Some(through.0),
                StorageDone::Measured { .. } => None,
                StorageDone::Read { .. } | StorageDone::Persisted { .. } => {
                    unreachable!("the echo executor is asked no reads and no persists")
                }
                StorageDone::Failed { .. } => unreachable!("the echo executor never fails"),
            })
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_support::{indexes, numbered, EchoSyncs};
    use super::*;

    /// Polls `future` until it is ready; the worker thread makes the progress.
    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut context = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn every_request_is_executed_once_in_order_and_close_reports_stopped_last() {
        let worker = StorageWorker::spawn(EchoSyncs);
        assert_eq!(worker.submit((1..=1_000).map(numbered)), 0);
        worker.close();
        assert_eq!(worker.submit([numbered(9_999)]), 1, "refused after close");
        let mut through = Vec::new();
        while let Completions::Done(done) = block_on(worker.completions()) {
            through.extend(indexes(done));
        }
        assert_eq!(through, (1..=1_000).collect::<Vec<_>>());
        worker.join();
    }
}

/// Model checks of the hand-off: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p krest-storage-file --release --lib loom_tests`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::test_support::{indexes, numbered, EchoSyncs};
    use super::*;

    /// Whatever the interleaving, two separate submissions come back once each, in order, and
    /// the event loop, parked on its waker, is woken for them (a lost wake-up deadlocks loom).
    #[test]
    fn completions_arrive_once_in_order_and_never_miss_a_wake_up() {
        loom::model(|| {
            let worker = StorageWorker::spawn(EchoSyncs);
            worker.submit([numbered(1)]);
            worker.submit([numbered(2)]);
            let mut seen = Vec::new();
            while seen.len() < 2 {
                match loom::future::block_on(worker.completions()) {
                    Completions::Done(done) => seen.extend(indexes(done)),
                    Completions::Stopped => panic!("stopped before close"),
                }
            }
            assert_eq!(seen, vec![1, 2]);
            worker.join();
        });
    }

    /// Close right after a submit: the submitted request is still executed and its completion
    /// handed over before `Stopped`, whichever side runs first.
    #[test]
    fn close_finishes_submitted_work_before_reporting_stopped() {
        loom::model(|| {
            let worker = StorageWorker::spawn(EchoSyncs);
            worker.submit([numbered(7)]);
            worker.close();
            let mut seen = Vec::new();
            loop {
                match loom::future::block_on(worker.completions()) {
                    Completions::Done(done) => seen.extend(indexes(done)),
                    Completions::Stopped => break,
                }
            }
            assert_eq!(seen, vec![7]);
            worker.join();
        });
    }
}
