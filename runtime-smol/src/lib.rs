//! krest-runtime-smol: runs the Krest-MQ core on smol, for programs (and operators) that use
//! smol's executor; async-std users land here, since async-std is discontinued upstream.
//!
//! Like `krest-runtime-tokio`, this crate only does what is about sockets, timers, signals and
//! tasks. The event-loop logic is [`krest_core::driver`], the codecs are in `krest-proto`, and
//! opening the node, its storage worker and its listeners is [`krest_storage_file::server`].
//! Everything runs on one thread's [`LocalExecutor`], as the tokio server runs on tokio's
//! current-thread runtime; file I/O runs on the storage worker's thread.

mod admin;
mod connection;
mod event_loop;

use std::future::Future;
use std::rc::Rc;

pub use krest_storage_file::server::{Bound, Opened, StartError};
use smol::LocalExecutor;

/// The executor every task of the server runs on.
pub type Executor = Rc<LocalExecutor<'static>>;

/// Serves `opened` on `executor` until `shutdown` completes, then stops accepting, lets storage
/// finish what it was given (sending the confirms it earns), closes clients and returns.
pub async fn run(
    executor: Executor,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let adopt = |what: &'static str, listener: std::net::TcpListener| {
        let error = StartError::adopting(what, &listener);
        smol::net::TcpListener::try_from(listener).map_err(error)
    };
    let client_listener = adopt("client", opened.client_listener)?;
    let admin_listener = adopt("admin", opened.admin_listener)?;
    let parts = event_loop::Parts {
        executor,
        node: opened.node,
        storage: opened.storage,
        clock: opened.clock,
        limits: opened.config.limits,
        client_listener,
        admin_listener,
    };
    event_loop::run(parts, shutdown).await;
    Ok(())
}
