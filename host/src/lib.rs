//! krest-host: everything a Krest-MQ server process needs that is not about the async runtime,
//! written once for `krest-server` (tokio) and `krest-server-smol` (smol).
//!
//! - [`process`]: the command line, layered configuration, logging and exit codes: a server's
//!   whole `main` is [`process::main`] plus a closure that builds its runtime.
//! - [`open`]: the system clock and seed, recovery of the data directory into the node, the
//!   storage worker thread and the two bound listeners ([`Opened`]).
//! - [`serve`]: the event loop that owns the node through the core's command router, the client
//!   connection tasks and the admin HTTP tasks, generic over [`Runtime`].
//! - [`runtime`]: the small trait a runtime crate implements: spawn, sleep, accept, read, write,
//!   close, unblock.

pub mod open;
pub mod process;
pub mod runtime;
pub mod serve;

pub use open::{Bound, Opened, StartError, SystemClock};
pub use runtime::Runtime;

/// Serves `opened` on `runtime` (whose listeners `adopt` converts) until `shutdown` completes,
/// then stops accepting, lets storage finish what it was given (sending the confirms it earns),
/// closes clients and returns.
pub async fn serve<R: Runtime>(
    runtime: R,
    opened: Opened,
    adopt: impl Fn(std::net::TcpListener) -> std::io::Result<R::Listener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let adopt = |what: &'static str, listener: std::net::TcpListener| {
        let error = StartError::adopting(what, &listener);
        adopt(listener).map_err(error)
    };
    let peering = match opened.peering {
        Some(peering) => Some((adopt("peer", peering.listener)?, peering.setup)),
        None => None,
    };
    let parts = serve::Parts {
        client_listener: adopt("client", opened.client_listener)?,
        admin_listener: adopt("admin", opened.admin_listener)?,
        peering,
        runtime,
        node: opened.node,
        storage: opened.storage,
        clock: opened.clock,
        limits: opened.config.limits,
    };
    serve::run(parts, shutdown).await;
    Ok(())
}
