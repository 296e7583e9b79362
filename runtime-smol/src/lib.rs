//! krest-runtime-smol: runs the Krest-MQ core on smol, for programs (and operators) that use
//! smol's executor; async-std users land here, since async-std is discontinued upstream.
//!
//! Like `krest-runtime-tokio`, this crate is only what is about the runtime's sockets, timers
//! and tasks: [`Smol`] implements [`krest_host::Runtime`], and [`run`] serves an opened node
//! with it. Everything runs on one thread's [`LocalExecutor`], as the tokio server runs on
//! tokio's current-thread runtime; file I/O runs on the storage worker's thread.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};

pub use krest_host::{Bound, Opened, StartError};

/// The executor every task of the server runs on.
pub type Executor = Rc<LocalExecutor<'static>>;

/// Serves `opened` on `executor` until `shutdown` completes, then stops accepting, lets storage
/// finish what it was given (sending the confirms it earns), closes clients and returns.
pub async fn run(
    executor: Executor,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let runtime = Smol { executor };
    krest_host::serve(runtime, opened, TcpListener::try_from, shutdown).await
}

/// A connection with `TCP_NODELAY`, as a reader with its chunk and a writer (clones of one
/// stream).
fn split(stream: TcpStream) -> (Reader, TcpStream) {
    let _ = stream.set_nodelay(true);
    let chunk = vec![0; krest_core::router::InboundFrames::READ_CHUNK_BYTES].into();
    let reader = Reader {
        stream: stream.clone(),
        chunk,
    };
    (reader, stream)
}

/// smol, as the serving loops use it.
#[derive(Clone)]
pub struct Smol {
    executor: Executor,
}

/// The read half of a connection, with the chunk each read fills.
pub struct Reader {
    stream: TcpStream,
    chunk: Box<[u8]>,
}

impl krest_host::Runtime for Smol {
    type Listener = TcpListener;
    type Reader = Reader;
    type Writer = TcpStream;
    type Sleep = Timer;

    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        self.executor.spawn(task).detach();
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Timer {
        Timer::at(deadline)
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(Reader, TcpStream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let (reader, writer) = split(stream);
        Ok((reader, writer, peer))
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<(Reader, TcpStream)> {
        Ok(split(TcpStream::connect(address).await?))
    }

    async fn read(reader: &mut Reader, buffer: &mut BytesMut) -> io::Result<usize> {
        let read = reader.stream.read(&mut reader.chunk).await?;
        buffer.extend_from_slice(&reader.chunk[..read]);
        Ok(read)
    }

    async fn write_all(writer: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        writer.write_all(bytes).await
    }

    async fn close(writer: &mut TcpStream) {
        let _ = writer.flush().await;
        let _ = writer.shutdown(std::net::Shutdown::Both);
    }

    async fn unblock(&self, call: impl FnOnce() + Send + 'static) {
        smol::unblock(call).await;
    }
}
