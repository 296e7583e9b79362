//! The `krest` command-line tool: argument parsing and the entry point.
//!
//! Each subcommand lives in a module of its own ([`queue`], [`publish`], [`subscribe`],
//! [`bench`]). Output goes to stdout; every failure prints one line, `krest: <error>`, to stderr
//! and exits with status 1 (usage errors exit with clap's status 2). Other tools script this
//! interface, so its flags and output formats are stable.

pub mod admin;
pub mod bench;
pub mod publish;
pub mod queue;
pub mod subscribe;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use krest_proto::client::{AckMode, DeliveryMode, OverflowPolicy, QueueKind};

use crate::{Client, ClientConfig};

/// Krest-MQ command-line tool.
#[derive(Debug, Parser)]
#[command(name = "krest", version, about = "Krest-MQ command-line tool")]
pub struct Cli {
    /// Server address HOST:PORT; repeat (or separate with commas) to list several.
    #[arg(
        short = 's',
        long = "server",
        env = "KREST_SERVER",
        default_value = "127.0.0.1:7654",
        value_delimiter = ',',
        global = true
    )]
    pub servers: Vec<String>,
    /// Admin HTTP address HOST:PORT (for `cluster` and `server`).
    #[arg(
        long = "admin",
        env = "KREST_ADMIN",
        default_value = "127.0.0.1:7655",
        global = true
    )]
    pub admin: String,
    /// Print JSON instead of tables and plain text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, purge, delete or redrive queues.
    Queue {
        /// The queue operation.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Publish messages (BODY, or one message per stdin line).
    Pub(publish::PublishArgs),
    /// Consume messages, printing one body per line.
    Sub(subscribe::SubscribeArgs),
    /// Measure publish and consume throughput and confirm latency.
    Bench(bench::BenchArgs),
    /// The cluster as a node's admin API sees it.
    Cluster {
        /// The cluster operation.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Check a node through its admin API.
    Server {
        /// The server operation.
        #[command(subcommand)]
        command: ServerCommand,
    },
}

/// `krest cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Node id, role, term and peers.
    Info,
}

/// `krest server ...`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Exit 0 if the node is healthy and ready (storage recovered), non-zero otherwise.
    Check,
}

/// `krest queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue (idempotent; a different kind is an error).
    Create(queue::CreateArgs),
    /// List every queue.
    #[command(alias = "list")]
    Ls,
    /// Show one queue.
    Info {
        /// The queue name.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// The queue name.
        name: String,
    },
    /// Remove every message of a queue.
    Purge {
        /// The queue name.
        name: String,
    },
    /// Move the messages of a dead-letter queue back to the queues they came from.
    Redrive {
        /// The dead-letter queue (e.g. orders.dlq).
        name: String,
        /// Move at most this many (oldest first); all by default.
        #[arg(long, default_value_t = 0)]
        max: u64,
    },
}

/// A queue kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Memory only.
    Temporary,
    /// On disk, survives restarts.
    Persistent,
    /// On disk, each message delivered at its own time.
    Delay,
}

impl KindArg {
    /// The protocol's kind.
    pub fn to_wire(self) -> QueueKind {
        match self {
            KindArg::Temporary => QueueKind::Temporary,
            KindArg::Persistent => QueueKind::Persistent,
            KindArg::Delay => QueueKind::Delay,
        }
    }
}

/// An overflow policy on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverflowArg {
    /// Refuse publishes while the queue is full.
    RejectPublish,
    /// Drop the oldest messages to make room.
    DropOldest,
}

impl OverflowArg {
    /// The protocol's policy.
    pub fn to_wire(self) -> OverflowPolicy {
        match self {
            OverflowArg::RejectPublish => OverflowPolicy::RejectPublish,
            OverflowArg::DropOldest => OverflowPolicy::DropOldest,
        }
    }
}

/// An ack mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckArg {
    /// Acked when sent (at most once).
    Auto,
    /// Acked after printing.
    Explicit,
}

impl AckArg {
    /// The protocol's ack mode.
    pub fn to_wire(self) -> AckMode {
        match self {
            AckArg::Auto => AckMode::Auto,
            AckArg::Explicit => AckMode::Explicit,
        }
    }
}

/// A delivery mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Consumers of a group compete for messages.
    Point,
    /// Every subscriber gets every message.
    Broadcast,
}

impl ModeArg {
    /// The protocol's delivery mode.
    pub fn to_wire(self) -> DeliveryMode {
        match self {
            ModeArg::Point => DeliveryMode::Point,
            ModeArg::Broadcast => DeliveryMode::Broadcast,
        }
    }
}

/// Global options every subcommand receives.
#[derive(Debug, Clone)]
pub struct Globals {
    /// Where to connect.
    pub servers: Vec<String>,
    /// The admin API address.
    pub admin: String,
    /// JSON output.
    pub json: bool,
}

impl Globals {
    /// Connects to the servers.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = ClientConfig {
            servers: self.servers.clone(),
            client_name: format!("krest-cli/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        Ok(Client::connect(config).await?)
    }
}

/// Parses the arguments, runs the command, and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("krest: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait for a stdin reader blocked on a terminal.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("krest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let globals = Globals {
        servers: cli.servers,
        admin: cli.admin,
        json: cli.json,
    };
    match cli.command {
        Command::Queue { command } => queue::run(&globals, command).await,
        Command::Pub(args) => publish::run(&globals, args).await,
        Command::Sub(args) => subscribe::run(&globals, args).await,
        Command::Bench(args) => bench::run(&globals, args).await,
        Command::Cluster {
            command: ClusterCommand::Info,
        } => admin::cluster_info(&globals).await,
        Command::Server {
            command: ServerCommand::Check,
        } => admin::server_check(&globals).await,
    }
}

#[cfg(test)]
mod tests;
