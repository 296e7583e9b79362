//! Peer links: one TCP connection per pair of nodes, carrying peer frames (`peer.proto`) both
//! ways. The node with the lower id dials the other and redials with backoff when the link
//! breaks; the higher one accepts. Each side opens with a `Hello` (protocol version, cluster
//! id, node id, incarnation); a link from another cluster, from a node id not in the
//! configuration or from a node that should not be dialing is refused and closed.
//!
//! A link task tells the event loop `PeerLinked` once the handshake is done, hands it every
//! frame it reads as `Input::PeerFrame`, writes what the core sends, and says `PeerUnlinked`
//! (after dropping its inbox) when the link ends.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future::FutureExt as _;
use krest_core::ids::NodeId;
use krest_core::router::{Event, Outbound};
use krest_core::Input;
use krest_proto::frame::{frame_bytes, FrameDecoder};
use krest_proto::peer::{peer_frame, Hello, PeerFrame};

use super::{pause_after_accept_error, Events, Outbox};
use crate::runtime::Runtime;

/// The peer protocol's version.
pub const PEER_PROTOCOL_VERSION: u32 = 1;
/// A handshake that takes longer is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Redial backoff: from the first, doubling, up to the last.
const REDIAL_FIRST: Duration = Duration::from_millis(50);
const REDIAL_MAX: Duration = Duration::from_secs(2);

/// Who this node is to its peers, and who they are.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// This node.
    pub node_id: NodeId,
    /// The cluster's name.
    pub cluster_id: String,
    /// Changes at every start of the node.
    pub incarnation: u64,
    /// The other nodes and their peer addresses.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// The largest frame accepted.
    pub max_frame_bytes: u32,
}

impl PeerSetup {
    fn hello(&self) -> Bytes {
        frame_bytes(&PeerFrame {
            body: Some(peer_frame::Body::Hello(Hello {
                protocol_version: PEER_PROTOCOL_VERSION,
                cluster_id: self.cluster_id.clone(),
                node_id: self.node_id.0,
                incarnation: self.incarnation,
            })),
        })
    }

    /// Whether `hello` comes from a node of this cluster that may link from its side
    /// (`dialing`: it dialed us).
    fn check(&self, hello: &Hello, dialing: bool) -> Result<NodeId, String> {
        if hello.protocol_version != PEER_PROTOCOL_VERSION {
            return Err(format!(
                "peer protocol version {} (this node speaks {PEER_PROTOCOL_VERSION})",
                hello.protocol_version
            ));
        }
        if hello.cluster_id != self.cluster_id {
            return Err(format!(
                "cluster '{}', not '{}' (cluster.cluster_id)",
                hello.cluster_id, self.cluster_id
            ));
        }
        let peer = NodeId(hello.node_id);
        if !self.peers.iter().any(|(id, _)| *id == peer) {
            return Err(format!("node {peer} is not in cluster.nodes"));
        }
        if dialing && peer >= self.node_id {
            return Err(format!(
                "node {peer} dials node {}: the lower id dials",
                self.node_id
            ));
        }
        Ok(peer)
    }
}

/// Dials every peer with a higher id, and keeps redialing.
pub fn dial_all<R: Runtime>(runtime: &R, setup: &PeerSetup, events: &Events) {
    for (peer, address) in &setup.peers {
        if *peer > setup.node_id {
            let task = dial(
                runtime.clone(),
                *peer,
                *address,
                events.clone(),
                setup.clone(),
            );
            runtime.spawn(task);
        }
    }
}

async fn dial<R: Runtime>(
    runtime: R,
    peer: NodeId,
    address: SocketAddr,
    events: Events,
    setup: PeerSetup,
) {
    let mut backoff = REDIAL_FIRST;
    loop {
        if events.is_closed() {
            return;
        }
        let linked = match runtime.connect(address).await {
            Ok((reader, mut writer)) => {
                let opened = handshake::<R>(&runtime, reader, &mut writer, &setup, false).await;
                match opened {
                    Ok((reader, buffer, decoder, from)) if from == peer => {
                        backoff = REDIAL_FIRST;
                        serve::<R>(peer, reader, writer, buffer, decoder, &events).await;
                        true
                    }
                    Ok((.., from)) => {
                        tracing::warn!(%peer, %address, %from, "a different node answered");
                        R::close(&mut writer).await;
                        false
                    }
                    Err(reason) => {
                        tracing::warn!(%peer, %address, %reason, "peer handshake failed");
                        R::close(&mut writer).await;
                        false
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%peer, %address, %error, "cannot reach peer");
                false
            }
        };
        if !linked {
            backoff = (backoff * 2).min(REDIAL_MAX);
        }
        runtime.sleep_until(Instant::now() + backoff).await;
    }
}

/// Accepts links from peers with lower ids until dropped.
pub async fn accept<R: Runtime>(
    runtime: R,
    listener: R::Listener,
    events: Events,
    setup: PeerSetup,
) {
    loop {
        let (reader, mut writer, address) = match runtime.accept(&listener).await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "peer accept failed");
                pause_after_accept_error(&runtime).await;
                continue;
            }
        };
        let runtime_for_task = runtime.clone();
        let events = events.clone();
        let setup = setup.clone();
        runtime.spawn(async move {
            let opened = handshake::<R>(&runtime_for_task, reader, &mut writer, &setup, true).await;
            match opened {
                Ok((reader, buffer, decoder, peer)) => {
                    serve::<R>(peer, reader, writer, buffer, decoder, &events).await;
                }
                Err(reason) => {
                    tracing::warn!(%address, %reason, "refused a peer link");
                    R::close(&mut writer).await;
                }
            }
        });
    }
}

/// What a handshake leaves: the reader, bytes read past the `Hello`, the decoder, the peer.
type Opened<R> = (<R as Runtime>::Reader, BytesMut, FrameDecoder, NodeId);

/// Sends this node's `Hello` and reads the peer's (`accepting`: the peer dialed).
async fn handshake<R: Runtime>(
    runtime: &R,
    mut reader: R::Reader,
    writer: &mut R::Writer,
    setup: &PeerSetup,
    accepting: bool,
) -> Result<Opened<R>, String> {
    let exchange = async {
        R::write_all(writer, &setup.hello())
            .await
            .map_err(|error| format!("cannot send hello: {error}"))?;
        let mut decoder = FrameDecoder::new(setup.max_frame_bytes);
        let mut buffer = BytesMut::new();
        loop {
            if let Some(body) = decoder
                .decode(&mut buffer)
                .map_err(|error| format!("bad frame: {error}"))?
            {
                let frame: PeerFrame =
                    krest_proto::frame::decode_body(body).map_err(|error| error.to_string())?;
                let Some(peer_frame::Body::Hello(hello)) = frame.body else {
                    return Err("the first frame is not a hello".to_string());
                };
                let peer = setup.check(&hello, accepting)?;
                return Ok((buffer, decoder, peer));
            }
            match R::read(&mut reader, &mut buffer).await {
                Ok(0) => return Err("closed during the handshake".to_string()),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let timeout = async {
        runtime.sleep_until(deadline).await;
        Err("the handshake timed out".to_string())
    };
    let (buffer, decoder, peer) = exchange.or(timeout).await?;
    Ok((reader, buffer, decoder, peer))
}

/// What woke a link task.
enum Wake {
    Outbound(Option<Outbound>),
    Read(std::io::Result<usize>),
}

/// Carries frames both ways until the link breaks or the event loop is gone.
async fn serve<R: Runtime>(
    peer: NodeId,
    mut reader: R::Reader,
    mut writer: R::Writer,
    mut buffer: BytesMut,
    mut decoder: FrameDecoder,
    events: &Events,
) {
    let (outbox, outbound) = async_channel::unbounded();
    let linked = Event::PeerLinked {
        peer,
        outbox: Outbox(outbox),
    };
    if events.send(linked).await.is_err() {
        return;
    }
    tracing::info!(%peer, "peer linked");
    'link: loop {
        // Frames already read (after the hello, or by the last read) first.
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(body)) => {
                    let input = Input::PeerFrame { peer, body };
                    if events.send(Event::Input(input)).await.is_err() {
                        break 'link;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%peer, %error, "bad peer frame: closing the link");
                    break 'link;
                }
            }
        }
        let wake = async { Wake::Outbound(outbound.recv().await.ok()) }
            .or(async { Wake::Read(R::read(&mut reader, &mut buffer).await) })
            .await;
        match wake {
            Wake::Outbound(None) => break,
            Wake::Outbound(Some(Outbound::Frame(bytes))) => {
                let mut batch = bytes.to_vec();
                while let Ok(Outbound::Frame(more)) = outbound.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if R::write_all(&mut writer, &batch).await.is_err() {
                    break;
                }
            }
            Wake::Outbound(Some(_)) => {}
            Wake::Read(Ok(0) | Err(_)) => break,
            Wake::Read(Ok(_)) => {}
        }
    }
    R::close(&mut writer).await;
    drop(outbound);
    tracing::info!(%peer, "peer unlinked");
    let _ = events.send(Event::PeerUnlinked { peer }).await;
}
