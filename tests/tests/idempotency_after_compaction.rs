//! A retried publish is recognised after a restart even when its message is long gone and the
//! log has deleted the segments around it: the real core over the real file storage, on a
//! temporary directory, driven input by input (found by krest-sim seed 16548559470313174546).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use krest_core::ids::ConnId;
use krest_core::router::{Mailbox, MailboxRouter, Outbound};
use krest_core::{Config, Input, Instant, Node, Now, UnixMillis};
use krest_proto::client::{
    client_frame, server_frame, ClientFrame, DeclareQueue, Hello, OutgoingMessage, OverflowPolicy,
    Publish, QueueKind, QueueSettings, ServerFrame,
};
use krest_proto::frame::{encode_frame, FrameDecoder};
use krest_storage_file::StorageExecutor;

/// One node, behind the command router, over a data directory; storage requests run as soon
/// as the node emits them.
struct Broker {
    router: MailboxRouter,
    mailbox: Mailbox,
    executor: StorageExecutor,
    now: Now,
    replies: VecDeque<ServerFrame>,
    segments_deleted: usize,
}

impl Broker {
    fn open(directory: &std::path::Path, now: Now) -> Broker {
        let mut config = Config::default();
        config.storage.segment_bytes = 4_096;
        config.limits.idempotency_window_per_producer = 1_000;
        let (executor, recovered) = StorageExecutor::open(directory, 4_096).expect("opens");
        let node = Node::new(config, recovered, 1, now).expect("recovers");
        let mut broker = Broker {
            router: MailboxRouter::new(node),
            mailbox: Mailbox::default(),
            executor,
            now,
            replies: VecDeque::new(),
            segments_deleted: 0,
        };
        broker.run();
        broker
    }

    fn input(&mut self, input: Input) {
        self.now.monotonic = Instant(self.now.monotonic.0 + 1);
        self.router.on_input(self.now, input, &self.mailbox);
        self.run();
    }

    /// Executes commands (and feeds storage completions back) until the node is quiet.
    fn run(&mut self) {
        loop {
            for (_, message) in self.mailbox.take().to_connections {
                if let Outbound::Frame(frame) = message {
                    let mut buffer = BytesMut::from(&frame[..]);
                    let mut decoder = FrameDecoder::new(u32::MAX);
                    while let Some(reply) = decoder
                        .decode_message::<ServerFrame>(&mut buffer)
                        .expect("decodes")
                    {
                        self.replies.push_back(reply);
                    }
                }
            }
            let requests = self.router.take_storage_requests();
            self.segments_deleted += requests
                .iter()
                .filter(|request| {
                    matches!(
                        request,
                        krest_core::StorageRequest::DeleteSegmentsBelow { .. }
                    )
                })
                .count();
            if requests.is_empty() {
                return;
            }
            for done in self.executor.execute_batch(requests) {
                self.now.monotonic = Instant(self.now.monotonic.0 + 1);
                self.router.on_storage_done(self.now, vec![done]);
            }
        }
    }

    fn request(
        &mut self,
        conn: ConnId,
        request_id: u64,
        body: client_frame::Body,
    ) -> server_frame::Body {
        let mut bytes = BytesMut::new();
        encode_frame(
            &ClientFrame {
                request_id,
                body: Some(body),
            },
            &mut bytes,
        );
        let body = Bytes::copy_from_slice(&bytes[4..]);
        self.input(Input::ClientFrame { conn, body });
        let position = self
            .replies
            .iter()
            .position(|reply| reply.request_id == request_id)
            .expect("answered");
        self.replies
            .remove(position)
            .and_then(|reply| reply.body)
            .expect("a body")
    }

    fn connect(&mut self, conn: ConnId) {
        self.input(Input::ClientConnected { conn });
        let hello = client_frame::Body::Hello(Hello {
            protocol_version: krest_proto::PROTOCOL_VERSION,
            client_name: "test".into(),
            producer_id: 42,
        });
        assert!(matches!(
            self.request(conn, 1, hello),
            server_frame::Body::HelloOk(_)
        ));
    }

    /// Publishes producer sequence `producer_sequence`; returns the queue sequence confirmed.
    fn publish(&mut self, conn: ConnId, producer_sequence: u64) -> u64 {
        let publish = client_frame::Body::Publish(Publish {
            queue: "latest".into(),
            messages: vec![OutgoingMessage {
                payload: Bytes::from(format!("message {producer_sequence}")),
                producer_sequence,
                ..Default::default()
            }],
        });
        match self.request(conn, 100 + producer_sequence, publish) {
            server_frame::Body::PublishOk(ok) => ok.sequences[0],
            other => panic!("publish {producer_sequence}: {other:?}"),
        }
    }
}

#[test]
fn a_retry_is_recognised_after_a_restart_though_its_segment_was_compacted() {
    let directory = std::env::temp_dir().join(format!("krest-idempotency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let now = Now {
        monotonic: Instant(1_000),
        wall: UnixMillis(1_700_000_000_000),
    };
    let conn = ConnId(1);
    let mut broker = Broker::open(&directory, now);
    broker.connect(conn);
    let declare = client_frame::Body::DeclareQueue(DeclareQueue {
        name: "latest".into(),
        settings: Some(QueueSettings {
            kind: QueueKind::Persistent as i32,
            max_messages: 4,
            overflow: OverflowPolicy::DropOldest as i32,
            ..Default::default()
        }),
    });
    assert!(matches!(
        broker.request(conn, 2, declare),
        server_frame::Body::Done(_)
    ));
    // Each publish drops the oldest message: the log keeps moving past them and deletes the
    // segments nothing needs, but the idempotency table (a window of the last 1000 producer
    // sequences) still remembers where the last 1000 of these messages were stored.
    let mut confirmed = Vec::new();
    for producer_sequence in 1..=3_000 {
        confirmed.push(broker.publish(conn, producer_sequence));
    }
    assert!(broker.segments_deleted > 0, "the log deleted segments");
    let now = broker.now;
    drop(broker);

    let mut broker = Broker::open(&directory, now);
    broker.connect(conn);
    for producer_sequence in [2_001u64, 2_500, 2_990, 3_000] {
        assert_eq!(
            broker.publish(conn, producer_sequence),
            confirmed[producer_sequence as usize - 1],
            "producer sequence {producer_sequence} is confirmed again with its first sequence, not stored twice"
        );
    }
    let queue = broker.router.node().queue("latest").expect("recovered");
    assert_eq!(queue.next_sequence.0, 3_001, "nothing was stored again");
    let _ = std::fs::remove_dir_all(&directory);
}
