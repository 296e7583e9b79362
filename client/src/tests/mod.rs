//! Tests of the client against [`fake_server::FakeServer`], a scripted server on 127.0.0.1.
//! Every test runs under [`bounded`], so a lost frame fails the test instead of hanging it.

mod consuming;
pub(crate) mod fake_server;
pub(crate) mod mini_broker;
mod reconnect;
mod requests;

use std::future::Future;
use std::time::Duration;

use krest_proto::client::{server_frame, Delivery as WireDelivery, DeliveryTag, Done};

use crate::{Client, ClientConfig};
use fake_server::{FakeConnection, FakeServer};

/// Runs a test body, failing it after five seconds.
pub(crate) async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), test)
        .await
        .expect("the test did not finish within five seconds")
}

/// Short timeouts and backoff, so failure paths are quick.
fn test_config(address: &str) -> ClientConfig {
    ClientConfig {
        servers: vec![address.to_string()],
        client_name: "test".to_string(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        reconnect_backoff_min: Duration::from_millis(5),
        reconnect_backoff_max: Duration::from_millis(20),
        reconnect_attempts_per_request: 50,
        ..ClientConfig::default()
    }
}

/// A fake server and a client connected to it.
async fn connected() -> (FakeServer, Client, FakeConnection) {
    let mut server = FakeServer::start().await;
    let client = Client::connect(test_config(&server.address))
        .await
        .expect("connect");
    let connection = server.accept().await;
    (server, client, connection)
}

pub(crate) fn done() -> server_frame::Body {
    server_frame::Body::Done(Done {})
}

pub(crate) fn wire_delivery(
    sequence: u64,
    delivery_count: u32,
    payload: &'static str,
) -> WireDelivery {
    WireDelivery {
        tag: Some(DeliveryTag {
            sequence,
            delivery_count,
        }),
        payload: payload.into(),
        ..WireDelivery::default()
    }
}
