//! The admin HTTP listener: read one bounded request, hand it to the core, write the answer,
//! close. The codec is [`krest_proto::http::RequestReader`]; the routes live in the core.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::future::FutureExt as _;
use krest_core::router::Event;
use krest_proto::http::{encode_response, ReadProgress, RequestReader, REQUEST_TIMEOUT_MS};

use super::{pause_after_accept_error, Events, Responder};
use crate::runtime::Runtime;

/// Accepts admin connections until dropped.
pub async fn accept<R: Runtime>(runtime: R, listener: R::Listener, events: Events) {
    loop {
        let Ok((reader, writer, _)) = runtime.accept(&listener).await else {
            pause_after_accept_error(&runtime).await;
            continue;
        };
        let events = events.clone();
        let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
        let timeout = runtime.sleep_until(deadline);
        runtime.spawn(serve::<R>(reader, writer, events).or(async {
            timeout.await;
        }));
    }
}

async fn serve<R: Runtime>(mut reader: R::Reader, mut writer: R::Writer, events: Events) {
    let mut request_reader = RequestReader::default();
    let mut buffer = BytesMut::with_capacity(RequestReader::READ_CHUNK_BYTES);
    let response = loop {
        match R::read(&mut reader, &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let progress = request_reader.push(&buffer);
        buffer.clear();
        match progress {
            ReadProgress::NeedMore => continue,
            ReadProgress::Reject(response) => break response,
            ReadProgress::Request(request) => {
                let (responder, answer) = async_channel::bounded(1);
                let admin = Event::Admin {
                    http: request.into(),
                    responder: Responder(responder),
                };
                if events.send(admin).await.is_err() {
                    return;
                }
                let Ok(answer) = answer.recv().await else {
                    return;
                };
                break encode_response(answer.status, answer.content_type, &answer.body);
            }
        }
    };
    let _ = R::write_all(&mut writer, &response).await;
    R::close(&mut writer).await;
}
