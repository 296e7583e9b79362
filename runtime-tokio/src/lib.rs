//! krest-runtime-tokio: runs the Krest-MQ core on tokio.
//!
//! This crate only does what is about sockets, timers, signals and tasks: it accepts client and
//! admin connections, moves bytes between sockets and the shared codecs, sleeps until the core's
//! next deadline, and waits for the storage worker. The event-loop logic is
//! [`krest_core::driver`], the codecs are in `krest-proto`, and opening the node, its storage
//! worker and its listeners is [`krest_storage_file::server`]; `krest-runtime-smol` is the same
//! adapter for smol.

mod admin;
mod connection;
mod event_loop;

use std::future::Future;

pub use krest_storage_file::server::{Bound, Opened, StartError};

/// Serves `opened` until `shutdown` completes, then stops accepting, lets storage finish what
/// it was given (sending the confirms it earns), closes clients and returns.
pub async fn run(opened: Opened, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let adopt = |what: &'static str, listener: std::net::TcpListener| {
        let error = StartError::adopting(what, &listener);
        tokio::net::TcpListener::from_std(listener).map_err(error)
    };
    let client_listener = adopt("client", opened.client_listener)?;
    let admin_listener = adopt("admin", opened.admin_listener)?;
    let parts = event_loop::Parts {
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
