//! The storage thread: blocking file I/O off the event loop.
//!
//! The event loop sends requests over a channel; the thread takes everything that is waiting as
//! one batch (so one fsync serves every sync in it), executes it, and sends the completions back
//! as events. When the request channel closes it finishes its work and reports that it stopped.

use std::sync::mpsc;

use krest_core::{Input, StorageRequest};
use krest_storage_file::StorageExecutor;
use tokio::sync::mpsc as async_mpsc;

use crate::event_loop::Event;

/// Most requests taken in one batch.
const MAX_BATCH: usize = 8_192;

/// Starts the thread; returns where to send requests.
pub fn spawn(
    mut executor: StorageExecutor,
    events: async_mpsc::Sender<Event>,
) -> (mpsc::Sender<StorageRequest>, std::thread::JoinHandle<()>) {
    let (requests, receiver) = mpsc::channel::<StorageRequest>();
    let handle = std::thread::Builder::new()
        .name("krest-storage".into())
        .spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                for done in executor.execute_batch(batch) {
                    if events
                        .blocking_send(Event::Input(Input::StorageDone(done)))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let _ = events.blocking_send(Event::StorageStopped);
        })
        .expect("the storage thread starts");
    (requests, handle)
}
