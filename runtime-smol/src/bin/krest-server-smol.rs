//! `krest-server-smol`: a Krest-MQ node on smol, with the same flags, configuration, admin
//! endpoints, signals, logs and exit codes as `krest-server` (the shared parts live in
//! `krest-host`); this file picks the runtime and the signals.

use std::process::ExitCode;
use std::rc::Rc;

use async_signal::{Signal, Signals};
use krest_host::process;
use krest_host::Opened;
use smol::stream::StreamExt as _;
use smol::LocalExecutor;

fn main() -> ExitCode {
    process::main("krest-server-smol", |config| {
        let executor = Rc::new(LocalExecutor::new());
        let signals = Signals::new([Signal::Term, Signal::Int]).expect("signal handlers install");
        let serve = async {
            let opened = Opened::open(config)?;
            opened.announce();
            let shutdown = shutdown_signal(executor.clone(), signals);
            krest_runtime_smol::run(executor.clone(), opened, shutdown).await
        };
        smol::block_on(executor.run(serve))
    })
}

/// Completes on SIGTERM or Ctrl-C. A second signal exits at once.
async fn shutdown_signal(executor: krest_runtime_smol::Executor, mut signals: Signals) {
    let _ = signals.next().await;
    let second = async move {
        let _ = signals.next().await;
        eprintln!("krest-server-smol: second signal, exiting now");
        std::process::exit(1);
    };
    executor.spawn(second).detach();
}
