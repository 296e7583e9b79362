//! The admin HTTP listener: read one bounded request, hand it to the core, write the answer,
//! close. The codec is [`krest_proto::http::RequestReader`]; the routes live in the core.

use std::time::Duration;

use krest_core::driver::Event;
use krest_proto::http::{encode_response, ReadProgress, RequestReader, REQUEST_TIMEOUT_MS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::event_loop::{Event as LoopEvent, Responder};

/// Accepts admin connections until aborted.
pub async fn accept(listener: TcpListener, events: mpsc::Sender<LoopEvent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            let _ = tokio::time::timeout(timeout, serve(stream, events)).await;
        });
    }
}

async fn serve(mut stream: TcpStream, events: mpsc::Sender<LoopEvent>) {
    let mut reader = RequestReader::default();
    let mut chunk = [0u8; RequestReader::READ_CHUNK_BYTES];
    let response = loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        match reader.push(&chunk[..read]) {
            ReadProgress::NeedMore => continue,
            ReadProgress::Reject(response) => break response,
            ReadProgress::Request(request) => {
                let (responder, answer) = oneshot::channel();
                let http = request.into();
                if events
                    .send(Event::Admin {
                        http,
                        responder: Responder(responder),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let Ok(answer) = answer.await else { return };
                break encode_response(answer.status, answer.content_type, &answer.body);
            }
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}
