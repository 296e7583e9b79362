//! The smol driver (feature `smol`). The task runs on smol's global executor, so the client
//! works in a program that runs only smol (or async-io based code); the handles share only
//! [`Shared`] with it.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf as _;
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use smol::Timer;

use super::{DriverTask, Outgoing, READ_CHUNK_BYTES};
use crate::machine::AttemptId;
use crate::shared::Shared;

type Connecting = Option<(AttemptId, smol::Task<io::Result<TcpStream>>)>;

/// Starts the driver task on smol's global executor.
pub(crate) fn spawn(shared: Arc<Shared>) -> DriverTask {
    DriverTask::Smol(smol::spawn(drive(shared)))
}

/// What woke the driver.
enum Wake {
    Changed,
    Connected(AttemptId, io::Result<TcpStream>),
    Read(io::Result<usize>),
    Written(io::Result<usize>),
    Deadline,
}

async fn drive(shared: Arc<Shared>) {
    let mut connecting: Connecting = None;
    let mut socket: Option<TcpStream> = None;
    let mut outgoing = Outgoing::default();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut actions = Vec::new();
    loop {
        let (deadline, closed) = shared.driver_actions(&mut actions);
        let plan = outgoing.apply(&mut actions);
        if plan.close_socket {
            connecting = None;
            socket = None;
        }
        if let Some((attempt, address)) = plan.connect {
            connecting = Some((attempt, smol::spawn(connect(address))));
        }
        if closed {
            return;
        }
        let mut reader = socket.clone();
        let mut writer = socket.clone();
        let may_write = !outgoing.bytes.is_empty();
        let wake = async {
            shared.driver_woken().await;
            Wake::Changed
        }
        .or(async {
            match &mut connecting {
                Some((attempt, task)) => Wake::Connected(*attempt, task.await),
                None => future::pending().await,
            }
        })
        .or(async {
            match &mut reader {
                Some(reader) => Wake::Read(reader.read(&mut chunk).await),
                None => future::pending().await,
            }
        })
        .or(async {
            match (&mut writer, may_write) {
                (Some(writer), true) => Wake::Written(match writer.write(&outgoing.bytes).await {
                    Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                    outcome => outcome,
                }),
                _ => future::pending().await,
            }
        })
        .or(async {
            match deadline {
                Some(deadline) => {
                    Timer::at(deadline).await;
                    Wake::Deadline
                }
                None => future::pending().await,
            }
        })
        .await;
        match wake {
            Wake::Changed => {}
            Wake::Connected(attempt, result) => {
                connecting = None;
                match result {
                    Ok(stream) => {
                        socket = Some(stream);
                        shared
                            .driver_input(|machine| machine.on_connected(Instant::now(), attempt));
                    }
                    Err(error) => shared.driver_input(|machine| {
                        machine.on_connect_failed(Instant::now(), attempt, error)
                    }),
                }
            }
            Wake::Read(Ok(0)) => {
                socket = None;
                shared.driver_input(|machine| machine.on_socket_closed(Instant::now(), None));
            }
            Wake::Read(Err(error)) | Wake::Written(Err(error)) => {
                socket = None;
                shared
                    .driver_input(|machine| machine.on_socket_closed(Instant::now(), Some(error)));
            }
            Wake::Read(Ok(length)) => {
                let bytes = &chunk[..length];
                shared.driver_input(|machine| machine.on_bytes(Instant::now(), bytes));
            }
            Wake::Written(Ok(length)) => {
                outgoing.bytes.advance(length);
                shared.driver_input(|machine| machine.on_written(length));
            }
            Wake::Deadline => shared.driver_input(|machine| machine.on_timeout(Instant::now())),
        }
    }
}

async fn connect(address: String) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
