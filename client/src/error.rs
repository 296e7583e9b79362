//! The one error type of the client library.
//!
//! Every failure a caller can see is a [`ClientError`]. Errors the server reports keep their
//! stable [`ErrorCode`] and the server's sentence, so `Display` reads
//! `QUEUE_NOT_FOUND: queue 'x' does not exist`. The other variants describe what happened on this
//! side of the connection; [`ClientError::is_retryable`] says which of them a retry can cure.

use krest_proto::client::{Error as WireError, ErrorCode};

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{}: {message}", code.as_str_name())]
    Server {
        /// The stable code (`QUEUE_NOT_FOUND`, ...).
        code: ErrorCode,
        /// The server's explanation, meant for a person.
        message: String,
    },
    /// The connection dropped (or was not up) before the answer arrived. The request may or may
    /// not have been carried out.
    #[error("disconnected from the server before the answer arrived")]
    Disconnected,
    /// No answer arrived within the request timeout. The request may or may not have been
    /// carried out.
    #[error("timed out waiting for the server to answer")]
    Timeout,
    /// A socket operation failed, typically while connecting.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client was closed; no more requests can be made with it.
    #[error("the client is closed")]
    Closed,
    /// The caller asked for something that cannot work, detected before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The server's error code, if the server reported this error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed: the connection failed, the answer
    /// was late, or the server said it is temporarily unavailable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Disconnected | ClientError::Timeout | ClientError::Io(_) => true,
            ClientError::Server { code, .. } => *code == ErrorCode::Unavailable,
            ClientError::Protocol(_) | ClientError::Closed | ClientError::InvalidArgument(_) => {
                false
            }
        }
    }

    /// The error a server `Error` frame describes. An unknown code becomes
    /// `ERROR_CODE_UNSPECIFIED`; a leader address (with `NOT_LEADER`) is kept in the message.
    pub(crate) fn from_wire(error: WireError) -> ClientError {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        let message = if error.leader_address.is_empty() {
            error.message
        } else {
            format!("{} (leader: {})", error.message, error.leader_address)
        };
        ClientError::Server { code, message }
    }

    /// A copy of this error for a second waiter; an I/O error keeps its kind and text.
    pub(crate) fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
            ClientError::Disconnected => ClientError::Disconnected,
            ClientError::Timeout => ClientError::Timeout,
            ClientError::Io(error) => {
                ClientError::Io(std::io::Error::new(error.kind(), error.to_string()))
            }
            ClientError::Protocol(reason) => ClientError::Protocol(reason.clone()),
            ClientError::Closed => ClientError::Closed,
            ClientError::InvalidArgument(reason) => ClientError::InvalidArgument(reason.clone()),
        }
    }

    /// An answer of the wrong type for the request that was sent.
    pub(crate) fn unexpected_answer(request: &str) -> ClientError {
        ClientError::Protocol(format!("unexpected answer to {request}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_displays_its_code_name_then_the_sentence() {
        let error = ClientError::from_wire(WireError {
            code: ErrorCode::QueueNotFound as i32,
            message: "queue 'x' does not exist".into(),
            leader_address: String::new(),
        });
        assert_eq!(
            error.to_string(),
            "QUEUE_NOT_FOUND: queue 'x' does not exist"
        );
        assert_eq!(error.code(), Some(ErrorCode::QueueNotFound));
        assert!(!error.is_retryable());
    }

    #[test]
    fn only_connection_failures_timeouts_and_unavailable_are_retryable() {
        let unavailable = ClientError::Server {
            code: ErrorCode::Unavailable,
            message: "shutting down".into(),
        };
        assert!(unavailable.is_retryable());
        assert!(ClientError::Disconnected.is_retryable());
        assert!(ClientError::Timeout.is_retryable());
        assert!(!ClientError::Closed.is_retryable());
        assert!(!ClientError::Protocol("x".into()).is_retryable());
    }
}
