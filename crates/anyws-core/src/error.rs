//! Errors.

/// Close codes of RFC 6455 section 7.4.1 that anyws sends or reports.
pub mod close_code {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is shutting down (or the client is navigating away).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// 1005: no code was present in the close frame (reported, never sent).
    pub const NO_STATUS: u16 = 1005;
    /// 1006: the connection dropped without a close frame (reported, never sent).
    pub const ABNORMAL: u16 = 1006;
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: the message violates a policy; sent to a peer over its message rate.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: the message is larger than `max_message_size`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1011: the server hit an unexpected condition, such as a panicking hook.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1013: try again later; sent to a peer whose send queue passed `max_buffered_bytes`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Why a peer's connection failed, as reported to [`Hooks::error`](crate::Hooks::error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client broke the WebSocket protocol (the peer is closed with 1002).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message or frame was larger than the limit (the peer is closed with 1009).
    #[error("message too big: {0}")]
    MessageTooBig(String),
    /// A text message was not valid UTF-8 (the peer is closed with 1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A compressed message (permessage-deflate) did not inflate (the peer is closed with
    /// 1007).
    #[error("a compressed message does not inflate")]
    InvalidCompression,
    /// The peer's send queue passed `max_buffered_bytes` (the peer is closed with 1013).
    #[error("send queue over its limit of {limit} bytes")]
    SendQueueFull {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The peer sent messages faster than [`Limits::message_rate`](crate::Limits::message_rate)
    /// allows (the peer is closed with 1008).
    #[error("message rate over the limit")]
    RateLimited,
    /// The peer sent nothing, not even a pong, for the idle timeout.
    #[error("no traffic for the idle timeout")]
    IdleTimeout,
    /// A hook panicked (the peer is closed with 1011).
    #[error("hook `{hook}` panicked: {message}")]
    HookPanicked {
        /// The hook that panicked.
        hook: &'static str,
        /// The panic message, when it was a string.
        message: String,
    },
    /// Reading from or writing to the connection failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The close code the server sends for this error, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Protocol(_) => Some(close_code::PROTOCOL_ERROR),
            Self::MessageTooBig(_) => Some(close_code::MESSAGE_TOO_BIG),
            Self::InvalidUtf8 | Self::InvalidCompression => Some(close_code::INVALID_PAYLOAD),
            Self::SendQueueFull { .. } => Some(close_code::TRY_AGAIN_LATER),
            Self::HookPanicked { .. } => Some(close_code::INTERNAL_ERROR),
            Self::RateLimited => Some(close_code::POLICY_VIOLATION),
            Self::IdleTimeout | Self::Io(_) => None,
        }
    }
}

/// A message could not be queued for a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The peer is closing or closed.
    #[error("the peer is closed")]
    Closed,
    /// The peer's send queue passed `max_buffered_bytes`; the peer is being closed with 1013.
    #[error("the peer's send queue is full; the peer is being closed")]
    QueueFull,
    /// The value could not be serialized as JSON.
    #[error("could not serialize the message as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
