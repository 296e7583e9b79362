//! The drivers: a task per [`crate::Client`] that carries out the machine's actions on a real
//! socket, on tokio or on smol (features `tokio`, default, and `smol`).
//!
//! Both run the same loop: take the machine's actions (connect, write, close), then wait for
//! whichever comes first (a handle changed the machine, the connect finished, bytes arrived,
//! the socket took bytes, the machine's deadline passed) and report it. Only the waiting is
//! runtime-specific; [`Outgoing`] and [`Plan`] are shared.

#[cfg(feature = "smol")]
pub(crate) mod smol;
#[cfg(feature = "tokio")]
pub(crate) mod tokio;

use bytes::BytesMut;

use crate::machine::{Action, AttemptId};

/// Bytes asked of the socket per read.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the driver must do with its socket after a round of actions.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Drop the current socket (and any connect in progress).
    pub(crate) close_socket: bool,
    /// Then start connecting.
    pub(crate) connect: Option<(AttemptId, String)>,
}

/// Bytes queued for the socket, in order.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    pub(crate) bytes: BytesMut,
}

impl Outgoing {
    /// Applies `actions` (drained) to the queue and says what to do with the socket. Bytes
    /// queued before a close or a new connect are dropped: they belonged to the old socket.
    pub(crate) fn apply(&mut self, actions: &mut Vec<Action>) -> Plan {
        let mut plan = Plan::default();
        for action in actions.drain(..) {
            match action {
                Action::Write(bytes) => self.bytes.extend_from_slice(&bytes),
                Action::Close => {
                    plan.close_socket = true;
                    plan.connect = None;
                    self.bytes.clear();
                }
                Action::Connect { attempt, address } => {
                    plan.close_socket = true;
                    plan.connect = Some((attempt, address));
                    self.bytes.clear();
                }
            }
        }
        plan
    }
}

/// The task behind a client, on the runtime that runs it.
pub(crate) enum DriverTask {
    #[cfg(feature = "tokio")]
    Tokio(::tokio::task::JoinHandle<()>),
    #[cfg(feature = "smol")]
    Smol(::smol::Task<()>),
}

impl DriverTask {
    /// Waits for the task to end (after the client closed).
    pub(crate) async fn join(self) {
        match self {
            #[cfg(feature = "tokio")]
            DriverTask::Tokio(handle) => {
                let _finished_or_panicked = handle.await;
            }
            #[cfg(feature = "smol")]
            DriverTask::Smol(task) => task.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn bytes_before_a_close_or_a_connect_are_dropped_and_later_ones_kept() {
        let mut outgoing = Outgoing::default();
        let mut actions = vec![
            Action::Write(Bytes::from_static(b"old")),
            Action::Close,
            Action::Connect {
                attempt: AttemptId(2),
                address: "a:1".into(),
            },
            Action::Write(Bytes::from_static(b"new")),
        ];
        let plan = outgoing.apply(&mut actions);
        assert!(plan.close_socket);
        assert_eq!(plan.connect, Some((AttemptId(2), "a:1".to_string())));
        assert_eq!(&outgoing.bytes[..], b"new");
        assert!(actions.is_empty());
    }
}
