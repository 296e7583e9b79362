//! The admin HTTP listener: read one bounded request, hand it to the core, write the answer,
//! close. The codec is `krest_proto::http`; the routes live in the core.

use std::time::Duration;

use krest_core::AdminHttpRequest;
use krest_proto::http::{encode_response, parse_request, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::event_loop::Event;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The core's answer.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Accepts admin connections until aborted.
pub async fn accept(listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, events)).await;
        });
    }
}

async fn serve(mut stream: TcpStream, events: mpsc::Sender<Event>) {
    let mut buffer = Vec::with_capacity(4096);
    let response = loop {
        let mut chunk = [0u8; 4096];
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        match parse_request(&buffer) {
            Ok(Some(request)) => {
                let (respond, answer) = oneshot::channel();
                let http = AdminHttpRequest {
                    method: request.method,
                    path: request.path,
                    query: request.query,
                    body: request.body,
                };
                if events.send(Event::Admin { http, respond }).await.is_err() {
                    return;
                }
                let Ok(answer) = answer.await else { return };
                break encode_response(answer.status, answer.content_type, &answer.body);
            }
            Ok(None) if buffer.len() <= MAX_HEAD_BYTES + MAX_BODY_BYTES => continue,
            Ok(None) => break encode_response(413, "text/plain", b"request too large\n"),
            Err(error) => {
                break encode_response(
                    error.status(),
                    "text/plain",
                    format!("{error}\n").as_bytes(),
                )
            }
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}
