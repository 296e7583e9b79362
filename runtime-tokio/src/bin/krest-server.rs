//! `krest-server`: a Krest-MQ node on tokio.
//!
//! Configuration layers: built-in defaults < `krest.toml` (`--config FILE`, or `./krest.toml`
//! if present) < `KREST_<SECTION>_<KEY>` environment variables < flags. Exit codes: 0 clean
//! stop, 2 usage, 78 bad configuration, 74 storage error, 69 cannot bind. The shared parts
//! live in `krest-host`; this file picks the runtime and the signals.

use std::process::ExitCode;

use krest_host::process;
use krest_host::Opened;

fn main() -> ExitCode {
    process::main("krest-server", |config| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        runtime.block_on(async {
            // Before the ready line: a script that signals as soon as it reads it must get a
            // clean stop, not the default action of an unhandled SIGTERM.
            let signals = ShutdownSignals::register();
            let opened = Opened::open(config)?;
            opened.announce();
            krest_runtime_tokio::run(opened, shutdown_signal(signals)).await
        })
    })
}

/// Completes on SIGTERM or Ctrl-C. A second signal exits at once.
///
/// Both signal streams are registered before the first signal and kept for the second, so a
/// second signal that comes right after the first is not lost.
async fn shutdown_signal(mut signals: ShutdownSignals) {
    signals.next().await;
    tokio::spawn(async move {
        signals.next().await;
        eprintln!("krest-server: second signal, exiting now");
        std::process::exit(1);
    });
}

/// SIGTERM and SIGINT, registered once.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> ShutdownSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                terminate: signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
                interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
