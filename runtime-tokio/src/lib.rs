//! krest-runtime-tokio: runs the Krest-MQ core on tokio.
//!
//! This crate only does what is about sockets, timers, signals and tasks: it accepts client and
//! admin connections, cuts byte streams into frames, runs storage on a dedicated thread, sleeps
//! until the core's next deadline, and carries out the core's commands. Everything else lives in
//! `krest-core`, `krest-proto` and `krest-storage-file`.

mod admin;
mod connection;
mod event_loop;
mod storage_thread;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use krest_core::{Config, Node, RecoveryError};
use krest_storage_file::{OpenError, StorageExecutor};
use tokio::net::TcpListener;

/// Where the server ended up listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The client protocol listener.
    pub client: SocketAddr,
    /// The admin HTTP listener.
    pub admin: SocketAddr,
}

/// Why the server could not run. Each kind has its own process exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// `client` or `admin`.
        what: &'static str,
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be opened or recovered.
    #[error("storage: {0}")]
    Storage(#[from] OpenError),
    /// The recovered data could not be understood.
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
}

impl ServerError {
    /// The process exit code (sysexits): 69 cannot bind, 74 storage.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Bind { .. } => 69,
            ServerError::Storage(_) | ServerError::Recovery(_) => 74,
        }
    }
}

/// Runs a node until `shutdown` completes, then stops accepting, lets storage finish what it
/// was given, closes clients and returns. `ready` is called once both listeners are bound.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    let (executor, recovered) = StorageExecutor::open(
        Path::new(&config.server.data_dir),
        config.storage.segment_bytes,
    )?;
    let clock = event_loop::Clock::start();
    let seed = clock.seed() ^ config.server.node_id;
    let node = Node::new(config.clone(), recovered, seed, clock.now())?;
    let client = bind("client", &config.server.listen).await?;
    let admin = bind("admin", &config.server.admin_listen).await?;
    let bound = Bound {
        client: client.local_addr().expect("bound listener has an address"),
        admin: admin.local_addr().expect("bound listener has an address"),
    };
    tracing::info!(client = %bound.client, admin = %bound.admin, data_dir = %config.server.data_dir, "krest-server ready");
    ready(bound);
    event_loop::run(node, clock, executor, client, admin, &config, shutdown).await;
    Ok(())
}

async fn bind(what: &'static str, address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            address: address.to_string(),
            source,
        })
}
