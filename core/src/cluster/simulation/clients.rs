//! The cluster simulation's clients: declares, deletes and publishes through any node, and
//! what they make of the answers (following `NOT_LEADER` as the real client does).

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use krest_proto::client::{
    self as wire, client_frame, server_frame, ClientFrame, ErrorCode, ServerFrame,
};
use krest_proto::frame::encode_frame;

use super::{Event, Simulation, CLIENT};
use crate::io::Input;

impl Simulation {
    pub(super) fn send_client(
        &mut self,
        index: usize,
        body: client_frame::Body,
    ) -> Result<u64, String> {
        let request_id = self.nodes[index].next_request;
        self.nodes[index].next_request += 1;
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        let mut bytes = BytesMut::new();
        encode_frame(&frame, &mut bytes);
        let body = bytes.split_off(4).freeze();
        self.input(index, Input::ClientFrame { conn: CLIENT, body })?;
        Ok(request_id)
    }

    /// A client declares every queue not confirmed yet (and not waiting for an answer)
    /// through node `index`.
    pub(super) fn declare(&mut self, index: usize) -> Result<(), String> {
        let node = &self.nodes[index];
        if node.node.is_none() {
            return Ok(());
        }
        let waiting: BTreeSet<&String> = node.outstanding.values().map(|(name, _)| name).collect();
        let pending: Vec<String> = self
            .names
            .iter()
            .filter(|name| !self.confirmed.contains(*name) && !waiting.contains(name))
            .cloned()
            .collect();
        for name in pending {
            let declare = client_frame::Body::DeclareQueue(wire::DeclareQueue {
                name: name.clone(),
                settings: Some(wire::QueueSettings {
                    kind: wire::QueueKind::Persistent as i32,
                    ..Default::default()
                }),
            });
            let request_id = self.nodes[index].next_request;
            self.nodes[index]
                .outstanding
                .insert(request_id, (name, self.now_ms));
            self.send_client(index, declare)?;
        }
        Ok(())
    }

    /// A client publishes one message to `name` through node `index`.
    pub(super) fn publish(&mut self, index: usize, name: String) -> Result<(), String> {
        if self.nodes[index].node.is_none() {
            return Ok(());
        }
        let publish = client_frame::Body::Publish(wire::Publish {
            queue: name.clone(),
            messages: vec![wire::OutgoingMessage {
                payload: Bytes::from(format!("{name}@{}", self.now_ms)),
                ..Default::default()
            }],
        });
        let request_id = self.nodes[index].next_request;
        self.nodes[index]
            .outstanding
            .insert(request_id, (format!("+{name}"), self.now_ms));
        self.send_client(index, publish)?;
        Ok(())
    }

    /// A client declares or deletes one of the queues through node `index`.
    pub(super) fn write(&mut self, index: usize) -> Result<(), String> {
        if self.nodes[index].node.is_none() {
            return Ok(());
        }
        let name = self.names[self.rng.below(self.names.len() as u64) as usize].clone();
        let request_id = self.nodes[index].next_request;
        let (label, body) = match self.rng.below(2) {
            0 => (
                name.clone(),
                client_frame::Body::DeclareQueue(wire::DeclareQueue {
                    name,
                    settings: Some(wire::QueueSettings {
                        kind: wire::QueueKind::Persistent as i32,
                        ..Default::default()
                    }),
                }),
            ),
            _ => (
                format!("-{name}"),
                client_frame::Body::DeleteQueue(wire::DeleteQueue { name }),
            ),
        };
        self.nodes[index]
            .outstanding
            .insert(request_id, (label, self.now_ms));
        self.send_client(index, body)?;
        Ok(())
    }

    pub(super) fn client_bytes(&mut self, index: usize, bytes: &[u8]) -> Result<(), String> {
        self.nodes[index].buffer.extend_from_slice(bytes);
        loop {
            let node = &mut self.nodes[index];
            let Some(body) = node
                .decoder
                .decode(&mut node.buffer)
                .map_err(|error| format!("a bad frame from node {}: {error}", index + 1))?
            else {
                break;
            };
            let frame: ServerFrame = krest_proto::frame::decode_body(body)
                .map_err(|error| format!("a bad frame body: {error}"))?;
            let Some((name, _)) = node.outstanding.remove(&frame.request_id) else {
                continue;
            };
            if let Some(queue) = name.strip_prefix('+') {
                let queue = queue.to_string();
                self.publish_answered(index, queue, frame.body)?;
                continue;
            }
            let deleting = name.starts_with('-');
            match frame.body {
                Some(server_frame::Body::Done(_)) => {
                    self.check_answer(index, &name)?;
                    if !deleting {
                        self.confirmed.insert(name);
                    }
                }
                Some(server_frame::Body::Error(error)) => {
                    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                    let expected = matches!(code, ErrorCode::Unavailable | ErrorCode::NotLeader)
                        || (deleting && code == ErrorCode::QueueNotFound);
                    if !expected {
                        return Err(format!(
                            "seed {}: declaring {name} through node {} failed: {code:?} {}",
                            self.seed,
                            index + 1,
                            error.message
                        ));
                    }
                }
                other => return Err(format!("an unexpected answer {other:?}")),
            }
        }
        Ok(())
    }

    /// A publish was answered: stored (by the node serving the queue), or redirected to the
    /// node `NOT_LEADER` names, which the client follows as the real client does.
    pub(super) fn publish_answered(
        &mut self,
        index: usize,
        queue: String,
        body: Option<server_frame::Body>,
    ) -> Result<(), String> {
        let seed = self.seed;
        match body {
            Some(server_frame::Body::PublishOk(ok)) => {
                let node = self.nodes[index].node.as_ref().expect("running");
                let placed = node
                    .catalog()
                    .into_iter()
                    .find(|(_, entry)| entry.name == queue)
                    .map(|(_, entry)| entry.leader());
                if placed != Some(self.nodes[index].id) {
                    return Err(format!(
                        "seed {seed}: node {} stored a publish to {queue}, placed on {placed:?}",
                        index + 1
                    ));
                }
                self.published.entry(queue).or_default().extend(
                    ok.sequences
                        .iter()
                        .map(|sequence| crate::ids::Sequence(*sequence)),
                );
                Ok(())
            }
            Some(server_frame::Body::Error(error)) => {
                let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                match code {
                    ErrorCode::NotLeader => {
                        let target = self.configs[0]
                            .cluster
                            .nodes
                            .iter()
                            .position(|node| node.client == error.leader_address);
                        let Some(target) = target else {
                            return Err(format!(
                                "seed {seed}: NOT_LEADER for {queue} names no node: '{}' ({})",
                                error.leader_address, error.message
                            ));
                        };
                        if target == index {
                            return Err(format!(
                                "seed {seed}: node {} sent a publish to {queue} to itself",
                                index + 1
                            ));
                        }
                        self.redirects += 1;
                        self.schedule(1, Event::PublishTo(target, queue));
                        Ok(())
                    }
                    ErrorCode::Unavailable => Ok(()),
                    other => Err(format!(
                        "seed {seed}: publishing to {queue} through node {} failed: {other:?} {}",
                        index + 1,
                        error.message
                    )),
                }
            }
            other => Err(format!("an unexpected answer to a publish: {other:?}")),
        }
    }
}
