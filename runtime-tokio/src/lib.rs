//! krest-runtime-tokio: runs the Krest-MQ core on tokio.
//!
//! This crate is only what is about tokio's sockets, timers and tasks: [`Tokio`] implements
//! [`krest_host::Runtime`], and [`run`] serves an opened node with it. The event loop, the
//! connection and admin tasks, the command line and opening the node are in `krest-host`, the
//! codecs in `krest-proto`; `krest-runtime-smol` is the same adapter for smol.
//!
//! Every task runs on one thread: tokio's current-thread runtime with a [`LocalSet`], as the
//! smol server runs on a `LocalExecutor`; file I/O runs on the storage worker's thread.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::task::LocalSet;

pub use krest_host::{Bound, Opened, StartError};

/// Serves `opened` until `shutdown` completes, then stops accepting, lets storage finish what
/// it was given (sending the confirms it earns), closes clients and returns. Call it inside a
/// tokio runtime; its tasks run on a [`LocalSet`] of their own.
pub async fn run(opened: Opened, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let tasks = LocalSet::new();
    let serve = krest_host::serve(Tokio, opened, TcpListener::from_std, shutdown);
    tasks.run_until(serve).await
}

/// tokio, as the serving loops use it.
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl krest_host::Runtime for Tokio {
    type Listener = TcpListener;
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;
    type Sleep = tokio::time::Sleep;

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        let _detached = tokio::task::spawn_local(task);
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    async fn accept(
        &self,
        listener: &TcpListener,
    ) -> io::Result<(OwnedReadHalf, OwnedWriteHalf, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok((reader, writer, peer))
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream.into_split())
    }

    async fn read(reader: &mut OwnedReadHalf, buffer: &mut BytesMut) -> io::Result<usize> {
        reader.read_buf(buffer).await
    }

    async fn write_all(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
        writer.write_all(bytes).await
    }

    async fn close(writer: &mut OwnedWriteHalf) {
        let _ = writer.shutdown().await;
    }

    async fn unblock(&self, call: impl FnOnce() + Send + 'static) {
        let _joined = tokio::task::spawn_blocking(call).await;
    }
}
