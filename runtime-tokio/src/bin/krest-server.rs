//! `krest-server`: a Krest-MQ node on tokio.
//!
//! Configuration layers: built-in defaults < `krest.toml` (`--config FILE`, or `./krest.toml`
//! if present) < `KREST_<SECTION>_<KEY>` environment variables < flags. Exit codes: 0 clean
//! stop, 2 usage, 78 bad configuration, 74 storage error, 69 cannot bind.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use krest_core::Config;

/// A Krest-MQ message broker node.
#[derive(Debug, Parser)]
#[command(name = "krest-server", version)]
struct Arguments {
    /// A krest.toml (default: ./krest.toml if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where logs and metadata live [default: ./krest-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Client listener [default: 127.0.0.1:7654].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Admin HTTP listener [default: 127.0.0.1:7655].
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// This node's id [default: 1].
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Any other setting, as section.key=value (repeatable), e.g. --set limits.max_queues=100.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    settings: Vec<String>,
    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let config = match load_config(&arguments) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("krest-server: {error:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if arguments.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(krest_runtime_tokio::run(
        config,
        shutdown_signal(),
        |bound| {
            // Scripts and tests read this line to learn the bound ports.
            println!(
                "krest-server listening client={} admin={}",
                bound.client, bound.admin
            );
            let _ = std::io::stdout().flush();
        },
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("krest-server: {error}");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

fn load_config(arguments: &Arguments) -> anyhow::Result<Config> {
    use anyhow::Context as _;
    let file_text = match &arguments.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
        ),
        None => std::fs::read_to_string("krest.toml").ok(),
    };
    let mut overrides: Vec<(&str, String)> = Vec::new();
    if let Some(value) = &arguments.data_dir {
        overrides.push(("server.data_dir", value.clone()));
    }
    if let Some(value) = &arguments.listen {
        overrides.push(("server.listen", value.clone()));
    }
    if let Some(value) = &arguments.admin_listen {
        overrides.push(("server.admin_listen", value.clone()));
    }
    if let Some(value) = arguments.node_id {
        overrides.push(("server.node_id", value.to_string()));
    }
    for setting in &arguments.settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--set {setting}: expected section.key=value"))?;
        overrides.push((key, value.to_string()));
    }
    Ok(Config::load(
        file_text.as_deref(),
        std::env::vars(),
        &overrides,
    )?)
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
