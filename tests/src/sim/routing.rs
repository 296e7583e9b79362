//! Routing: clients to the network, the network to the nodes, each node's commands to the
//! network and to its storage.

use bytes::{Bytes, BytesMut};
use krest_core::ids::ConnId;
use krest_core::router::Outbound;
use krest_core::{Input, StorageRequest};
use krest_proto::client::{ClientFrame, ServerFrame};
use krest_proto::frame::FrameDecoder;
use prost::Message as _;

use super::streams::{between, chance};
use super::workload::{Actions, Context, SimClient};
use super::{trace_input, trace_outbound, trace_storage, Event, Simulation};

impl Simulation {
    /// The node `conn` belongs to, if that node's process is the one that accepted it and it
    /// has not seen the connection close.
    pub(super) fn running_node_of(&self, conn: ConnId) -> Option<usize> {
        let connection = self.network.get(conn)?;
        let node = connection.node;
        let running = Some(connection.epoch) == self.nodes[node].epoch();
        (running && !connection.closed_for_server).then_some(node)
    }

    pub(super) fn context(&mut self) -> Context<'_> {
        Context {
            now_ms: self.now_ms,
            phase: self.phase,
            rng: &mut self.streams.workload,
            history: &mut self.history,
            queues: &self.queues,
        }
    }

    pub(super) fn wake_client(&mut self, index: usize) {
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        let actions = client.wake(&mut self.context());
        self.clients[index] = client;
        self.apply(index, actions);
    }

    pub(super) fn apply(&mut self, index: usize, actions: Actions) {
        if let Some(at_ms) = actions.wake_at_ms {
            self.schedule(at_ms, Event::ClientWake(index));
        }
        if actions.connect {
            self.connect(index);
        }
        let Some(conn) = self.clients[index].conn else {
            return;
        };
        for body in actions.send {
            let at = self
                .network
                .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ServerFrame(conn, body));
        }
        if actions.disconnect {
            self.count("client-vanished");
            let at = self
                .network
                .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
            self.schedule(at, Event::ServerDisconnect(conn));
            self.close_for_client(conn);
        }
    }

    pub(super) fn connect(&mut self, index: usize) {
        // Clients spread over the nodes; one node for now.
        let node = index % self.nodes.len();
        let Some(epoch) = self.nodes[node].epoch() else {
            let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
            client.on_closed(&mut self.context());
            self.clients[index] = client;
            self.schedule(self.now_ms + 1, Event::ClientWake(index));
            return;
        };
        let conn = self.network.open(index, node, epoch);
        let at = self
            .network
            .arrival_at_server(conn, self.now_ms, &mut self.streams.network);
        self.schedule(at, Event::ServerConnect(conn));
        let actions = self.clients[index].on_connected(conn);
        self.apply(index, actions);
    }

    pub(super) fn close_for_client(&mut self, conn: ConnId) {
        let Some(connection) = self.network.get_mut(conn) else {
            return;
        };
        if connection.closed_for_client {
            return;
        }
        connection.closed_for_client = true;
        let index = connection.client;
        if self.clients[index].conn != Some(conn) {
            return;
        }
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        client.on_closed(&mut self.context());
        self.clients[index] = client;
        self.network.forget_closed();
    }

    pub(super) fn frame_to_server(&mut self, conn: ConnId, body: Bytes) {
        let Some(node) = self.running_node_of(conn) else {
            return;
        };
        let connection = self.network.get_mut(conn).expect("checked");
        if !connection.reading {
            connection.held.push_back(body);
            return;
        }
        self.deliver_to_node(node, conn, body);
    }

    pub(super) fn deliver_to_node(&mut self, node: usize, conn: ConnId, body: Bytes) {
        if let (Ok(frame), Some(now)) = (
            ClientFrame::decode(body.clone()),
            self.nodes[node].now(self.now_ms),
        ) {
            self.checker.on_request(self.now_ms, now, conn, &frame);
        }
        self.node_input(node, Input::ClientFrame { conn, body });
    }

    pub(super) fn frame_to_client(&mut self, conn: ConnId, frame: ServerFrame) {
        let Some(connection) = self.network.get(conn) else {
            return;
        };
        if connection.closed_for_client {
            return;
        }
        let index = connection.client;
        if self.clients[index].conn != Some(conn) {
            return;
        }
        let mut client = std::mem::replace(&mut self.clients[index], SimClient::placeholder());
        let actions = client.on_frame(&mut self.context(), frame);
        self.clients[index] = client;
        self.apply(index, actions);
    }

    /// Feeds the node one input and carries out what it asks.
    pub(super) fn node_input(&mut self, node: usize, input: Input) {
        if self.nodes[node].process.is_none() {
            return;
        }
        trace_input(&mut self.trace, self.now_ms, &input);
        let routed = self.nodes[node].handle(self.now_ms, input);
        for (conn, message) in routed.to_connections {
            self.route_to_connection(node, conn, message);
        }
        for request in routed.storage {
            self.route_to_storage(node, request);
        }
        self.checker.end_step();
        if self.nodes[node].fenced() && !self.nodes[node].restart_scheduled {
            // An operator (or a supervisor) restarts a fenced node.
            self.count("node-fenced");
            self.nodes[node].kill();
            self.on_process_end(node);
            let at = self.now_ms + between(&mut self.streams.faults, 50, 500);
            self.schedule_restart(node, at);
        }
    }

    /// Carries out what the router sent connection `conn`.
    pub(super) fn route_to_connection(&mut self, node: usize, conn: ConnId, message: Outbound) {
        trace_outbound(&mut self.trace, conn, &message);
        let now = self.nodes[node].now(self.now_ms).expect("running");
        match message {
            Outbound::Frame(frame) => {
                let mut buffer = BytesMut::from(&frame[..]);
                let mut decoder = FrameDecoder::new(u32::MAX);
                while let Some(frame) = decoder
                    .decode_message::<ServerFrame>(&mut buffer)
                    .expect("the node sends valid frames")
                {
                    self.checker
                        .on_response(self.now_ms, now, conn, &frame, &self.history);
                    if self.network.get(conn).is_none() {
                        continue;
                    }
                    let at = self.network.arrival_at_client(
                        conn,
                        self.now_ms,
                        &mut self.streams.network,
                    );
                    self.schedule(at, Event::ClientFrame(conn, frame));
                }
            }
            Outbound::Close { .. } => {
                if self.network.get(conn).is_some() {
                    let at = self.network.arrival_at_client(
                        conn,
                        self.now_ms,
                        &mut self.streams.network,
                    );
                    self.schedule(at, Event::ClientClosed(conn));
                    self.schedule(self.now_ms + 1, Event::ServerDisconnect(conn));
                }
            }
            Outbound::Reading(enabled) => {
                let Some(connection) = self.network.get_mut(conn) else {
                    return;
                };
                connection.reading = enabled;
                if enabled {
                    let held: Vec<Bytes> = connection.held.drain(..).collect();
                    for body in held {
                        // Same time, in order: ahead of anything that arrives later.
                        self.schedule(self.now_ms, Event::ServerFrame(conn, body));
                    }
                }
            }
        }
    }

    /// Hands a storage request to the node's simulated storage thread.
    pub(super) fn route_to_storage(&mut self, node: usize, request: StorageRequest) {
        trace_storage(&mut self.trace, &request);
        if matches!(request, StorageRequest::Read { .. }) {
            // Not a fault: shows that runs read payloads back from the faulty disk.
            self.count("payload-read");
        }
        if self.nodes[node].queue_storage(request) {
            let epoch = self.nodes[node].epoch().expect("running");
            let at = self.now_ms + between(&mut self.streams.disk, 0, 1);
            self.schedule(at, Event::StorageRun(node, epoch));
        }
    }

    pub(super) fn run_storage(&mut self, node: usize, epoch: u64) {
        if self.nodes[node].epoch() != Some(epoch) {
            return;
        }
        if self.nodes[node].start_storage_batch() {
            let latency = if chance(&mut self.streams.disk, 30) {
                between(&mut self.streams.disk, 5, 40)
            } else {
                between(&mut self.streams.disk, 0, 2)
            };
            self.schedule(self.now_ms + latency, Event::StorageDone(node, epoch));
        }
    }
}
