//! The one error type of the SDK, for REST calls and the WebSocket alike.

use parley_proto::ErrorCode;
use parley_proto::frames::ErrorFrame;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request. `status` is the HTTP status for REST calls and 0 for
    /// WebSocket `error` frames (which carry no status). `device_epoch` comes with
    /// `stale_devices`: the conversation's current epoch, to share keys for before retrying.
    #[error("{code} (status {status}): {message}")]
    Api { status: u16, code: ErrorCode, message: String, retry_after_ms: Option<u64>, device_epoch: Option<i64> },
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Boxed because tungstenite's error is large and would bloat every `Result`.
    #[error("websocket: {0}")]
    Ws(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("could not decode a server response: {0}")]
    Decode(String),
    /// The connection task has stopped, or the socket dropped while the request was in flight
    /// and the request could not be retried.
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
    /// A local file could not be read or written (uploads and downloads).
    #[error("file: {0}")]
    Io(std::io::Error),
    /// The socket could not be opened (address, bind or connect failure).
    #[error("connect: {what}: {source}")]
    Connect {
        /// What was being done (`bind 127.0.0.2`, `connect 127.0.0.1:7700`, …).
        what: String,
        /// The operating system's error, kept so callers can tell causes apart by kind (an
        /// exhausted file table, a refused connection) rather than by text.
        source: std::io::Error,
    },
}

impl ClientError {
    /// The protocol error code, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked us to back off (`rate_limited`).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ClientError::Api { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// The conversation's current `device_epoch` that came with a `stale_devices` refusal.
    pub fn device_epoch(&self) -> Option<i64> {
        match self {
            ClientError::Api { device_epoch, .. } => *device_epoch,
            _ => None,
        }
    }

    pub(crate) fn from_frame(e: ErrorFrame) -> Self {
        ClientError::Api {
            status: 0,
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            device_epoch: e.device_epoch,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::Ws(Box::new(e))
    }
}

impl From<serde_json::Error> for ClientError {
    fn from(e: serde_json::Error) -> Self {
        ClientError::Decode(e.to_string())
    }
}
