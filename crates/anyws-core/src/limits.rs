//! Limits that keep one peer from hurting the server, each with a documented default.

use std::time::Duration;

/// Per-server limits. Every field has a default, written in its doc comment with its unit.
///
/// Set them through [`ServerBuilder`](crate::ServerBuilder) or build one with
/// [`Limits::default`] and the setters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest message accepted from a peer, in bytes, after reassembling its fragments.
    /// A larger one closes the peer with 1009. Default: 16 MiB (16,777,216 bytes).
    pub max_message_size: usize,
    /// Largest single frame accepted from a peer, in bytes. A larger one closes the peer with
    /// 1009. Default: 16 MiB (16,777,216 bytes).
    pub max_frame_size: usize,
    /// Largest amount of outgoing data, in bytes, that may wait for one peer's socket.
    ///
    /// Policy when a send would pass it: the message is refused
    /// ([`SendError::QueueFull`](crate::SendError::QueueFull)), everything still queued for that
    /// peer is dropped, and the peer is closed with 1013 (try again later), or dropped if even
    /// the close frame cannot be written within the close timeout. A single message larger than
    /// the limit is still accepted when the queue is empty, so any message up to
    /// `max_message_size` can be echoed. Default: 16 MiB (16,777,216 bytes).
    pub max_buffered_bytes: usize,
    /// Time a new connection has to deliver its complete HTTP upgrade request before it is
    /// closed. Default: 10 seconds.
    pub handshake_timeout: Duration,
    /// Time a peer may stay silent. After half of it with nothing received, the server pings;
    /// when the whole of it passes with nothing received, not even a pong, the peer is dropped.
    /// `None` turns both off. Default: 120 seconds.
    pub idle_timeout: Option<Duration>,
    /// Time to wait for the client's reply after the server sent a close frame, before the
    /// connection is dropped. Default: 2 seconds.
    pub close_timeout: Duration,
    /// Largest amount of publishes, in bytes, that may wait to be relayed to other instances by
    /// the [backplane](crate::backplane) (each counts its payload, topic and namespace plus 64
    /// bytes).
    ///
    /// Policy when a publish would pass it: it still reaches the local subscribers, is not
    /// relayed, and [`BackplaneError::QueueFull`](crate::BackplaneError::QueueFull) goes to the
    /// backplane error callback once for each run of drops. A single publish larger than the
    /// limit is still queued when the queue is empty. Unused without a backplane.
    /// Default: 16 MiB (16,777,216 bytes).
    pub max_backplane_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            max_buffered_bytes: 16 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            close_timeout: Duration::from_secs(2),
            max_backplane_queue_bytes: 16 << 20,
        }
    }
}
