//! The few things an async runtime must lend the serving loops ([`crate::serve`]): spawning a
//! task, a timer, accepting, dialing and splitting a TCP connection, reading, writing and closing
//! it, and
//! running a blocking call off the event-loop thread. `krest-runtime-tokio` and
//! `krest-runtime-smol` each implement [`Runtime`] in a few dozen lines; everything else about
//! serving is written once, here.
//!
//! Every task runs on one thread (tokio's current-thread runtime with a `LocalSet`, or smol's
//! `LocalExecutor`), so nothing here needs to be `Send`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

/// One async runtime, as the serving loops use it.
pub trait Runtime: Clone + 'static {
    /// A bound TCP listener adopted by the runtime.
    type Listener: 'static;
    /// The read half of an accepted connection.
    type Reader: 'static;
    /// The write half of an accepted connection.
    type Writer: 'static;
    /// A one-shot timer; what it yields is ignored.
    type Sleep: Future + 'static;

    /// Runs `task` to completion on this thread, detached: nobody waits for it.
    fn spawn(&self, task: impl Future<Output = ()> + 'static);

    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// The next connection: with `TCP_NODELAY` set, split into halves.
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer, SocketAddr)>>;

    /// Connects to `address` (a peer node): with `TCP_NODELAY` set, split into halves.
    fn connect(
        &self,
        address: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>>;

    /// Reads what the socket has (up to about 64 KiB), appending it to `buffer`; 0 means the
    /// peer closed.
    fn read(
        reader: &mut Self::Reader,
        buffer: &mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>>;

    /// Writes all of `bytes`.
    fn write_all(writer: &mut Self::Writer, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;

    /// Flushes and closes the write half (the peer reads end of stream).
    fn close(writer: &mut Self::Writer) -> impl Future<Output = ()>;

    /// Runs a blocking `call` on a thread where blocking is allowed, so this thread stays free.
    fn unblock(&self, call: impl FnOnce() + Send + 'static) -> impl Future<Output = ()>;
}
