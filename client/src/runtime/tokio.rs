//! The tokio driver (feature `tokio`, on by default). Works on the current-thread and the
//! multi-threaded runtime: the task is `Send`, and the handles share only [`Shared`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{DriverTask, Outgoing, READ_CHUNK_BYTES};
use crate::machine::AttemptId;
use crate::shared::Shared;

type Connecting = Option<(
    AttemptId,
    Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>,
)>;

/// Starts the driver task on the current tokio runtime.
pub(crate) fn spawn(shared: Arc<Shared>) -> DriverTask {
    DriverTask::Tokio(tokio::spawn(drive(shared)))
}

async fn drive(shared: Arc<Shared>) {
    let mut connecting: Connecting = None;
    let mut reader: Option<OwnedReadHalf> = None;
    let mut writer: Option<OwnedWriteHalf> = None;
    let mut outgoing = Outgoing::default();
    let mut read_buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut actions = Vec::new();
    loop {
        let (deadline, closed) = shared.driver_actions(&mut actions);
        let plan = outgoing.apply(&mut actions);
        if plan.close_socket {
            connecting = None;
            reader = None;
            writer = None;
        }
        if let Some((attempt, address)) = plan.connect {
            connecting = Some((attempt, Box::pin(connect(address))));
        }
        if closed {
            return;
        }
        let deadline = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            () = shared.driver_woken() => {}
            (attempt, result) = finish_connect(&mut connecting) => {
                connecting = None;
                match result {
                    Ok(stream) => {
                        let (read_half, write_half) = stream.into_split();
                        reader = Some(read_half);
                        writer = Some(write_half);
                        shared.driver_input(|machine| machine.on_connected(Instant::now(), attempt));
                    }
                    Err(error) => shared.driver_input(|machine| {
                        machine.on_connect_failed(Instant::now(), attempt, error)
                    }),
                }
            }
            read = read_some(&mut reader, &mut read_buffer) => match read {
                Ok(0) | Err(_) => {
                    reader = None;
                    writer = None;
                    let error = read.err();
                    shared.driver_input(|machine| machine.on_socket_closed(Instant::now(), error));
                }
                Ok(_) => {
                    shared.driver_input(|machine| machine.on_bytes(Instant::now(), &read_buffer));
                    read_buffer.clear();
                }
            },
            written = write_some(&mut writer, &outgoing.bytes), if !outgoing.bytes.is_empty() => {
                match written {
                    Ok(length) => {
                        outgoing.bytes.advance(length);
                        shared.driver_input(|machine| machine.on_written(length));
                    }
                    Err(error) => {
                        reader = None;
                        writer = None;
                        shared.driver_input(|machine| {
                            machine.on_socket_closed(Instant::now(), Some(error))
                        });
                    }
                }
            }
            () = sleep_until(deadline) => {
                shared.driver_input(|machine| machine.on_timeout(Instant::now()));
            }
        }
    }
}

async fn connect(address: String) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn finish_connect(connecting: &mut Connecting) -> (AttemptId, io::Result<TcpStream>) {
    match connecting {
        Some((attempt, future)) => (*attempt, future.await),
        None => std::future::pending().await,
    }
}

async fn read_some(reader: &mut Option<OwnedReadHalf>, buffer: &mut BytesMut) -> io::Result<usize> {
    match reader {
        Some(reader) => {
            buffer.reserve(READ_CHUNK_BYTES);
            reader.read_buf(buffer).await
        }
        None => std::future::pending().await,
    }
}

async fn write_some(writer: &mut Option<OwnedWriteHalf>, bytes: &[u8]) -> io::Result<usize> {
    match writer {
        Some(writer) => match writer.write(bytes).await {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            outcome => outcome,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
