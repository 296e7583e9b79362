//! A small, bounded HTTP/1.1 codec for the admin listener, built on `httparse`.
//!
//! The runtime reads bytes into a buffer and calls [`parse_request`] until it yields a request;
//! it writes back what [`encode_response`] produced and closes the connection (no keep-alive:
//! admin traffic is light and this keeps the state machine trivial).

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// One parsed admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, `PUT`, `DELETE`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string, without `?`, possibly empty.
    pub query: String,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

/// Why the bytes are not an acceptable request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// Head or body over the limits.
    #[error("HTTP request too large")]
    TooLarge,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TooLarge => 413,
        }
    }
}

/// Parses one request from the front of `buffer`. `Ok(None)`: incomplete, read more.
pub fn parse_request(buffer: &[u8]) -> Result<Option<HttpRequest>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            if buffer.len() > MAX_HEAD_BYTES {
                return Err(HttpError::TooLarge);
            }
            return Ok(None);
        }
        Err(error) => return Err(HttpError::Malformed(error.to_string())),
    };
    if head_bytes > MAX_HEAD_BYTES {
        return Err(HttpError::TooLarge);
    }
    let mut content_length = 0usize;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value)
                .map_err(|_| HttpError::Malformed("content-length is not text".into()))?;
            content_length = text
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed("content-length is not a number".into()))?;
        }
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "chunked bodies are not supported".into(),
            ));
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(HttpError::TooLarge);
    }
    if buffer.len() < head_bytes + content_length {
        return Ok(None);
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    Ok(Some(HttpRequest {
        method: request.method.unwrap_or("GET").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        body: buffer[head_bytes..head_bytes + content_length].to_vec(),
    }))
}

/// How long an admin client has to send its whole request before the runtime drops it.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The read side of one admin connection: the runtime appends what it reads with
/// [`RequestReader::push`] until the answer is a request for the core or bytes to write back.
#[derive(Debug, Default)]
pub struct RequestReader {
    buffer: Vec<u8>,
}

/// What [`RequestReader::push`] makes of the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadProgress {
    /// Incomplete: read more.
    NeedMore,
    /// A whole request: hand it to the core, write back its answer, close.
    Request(HttpRequest),
    /// Not acceptable: write back this response (400 or 413), close.
    Reject(Vec<u8>),
}

impl RequestReader {
    /// Bytes asked of the socket per read.
    pub const READ_CHUNK_BYTES: usize = 4096;

    /// Appends `bytes` (just read) and looks for a whole request.
    pub fn push(&mut self, bytes: &[u8]) -> ReadProgress {
        self.buffer.extend_from_slice(bytes);
        match parse_request(&self.buffer) {
            Ok(Some(request)) => ReadProgress::Request(request),
            Ok(None) if self.buffer.len() <= MAX_HEAD_BYTES + MAX_BODY_BYTES => {
                ReadProgress::NeedMore
            }
            Ok(None) => ReadProgress::Reject(error_response(&HttpError::TooLarge)),
            Err(error) => ReadProgress::Reject(error_response(&error)),
        }
    }
}

/// The plain-text response to a request that could not be accepted.
fn error_response(error: &HttpError) -> Vec<u8> {
    encode_response(
        error.status(),
        "text/plain",
        format!("{error}\n").as_bytes(),
    )
}

/// A complete response with `Connection: close`.
pub fn encode_response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_body_parses_only_once_the_body_is_complete() {
        let full = b"POST /v1/queues?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(parse_request(&full[..full.len() - 1]), Ok(None));
        let request = parse_request(full).unwrap().unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/queues");
        assert_eq!(request.query, "x=1");
        assert_eq!(request.body, b"abcd");
    }

    #[test]
    fn oversized_and_malformed_requests_are_errors() {
        let huge = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(parse_request(huge.as_bytes()), Err(HttpError::TooLarge));
        assert!(matches!(
            parse_request(b"\x00\x01 garbage\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn a_request_reader_waits_for_the_whole_request_and_rejects_garbage_with_400() {
        let mut reader = RequestReader::default();
        assert_eq!(
            reader.push(b"GET /healthz HTTP/1.1\r\n"),
            ReadProgress::NeedMore
        );
        match reader.push(b"\r\n") {
            ReadProgress::Request(request) => assert_eq!(request.path, "/healthz"),
            other => panic!("expected a request, got {other:?}"),
        }
        let mut reader = RequestReader::default();
        match reader.push(b"\x00\x01 garbage\r\n\r\n") {
            ReadProgress::Reject(response) => assert!(response.starts_with(b"HTTP/1.1 400 ")),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_response_states_its_length() {
        let response = encode_response(200, "text/plain", b"ok");
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\nok"));
    }
}
