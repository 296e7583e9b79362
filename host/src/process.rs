//! The process shell of every server binary: the command line, layered configuration, logging
//! to stderr and the exit codes. A runtime's `main` is [`main`] plus a closure that builds its
//! runtime and serves an [`Opened`](crate::Opened) node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use krest_core::Config;

use crate::StartError;

/// The command line of every server binary.
#[derive(Debug, Parser)]
#[command(version, about = "A Krest-MQ message broker node.")]
pub struct ServerArguments {
    /// A krest.toml (default: ./krest.toml if it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where logs and metadata live [default: ./krest-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Client listener [default: 127.0.0.1:7654].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Admin HTTP listener [default: 127.0.0.1:7655].
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,
    /// This node's id [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// Any other setting, as section.key=value (repeatable), e.g. --set limits.max_queues=100.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub settings: Vec<String>,
    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Exit code for a configuration that cannot be used (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

impl ServerArguments {
    /// Parses the process's arguments; `binary` names the program in help and errors. Exits
    /// with code 2 on a usage error (clap's convention).
    pub fn parse_for(binary: &'static str) -> ServerArguments {
        let matches = ServerArguments::command().name(binary).get_matches();
        ServerArguments::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Built-in defaults < `krest.toml` (`--config FILE`, or `./krest.toml` if present) <
    /// `KREST_<SECTION>_<KEY>` environment < flags; validated once, after all layers.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        let file_text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?,
            ),
            None => std::fs::read_to_string("krest.toml").ok(),
        };
        let flags = [
            ("server.data_dir", self.data_dir.clone()),
            ("server.listen", self.listen.clone()),
            ("server.admin_listen", self.admin_listen.clone()),
            ("server.node_id", self.node_id.map(|id| id.to_string())),
        ];
        let mut overrides: Vec<(&str, String)> = flags
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        for setting in &self.settings {
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
}

/// A server binary's whole `main`: arguments, configuration (exit 78 when unusable),
/// `--print-config`, logging to stderr (`RUST_LOG`, default `info`), then `serve`, whose error
/// picks the exit code.
pub fn main(
    binary: &'static str,
    serve: impl FnOnce(Config) -> Result<(), StartError>,
) -> ExitCode {
    let arguments = ServerArguments::parse_for(binary);
    let config = match arguments.load_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error:#}");
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
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{binary}: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
