//! The admin HTTP listener: read one bounded request, hand it to the core, write the answer,
//! close. The codec is [`krest_proto::http::RequestReader`]; the routes live in the core.

use std::time::Duration;

use krest_core::driver::Event;
use krest_proto::http::{encode_response, ReadProgress, RequestReader, REQUEST_TIMEOUT_MS};
use smol::channel;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

use crate::event_loop::{Event as LoopEvent, Responder};
use crate::Executor;

/// Accepts admin connections until cancelled.
pub async fn accept(executor: Executor, listener: TcpListener, events: channel::Sender<LoopEvent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            Timer::after(Duration::from_millis(50)).await;
            continue;
        };
        let events = events.clone();
        let task = async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            serve(stream, events)
                .or(async {
                    Timer::after(timeout).await;
                })
                .await;
        };
        executor.spawn(task).detach();
    }
}

async fn serve(mut stream: TcpStream, events: channel::Sender<LoopEvent>) {
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
                let (responder, answer) = channel::bounded(1);
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
                let Ok(answer) = answer.recv().await else {
                    return;
                };
                break encode_response(answer.status, answer.content_type, &answer.body);
            }
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.close().await;
}
