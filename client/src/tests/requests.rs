//! Requests and answers: matching, errors, timeouts, connecting and closing.

use std::time::Duration;

use krest_proto::client::{
    client_frame, server_frame, Error as WireError, ErrorCode, Pong, QueueInfo, QueueList,
};

use super::fake_server::FakeServer;
use super::{bounded, connected, done, test_config};
use crate::{Client, ClientError, QueueSettings};

#[tokio::test]
async fn answers_are_matched_by_request_id_even_when_they_come_back_in_reverse_order() {
    // Proves that pipelined requests each get their own answer, whatever the answer order.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let requests = async {
            tokio::join!(
                client.ping(),
                client.list_queues(),
                client.queue_info("alpha"),
                client.declare_queue("beta", QueueSettings::default()),
            )
        };
        let server = async {
            let mut received = Vec::new();
            for _ in 0..4 {
                received.push(connection.next_request().await);
            }
            for (request_id, body) in received.into_iter().rev() {
                let answer = match body {
                    client_frame::Body::Ping(_) => server_frame::Body::Pong(Pong {}),
                    client_frame::Body::ListQueues(_) => server_frame::Body::QueueList(QueueList {
                        queues: vec![QueueInfo {
                            name: "listed".into(),
                            ..QueueInfo::default()
                        }],
                    }),
                    client_frame::Body::GetQueue(get) => server_frame::Body::QueueInfo(QueueInfo {
                        name: get.name,
                        messages: 3,
                        ..QueueInfo::default()
                    }),
                    client_frame::Body::DeclareQueue(_) => super::done(),
                    other => panic!("unexpected request {other:?}"),
                };
                connection.answer(request_id, answer).await;
            }
        };
        let ((ping, list, info, declare), ()) = tokio::join!(requests, server);
        ping.expect("ping");
        assert_eq!(list.expect("list")[0].name, "listed");
        let info = info.expect("info");
        assert_eq!((info.name.as_str(), info.messages), ("alpha", 3));
        declare.expect("declare");
    })
    .await;
}

#[tokio::test]
async fn a_server_error_comes_back_with_its_code_and_sentence() {
    // Proves that an Error answer becomes ClientError::Server with the stable code.
    bounded(async {
        let (_server, client, mut connection) = connected().await;
        let server = async {
            let (request_id, _) = connection.next_request().await;
            let error = WireError {
                code: ErrorCode::QueueNotFound as i32,
                message: "queue 'x' does not exist".into(),
                leader_address: String::new(),
            };
            connection
                .answer(request_id, server_frame::Body::Error(error))
                .await;
        };
        let (outcome, ()) = tokio::join!(client.delete_queue("x"), server);
        let error = outcome.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::QueueNotFound));
        assert_eq!(
            error.to_string(),
            "QUEUE_NOT_FOUND: queue 'x' does not exist"
        );
    })
    .await;
}

#[tokio::test]
async fn a_request_without_an_answer_times_out_and_a_late_answer_is_ignored() {
    // Proves the request timeout, and that the connection stays usable afterwards.
    bounded(async {
        let mut server = FakeServer::start().await;
        let mut config = test_config(&server.address);
        config.request_timeout = Duration::from_millis(100);
        let client = Client::connect(config).await.expect("connect");
        let mut connection = server.accept().await;
        let outcome = client.purge_queue("slow").await;
        assert!(matches!(outcome, Err(ClientError::Timeout)), "{outcome:?}");
        let (late_id, _) = connection.next_request().await;
        connection.answer(late_id, done()).await;
        let server = async {
            let (request_id, _) = connection.next_request().await;
            connection
                .answer(request_id, server_frame::Body::Pong(Pong {}))
                .await;
        };
        let (ping, ()) = tokio::join!(client.ping(), server);
        ping.expect("ping after a timeout");
    })
    .await;
}

#[tokio::test]
async fn the_handshake_carries_the_protocol_version_name_and_a_non_zero_producer_id() {
    // Proves what Hello says about the client.
    bounded(async {
        let (_server, client, connection) = connected().await;
        assert_eq!(
            connection.hello.protocol_version,
            krest_proto::PROTOCOL_VERSION
        );
        assert_eq!(connection.hello.client_name, "test");
        assert_ne!(connection.hello.producer_id, 0);
        assert_eq!(connection.hello.producer_id, client.producer_id());
    })
    .await;
}

#[tokio::test]
async fn connecting_where_nothing_listens_fails_with_an_io_error_naming_the_address() {
    // Proves that connect gives up after trying every server once.
    bounded(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let error = Client::connect(test_config(&address))
            .await
            .err()
            .expect("an error");
        assert!(matches!(error, ClientError::Io(_)), "{error:?}");
        assert!(error.to_string().contains(&address), "{error}");
    })
    .await;
}

#[tokio::test]
async fn requests_after_close_fail_at_once_with_closed() {
    // Proves that a closed client refuses new requests instead of reconnecting.
    bounded(async {
        let (_server, client, _connection) = connected().await;
        client.close().await;
        assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    })
    .await;
}
