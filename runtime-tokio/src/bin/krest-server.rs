//! `krest-server`: a Krest-MQ node on tokio.
//!
//! Configuration layers: built-in defaults < `krest.toml` (`--config FILE`, or `./krest.toml`
//! if present) < `KREST_<SECTION>_<KEY>` environment variables < flags. Exit codes: 0 clean
//! stop, 2 usage, 78 bad configuration, 74 storage error, 69 cannot bind. The shared parts
//! live in `krest_storage_file::server`; this file picks the runtime and the signals.

use std::process::ExitCode;

use krest_storage_file::server::{self, Opened};

fn main() -> ExitCode {
    server::main("krest-server", |config| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        runtime.block_on(async {
            let opened = Opened::open(config)?;
            opened.announce();
            krest_runtime_tokio::run(opened, shutdown_signal()).await
        })
    })
}

/// Completes on SIGTERM or Ctrl-C. A second signal exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("krest-server: second signal, exiting now");
        std::process::exit(1);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
