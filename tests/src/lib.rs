//! krest-tests: black-box test support.
//!
//! [`Server`] starts a real server binary on free ports (127.0.0.1, port 0) with its own data
//! directory, and can kill it with SIGKILL and start it again on the same data. [`RawClient`]
//! speaks the frame protocol byte by byte, for tests that send what a well-behaved client never
//! would.

pub mod deliveries;
pub mod raw;
pub mod server;
pub mod sim;

pub use raw::RawClient;
pub use server::{cli_binary, Server, ServerKind};

/// Generates, for each scenario `fn scenario(kind: ServerKind)` (or `async fn`), one `#[test]`
/// per server binary: `tokio_server::scenario` and `smol_server::scenario`, each calling
/// `$run(super::scenario, kind)`. `$run` is a path as seen from inside those modules, e.g.
/// `super::run` for a runner that drives an async scenario.
#[macro_export]
macro_rules! for_each_server {
    ($run:path; $($scenario:ident),* $(,)?) => {
        $crate::for_each_server!(@kind tokio_server, Tokio, $run; $($scenario),*);
        $crate::for_each_server!(@kind smol_server, Smol, $run; $($scenario),*);
    };
    (@kind $module:ident, $kind:ident, $run:path; $($scenario:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $scenario() {
                    $run(super::$scenario, $crate::ServerKind::$kind);
                }
            )*
        }
    };
}

/// The runner for plain (blocking) scenarios in [`for_each_server!`].
pub fn call(scenario: fn(ServerKind), kind: ServerKind) {
    scenario(kind)
}

/// The runner for async scenarios in [`for_each_server!`]: a multi-threaded tokio runtime (two
/// workers) and a two-minute bound, so a lost message fails the test instead of hanging it.
pub fn block_on<F: std::future::Future<Output = ()>>(
    scenario: fn(ServerKind) -> F,
    kind: ServerKind,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(120), scenario(kind))
            .await
            .expect("the scenario finished within two minutes")
    });
}
