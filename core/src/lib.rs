//! krest-core: the Krest-MQ broker as a deterministic, sans-IO state machine.
//!
//! The core never touches a socket, a file, a clock, a thread or an unseeded random number.
//! A runtime (tokio, smol, or the simulator) drives it:
//!
//! 1. Build it once: `Node::new(config, recovered, seed, now)`, where `recovered` is what the
//!    storage crate read back from disk.
//! 2. For every event (a client frame, a storage completion, a timer), call
//!    `node.handle(now, input)`. Timers due at `now` fire first.
//! 3. Drain `node.poll_command()` until it returns `None`, executing each command in order:
//!    send a frame, close a connection, pause reading, append or sync a log, answer an admin
//!    request.
//! 4. Sleep until the next input or `node.poll_timeout()`, whichever comes first, then send
//!    `Input::Tick` if the timeout won.
//!
//! [`router::Router`] is that loop's body, written once: every driver (both servers, the
//! simulator, the embedded broker, the fuzz driver, the tests) feeds inputs through it and takes
//! what it routes to connections, storage and admin requests. `handle` asserts that the previous
//! input's commands were drained.
//!
//! Replies that promise durability (publish confirms, acks of durable queues) are emitted only
//! after storage reported the records synced.

#[cfg(test)]
mod harness;
#[cfg(test)]
mod test_alloc;

pub mod cluster;
pub mod config;
/// Fuzz target bodies (run by `fuzz/` and by the corpus replay test; feature `testing`).
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod ids;
pub mod io;
#[cfg(any(test, feature = "testing"))]
pub mod memory_storage;
pub mod node;
#[cfg_attr(not(feature = "planted-bugs"), doc(hidden))]
pub mod planted;
pub mod queue;
pub mod raft;
pub mod rng;
pub mod router;
pub mod time;
pub mod timer;

pub use config::Config;
pub use io::{
    AdminHttpRequest, Command, Input, LogId, LogRecord, RaftState, Recovered, StorageDone,
    StorageRequest,
};
pub use node::{Node, NodeRecovery, RecoveryError};
pub use time::{Instant, Millis, Now, UnixMillis};
