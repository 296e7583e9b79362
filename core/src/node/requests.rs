//! Queue administration shared by client frames and the admin API: declare, delete, purge,
//! list and describe.

use krest_proto::client::{
    self as wire, DeclareQueue, ErrorCode, QueueInfo, QueueList, SubscriptionInfo,
};
use krest_proto::storage::{
    metadata_record, MetadataRecord, QueueDeclared, QueueDeleted, SubscriptionDeclared,
};

use super::cluster::{CatalogThen, ClusterDeclare};
use super::session::RequestError;
use super::Node;
use crate::ids::{ConnId, LogIndex, QueueId, SubscriptionId};
use crate::io::{Command, LogId, StorageRequest};
use crate::queue::{validate_queue_name, Queue, QueueKind, QueueSettings};

impl Node {
    /// Creates queue `name`, or finds it. With `strict`, an existing queue of another kind
    /// is a `QUEUE_KIND_CONFLICT`. Returns the queue and the metadata index its declaration
    /// needs to be durable.
    pub(super) fn declare_queue(
        &mut self,
        name: &str,
        settings: &wire::QueueSettings,
        kind_if_unspecified: Option<QueueKind>,
        strict: bool,
    ) -> Result<(QueueId, Option<(LogId, LogIndex)>), RequestError> {
        validate_queue_name(name).map_err(|reason| (ErrorCode::InvalidArgument, reason))?;
        if let Some(id) = self.queue_names.get(name).copied() {
            let queue = &self.queues[&id];
            if strict {
                if let Some(kind) = QueueKind::from_wire(settings.kind) {
                    if kind != queue.settings.kind {
                        return Err((
                            ErrorCode::QueueKindConflict,
                            format!(
                                "queue '{name}' exists as a {} queue, not {}",
                                queue.settings.kind.as_str(),
                                kind.as_str()
                            ),
                        ));
                    }
                }
            }
            let need = queue.declared_at.map(|index| (LogId::Metadata, index));
            return Ok((id, need));
        }
        let resolved = self.resolve_declared(name, settings, kind_if_unspecified)?;
        if resolved.kind.is_durable() {
            self.refuse_if_fenced()?;
        }
        if self.queues.len() >= self.config.limits.max_queues as usize {
            return Err((
                ErrorCode::LimitReached,
                format!(
                    "the node already has {} queues, the configured limit (limits.max_queues)",
                    self.queues.len()
                ),
            ));
        }
        let id = QueueId(self.next_queue_id);
        self.next_queue_id += 1;
        let mut queue = Queue::new(id, name.to_string(), resolved);
        let mut need = None;
        if queue.settings.kind.is_durable() {
            let record = metadata_record::Body::QueueDeclared(QueueDeclared {
                queue_id: id.0,
                name: name.to_string(),
                settings: Some(queue.settings.to_wire()),
                replicas: Vec::new(),
            });
            let index = self.append_metadata(record);
            queue.declared_at = Some(index);
            need = Some((LogId::Metadata, index));
            self.create_log(LogId::Queue(id));
        }
        self.queue_names.insert(name.to_string(), id);
        self.queues.insert(id, queue);
        Ok((id, need))
    }

    /// The settings a declaration of `name` asks for, with this node's defaults, checked:
    /// a valid name, a dead-letter queue of a valid name that is not the queue itself.
    pub(super) fn resolve_declared(
        &self,
        name: &str,
        settings: &wire::QueueSettings,
        kind_if_unspecified: Option<QueueKind>,
    ) -> Result<QueueSettings, RequestError> {
        validate_queue_name(name).map_err(|reason| (ErrorCode::InvalidArgument, reason))?;
        let resolved = QueueSettings::resolve(
            name,
            settings,
            &self.config.queue_defaults,
            self.config.limits.max_ack_timeout_ms,
            kind_if_unspecified,
        )
        .map_err(|error| (ErrorCode::InvalidArgument, error.0))?;
        if resolved.dead_letter_queue == name {
            return Err((
                ErrorCode::InvalidArgument,
                format!("queue '{name}' cannot be its own dead-letter queue"),
            ));
        }
        validate_queue_name(&resolved.dead_letter_queue).map_err(|reason| {
            (
                ErrorCode::InvalidArgument,
                format!("dead-letter queue: {reason}"),
            )
        })?;
        Ok(resolved)
    }

    /// Appends a metadata record; returns its index.
    pub(super) fn append_metadata(&mut self, body: metadata_record::Body) -> LogIndex {
        let record = MetadataRecord { body: Some(body) };
        let body = self.encoder.encode(&record);
        self.append_record(LogId::Metadata, body)
    }

    /// Adds a subscription to a queue, durable ones declared in the metadata log.
    pub(super) fn add_subscription(
        &mut self,
        queue: QueueId,
        name: String,
        durable: bool,
        broadcast: bool,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.next_subscription_id);
        self.next_subscription_id += 1;
        let queue_state = self
            .queues
            .get_mut(&queue)
            .expect("subscribing to a known queue");
        queue_state.add_subscription(id, name.clone(), durable, broadcast);
        if durable && queue_state.settings.kind.is_durable() && self.cluster.is_some() {
            // In a cluster a group lives in its queue's log, before its acks.
            let record = krest_proto::storage::QueueRecord {
                body: Some(
                    krest_proto::storage::queue_record::Body::SubscriptionDeclared(
                        SubscriptionDeclared {
                            queue_id: queue.0,
                            name,
                        },
                    ),
                ),
            };
            let body = self.encoder.encode(&record);
            self.append_record(LogId::Queue(queue), body);
        } else if durable && queue_state.settings.kind.is_durable() {
            let index = self.append_metadata(metadata_record::Body::SubscriptionDeclared(
                SubscriptionDeclared {
                    queue_id: queue.0,
                    name,
                },
            ));
            // An ack is confirmed only once its subscription's declaration is durable too.
            let queue_state = self.queues.get_mut(&queue).expect("just subscribed");
            let subscription = queue_state.subscriptions.get_mut(&id).expect("just added");
            subscription.declared_at = Some(index);
        }
        id
    }

    /// Refuses work that needs storage once the node is fenced.
    pub(super) fn refuse_if_fenced(&self) -> Result<(), RequestError> {
        match &self.fenced {
            Some(reason) => Err((ErrorCode::Unavailable, reason.clone())),
            None => Ok(()),
        }
    }

    /// Whether a queue of this name, if the cluster's catalog has one, is served here (always,
    /// on a single node).
    pub(super) fn is_served_here(&self, name: &str) -> bool {
        self.served_elsewhere(name).is_none()
    }

    pub(super) fn queue_id(&self, name: &str) -> Result<QueueId, RequestError> {
        if let Some(error) = self.served_elsewhere(name) {
            return Err(error);
        }
        if let Some(id) = self.queue_names.get(name) {
            return Ok(*id);
        }
        // A node that has not applied a declaration yet sends the client to the metadata
        // leader, which has (a declaration is confirmed only after it committed).
        if let Some(error) = self.unknown_here(name) {
            return Err(error);
        }
        Err((
            ErrorCode::QueueNotFound,
            format!("queue '{name}' does not exist; declare it first"),
        ))
    }

    pub(super) fn on_declare(
        &mut self,
        conn: ConnId,
        request_id: u64,
        request: DeclareQueue,
    ) -> Result<(), RequestError> {
        let settings = request.settings.unwrap_or_default();
        if self.is_clustered() {
            let then = CatalogThen::Reply { conn, request_id };
            match self.cluster_declare(&request.name, &settings, None, then)? {
                ClusterDeclare::Waiting => return Ok(()), // answered once applied
                ClusterDeclare::Exists => {
                    self.reply_done_when_durable(conn, request_id, &[]);
                    return Ok(());
                }
                ClusterDeclare::Here => {}
            }
        }
        let (_, need) = self.declare_queue(&request.name, &settings, None, true)?;
        self.reply_done_when_durable(conn, request_id, need.as_slice());
        Ok(())
    }

    /// Deletes a queue: its consumers are told, its waiters fail, its log goes.
    pub(super) fn delete_queue(
        &mut self,
        name: &str,
    ) -> Result<Option<(LogId, LogIndex)>, RequestError> {
        let id = self.queue_id(name)?;
        if self.queues[&id].settings.kind.is_durable() {
            self.refuse_if_fenced()?;
        }
        if !self.delete_local_queue(id) {
            return Ok(None);
        }
        let index = self.append_metadata(metadata_record::Body::QueueDeleted(QueueDeleted {
            queue_id: id.0,
        }));
        Ok(Some((LogId::Metadata, index)))
    }

    /// Removes queue `id` from this node: its consumers are told, its waiters fail, its log is
    /// deleted. Returns whether it was durable (its deletion is for the metadata log).
    pub(super) fn delete_local_queue(&mut self, id: QueueId) -> bool {
        let name = self.queues[&id].name.clone();
        let durable = self.queues[&id].settings.kind.is_durable();
        let consumers: Vec<_> = self
            .consumers
            .iter()
            .filter(|(_, record)| record.queue == id)
            .map(|(consumer, _)| *consumer)
            .collect();
        for consumer in consumers {
            self.end_consumer(
                consumer,
                ErrorCode::QueueNotFound,
                format!("queue '{name}' was deleted"),
            );
        }
        if let Some(deleted) = self.queues.remove(&id) {
            self.payload_resident_bytes -= deleted.resident_bytes_counted;
        }
        self.payloads_wanted_queues.remove(&id);
        self.fail_parked_redrives(
            Some(id),
            ErrorCode::QueueNotFound,
            &format!("queue '{name}' was deleted during the redrive"),
        );
        self.queue_names.remove(&name);
        self.idempotency.forget_queue(id);
        let log = LogId::Queue(id);
        self.fail_waiters_on(
            log,
            &format!("queue '{name}' was deleted before this completed"),
        );
        if !durable {
            return false;
        }
        self.logs.remove(&log);
        self.commands
            .push_back(Command::Storage(StorageRequest::DeleteLog { log }));
        true
    }

    pub(super) fn on_delete(
        &mut self,
        conn: ConnId,
        request_id: u64,
        name: &str,
    ) -> Result<(), RequestError> {
        if self.is_clustered()
            && self.cluster_delete(name, CatalogThen::Reply { conn, request_id })?
        {
            return Ok(());
        }
        let need = self.delete_queue(name)?;
        self.reply_done_when_durable(conn, request_id, need.as_slice());
        Ok(())
    }

    /// Purges a queue; returns how many messages went and what must be durable.
    pub(super) fn purge_queue(
        &mut self,
        name: &str,
    ) -> Result<(u64, Option<(LogId, LogIndex)>), RequestError> {
        let id = self.queue_id(name)?;
        if self.queues[&id].settings.kind.is_durable() {
            self.refuse_if_fenced()?;
        }
        let mut removed = 0;
        let index = self.with_queue(id, |queue, effects| removed = queue.purge(effects));
        Ok((removed, index.map(|index| (LogId::Queue(id), index))))
    }

    pub(super) fn on_purge(
        &mut self,
        conn: ConnId,
        request_id: u64,
        name: &str,
    ) -> Result<(), RequestError> {
        let (_, need) = self.purge_queue(name)?;
        self.reply_done_when_durable(conn, request_id, need.as_slice());
        Ok(())
    }

    /// Describes one queue.
    pub(super) fn queue_info(&self, id: QueueId) -> QueueInfo {
        let queue = &self.queues[&id];
        let subscriptions = queue
            .subscriptions
            .values()
            .map(|subscription| SubscriptionInfo {
                name: subscription.name.clone(),
                broadcast: subscription.broadcast,
                consumers: subscription.consumers.len() as u32,
                pending: queue.subscription_backlog(subscription.id),
                in_flight: subscription.in_flight.len() as u64,
            })
            .collect();
        QueueInfo {
            name: queue.name.clone(),
            settings: Some(queue.settings.to_wire()),
            messages: queue.messages.len() as u64,
            bytes: queue.bytes,
            in_flight: queue.in_flight_count(),
            delayed: queue.delayed_count(self.now),
            next_sequence: queue.next_sequence.0,
            subscriptions,
            leader: self.node_id.0,
            replicas: vec![self.node_id.0],
            served_here: true,
        }
    }

    pub(super) fn queue_info_by_name(&self, name: &str) -> Result<QueueInfo, RequestError> {
        Ok(self.queue_info(self.queue_id(name)?))
    }

    pub(super) fn list_queue_infos(&self) -> QueueList {
        QueueList {
            queues: self.all_queue_infos(),
        }
    }
}
