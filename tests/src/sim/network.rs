//! Connections between simulated clients and the node: ordered byte streams with latency.
//!
//! Each direction of a connection delivers in order (as TCP does): a frame never arrives before
//! one sent earlier on the same connection, whatever latency each drew. A connection belongs to
//! one process of the node (its epoch); when that process dies, everything in flight on it is
//! lost and the client sees the connection drop. While the node has asked to stop reading from a
//! connection (back-pressure), frames that arrive wait in the socket until it resumes.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use krest_core::ids::ConnId;
use krest_core::rng::Rng;

use super::streams::{between, chance};

/// One connection.
#[derive(Debug)]
pub struct Connection {
    /// The client at the other end.
    pub client: usize,
    /// The node at this end.
    pub node: usize,
    /// The node process it was accepted by.
    pub epoch: u64,
    /// The node has seen `ClientDisconnected` (or is about to): nothing more reaches it.
    pub closed_for_server: bool,
    /// The client has seen the close: nothing more reaches it.
    pub closed_for_client: bool,
    /// When the last frame toward the node arrives (ordering).
    to_server_at: u64,
    /// When the last frame toward the client arrives (ordering).
    to_client_at: u64,
    /// Whether the node reads from it.
    pub reading: bool,
    /// Frames that arrived while the node was not reading.
    pub held: VecDeque<Bytes>,
}

/// Every connection ever opened in the run.
#[derive(Debug, Default)]
pub struct Network {
    connections: BTreeMap<ConnId, Connection>,
    next_conn: u64,
}

impl Network {
    /// Opens a connection from `client` to process `epoch` of `node`.
    pub fn open(&mut self, client: usize, node: usize, epoch: u64) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.connections.insert(
            conn,
            Connection {
                client,
                node,
                epoch,
                closed_for_server: false,
                closed_for_client: false,
                to_server_at: 0,
                to_client_at: 0,
                reading: true,
                held: VecDeque::new(),
            },
        );
        conn
    }

    /// The connection, if it exists.
    pub fn get(&self, conn: ConnId) -> Option<&Connection> {
        self.connections.get(&conn)
    }

    /// The connection, to change it.
    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut Connection> {
        self.connections.get_mut(&conn)
    }

    /// When something sent toward the node now arrives.
    pub fn arrival_at_server(&mut self, conn: ConnId, now: u64, rng: &mut Rng) -> u64 {
        let latency = latency_ms(rng);
        let connection = self.connections.get_mut(&conn).expect("open");
        connection.to_server_at = connection.to_server_at.max(now + latency);
        connection.to_server_at
    }

    /// When something sent toward the client now arrives.
    pub fn arrival_at_client(&mut self, conn: ConnId, now: u64, rng: &mut Rng) -> u64 {
        let latency = latency_ms(rng);
        let connection = self.connections.get_mut(&conn).expect("open");
        connection.to_client_at = connection.to_client_at.max(now + latency);
        connection.to_client_at
    }

    /// Connections of process `epoch` of `node` the node has not yet seen close.
    pub fn open_on(&self, node: usize, epoch: u64) -> Vec<ConnId> {
        self.connections
            .iter()
            .filter(|(_, connection)| {
                connection.node == node
                    && connection.epoch == epoch
                    && !connection.closed_for_server
            })
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// Forgets connections closed at both ends.
    pub fn forget_closed(&mut self) {
        self.connections.retain(|_, connection| {
            !(connection.closed_for_client && connection.closed_for_server)
        });
    }
}

/// One latency: mostly a millisecond or two, now and then a stall of tens of milliseconds.
fn latency_ms(rng: &mut Rng) -> u64 {
    if chance(rng, 20) {
        between(rng, 10, 60)
    } else {
        between(rng, 0, 2)
    }
}
