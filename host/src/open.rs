//! Opening a node: the system clock and seed, recovery of the data directory into the core,
//! the storage worker thread, and the two bound listeners, ready for any runtime to adopt.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use krest_core::{Config, Instant, Node, Now, RecoveryError, UnixMillis};
use krest_storage_file::{OpenError, OsFileSystem, StorageExecutor, StorageWorker};

/// Why a server could not start. Each kind has its own process exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    /// A peer's address in `cluster.nodes` does not resolve.
    #[error("cluster.nodes: node {node}'s peer address '{address}' does not resolve: {reason}")]
    PeerAddress {
        /// The node.
        node: u64,
        /// Its configured peer address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The data directory was created by a node with another id.
    #[error(
        "the data directory {data_dir} belongs to node {recorded} (its NODE_ID file), not node \
         {configured} (server.node_id): a node keeps its id for the life of its data"
    )]
    NodeIdChanged {
        /// The directory.
        data_dir: String,
        /// The id it was created with.
        recorded: u64,
        /// The id configured now.
        configured: u64,
    },
    /// The data directory's NODE_ID file could not be read or written.
    #[error("the data directory's NODE_ID file: {0}")]
    NodeIdFile(String),
    /// The data directory could not be opened or recovered.
    #[error("storage: {0}")]
    Storage(#[from] OpenError),
    /// The recovered data could not be understood.
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
}

impl StartError {
    /// The error for a bound `listener` that a runtime could not adopt (take over as one of
    /// its own): a bind error naming the listener and its address.
    pub fn adopting(
        what: &'static str,
        listener: &TcpListener,
    ) -> impl FnOnce(std::io::Error) -> StartError {
        let address = listener
            .local_addr()
            .map(|address| address.to_string())
            .unwrap_or_default();
        move |source| StartError::Bind {
            what,
            address,
            source,
        }
    }

    /// The process exit code (sysexits): 69 cannot bind, 74 storage.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Bind { .. } => 69,
            StartError::PeerAddress { .. } | StartError::NodeIdChanged { .. } => 78,
            StartError::NodeIdFile(_) => 74,
            StartError::Storage(_) | StartError::Recovery(_) => 74,
        }
    }
}

/// The node's clocks, read only by the runtime.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: std::time::Instant,
}

impl SystemClock {
    /// Monotonic time 0 is now.
    pub fn start() -> SystemClock {
        SystemClock {
            start: std::time::Instant::now(),
        }
    }

    /// Both clocks now, in the core's units.
    pub fn now(&self) -> Now {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0);
        Now {
            monotonic: Instant(self.start.elapsed().as_millis() as u64),
            wall: UnixMillis(wall),
        }
    }

    /// When the core's `deadline` falls, on the standard clock.
    pub fn deadline(&self, deadline: Instant) -> std::time::Instant {
        self.start + Duration::from_millis(deadline.0)
    }

    /// A seed for the core's random numbers: the time and the process id.
    pub fn seed(&self) -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    }
}

/// Where the server ended up listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The client protocol listener.
    pub client: SocketAddr,
    /// The admin HTTP listener.
    pub admin: SocketAddr,
    /// The peer listener, in a cluster of several nodes.
    pub peer: Option<SocketAddr>,
}

/// How a node of a cluster links to the others.
pub struct Peering {
    /// Where peers connect, bound.
    pub listener: TcpListener,
    /// Who this node is and where the others are.
    pub setup: crate::serve::peers::PeerSetup,
}

/// A node ready to serve: recovered, with its storage worker running and both listeners bound
/// (non-blocking, ready for any runtime to adopt).
pub struct Opened {
    /// The merged configuration.
    pub config: Config,
    /// The recovered node.
    pub node: Node,
    /// The storage worker thread.
    pub storage: StorageWorker,
    /// The clock the node runs on.
    pub clock: SystemClock,
    /// The client protocol listener.
    pub client_listener: TcpListener,
    /// The admin HTTP listener.
    pub admin_listener: TcpListener,
    /// Peer links, in a cluster of several nodes.
    pub peering: Option<Peering>,
    /// Their addresses.
    pub bound: Bound,
}

impl Opened {
    /// Opens and recovers the data directory, builds the node, starts the storage worker and
    /// binds both listeners.
    pub fn open(config: Config) -> Result<Opened, StartError> {
        let clock = SystemClock::start();
        let seed = clock.seed() ^ config.server.node_id;
        // Records go to the node one segment at a time as storage reads them: a backlog
        // larger than memory is never held whole.
        let mut recovery = Node::recovering(config.clone(), seed, clock.now())?;
        let root = Path::new(&config.server.data_dir);
        check_node_id(root, config.server.node_id)?;
        for (log, state) in StorageExecutor::read_raft_states_with(&OsFileSystem, root)? {
            recovery.raft_state(log, state);
        }
        let executor = StorageExecutor::open_each(
            Path::new(&config.server.data_dir),
            config.storage.segment_bytes,
            &mut |log, records| recovery.feed(log, records),
        )?;
        let node = recovery.finish()?;
        let client_listener = bind("client", &config.server.listen)?;
        let admin_listener = bind("admin", &config.server.admin_listen)?;
        let peering = match node.is_clustered() {
            true => Some(peering(&config, seed)?),
            false => None,
        };
        let bound = Bound {
            peer: peering.as_ref().map(|peering| {
                peering
                    .listener
                    .local_addr()
                    .expect("a bound listener has an address")
            }),
            client: client_listener
                .local_addr()
                .expect("a bound listener has an address"),
            admin: admin_listener
                .local_addr()
                .expect("a bound listener has an address"),
        };
        Ok(Opened {
            storage: StorageWorker::spawn(executor),
            config,
            node,
            clock,
            client_listener,
            admin_listener,
            peering,
            bound,
        })
    }

    /// Logs where the server listens and prints the line scripts and tests read to learn the
    /// ports: `krest-server listening client=ADDR admin=ADDR`.
    pub fn announce(&self) {
        let Bound {
            client,
            admin,
            peer,
        } = self.bound;
        let data_dir = &self.config.server.data_dir;
        tracing::info!(%client, %admin, ?peer, %data_dir, "krest-server ready");
        match peer {
            Some(peer) => {
                println!("krest-server listening client={client} admin={admin} peer={peer}")
            }
            None => println!("krest-server listening client={client} admin={admin}"),
        }
        let _ = std::io::stdout().flush();
    }
}

/// A data directory belongs to one node id for life (its votes and its log are that node's):
/// the first start records it in `<data_dir>/NODE_ID`; a later start with another id stops.
fn check_node_id(root: &Path, node_id: u64) -> Result<(), StartError> {
    let path = root.join("NODE_ID");
    let file_error =
        |error: std::io::Error| StartError::NodeIdFile(format!("{}: {error}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: u64 = text.trim().parse().map_err(|_| {
                StartError::NodeIdFile(format!(
                    "{} holds '{}', not an id",
                    path.display(),
                    text.trim()
                ))
            })?;
            if recorded != node_id {
                return Err(StartError::NodeIdChanged {
                    data_dir: root.display().to_string(),
                    recorded,
                    configured: node_id,
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root).map_err(file_error)?;
            let mut file = std::fs::File::create(&path).map_err(file_error)?;
            file.write_all(format!("{node_id}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(file_error)?;
            // The entry itself, durable in its directory.
            std::fs::File::open(root)
                .and_then(|directory| directory.sync_all())
                .map_err(file_error)
        }
        Err(error) => Err(file_error(error)),
    }
}

/// Binds the peer listener and resolves every other node's peer address.
fn peering(config: &Config, seed: u64) -> Result<Peering, StartError> {
    use std::net::ToSocketAddrs as _;
    let listener = bind("peer", &config.cluster.peer_listen)?;
    let me = config.server.node_id;
    let mut peers = Vec::new();
    for node in config.cluster.nodes.iter().filter(|node| node.id != me) {
        let error = |reason: String| StartError::PeerAddress {
            node: node.id,
            address: node.peer.clone(),
            reason,
        };
        let address = node
            .peer
            .to_socket_addrs()
            .map_err(|source| error(source.to_string()))?
            .next()
            .ok_or_else(|| error("no address".into()))?;
        peers.push((krest_core::ids::NodeId(node.id), address));
    }
    let setup = crate::serve::peers::PeerSetup {
        node_id: krest_core::ids::NodeId(me),
        cluster_id: config.cluster.cluster_id.clone(),
        incarnation: seed,
        peers,
        max_frame_bytes: config.limits.max_frame_bytes,
    };
    Ok(Peering { listener, setup })
}

fn bind(what: &'static str, address: &str) -> Result<TcpListener, StartError> {
    let bind_error = |source| StartError::Bind {
        what,
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}
