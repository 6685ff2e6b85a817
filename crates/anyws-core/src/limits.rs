//! Limits that keep one peer from hurting the server, each with a documented default.

use std::time::{Duration, Instant};

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
    /// Largest request head accepted, in bytes: the request line and the header lines with
    /// their line endings, up to and including the empty line that ends the head. A larger one
    /// gets `431 Request Header Fields Too Large` before any hook sees the request, and no peer
    /// is created. It applies to WebSocket upgrades and to every request of the
    /// [SSE transport](crate::sse), and it bounds what a peer keeps of its upgrade request
    /// ([`Peer::request`](crate::Peer::request)). Default: 16 KiB (16,384 bytes).
    ///
    /// How exact it is depends on who reads the head:
    /// - The `serve` functions of the runtime adapters (`anyws-tokio`, `anyws-smol`,
    ///   `anyws-async-std`) and of `anyws-hyper` read it themselves: they count the bytes as
    ///   received, exactly, and answer `431` as soon as a head passes the limit, without reading
    ///   the rest. On those connections the limit holds for every request, the fallback's too;
    ///   hyper also answers `431` to a head of more than 100 header fields.
    /// - Where another HTTP layer reads the head (`anyws-actix`, the axum extractor and layer,
    ///   `anyws_hyper::upgrade` in a hyper service of the application's own,
    ///   [`Server::handshake`](crate::Server::handshake) and
    ///   [`Server::sse`](crate::Server::sse)), the server measures the parsed head: the request
    ///   line as `METHOD target HTTP/1.1`, each header as `name:value`, and the line endings.
    ///   Whitespace around header values is not counted, so a head within the limit is never
    ///   refused, and one over it passes only by its optional whitespace (one byte for each
    ///   header written `name: value`). That layer's own head limit comes first: actix-web
    ///   answers `431` past 128 KiB or 96 headers, whatever this says; hyper past about
    ///   400 KiB unless its `max_header_size` or `max_buf_size` says otherwise.
    pub max_request_head_bytes: usize,
    /// Time a peer may stay silent: when it passes with nothing received from the peer, not even
    /// a pong, the peer is dropped (dead-peer detection) and its `close` hook runs with 1006.
    /// `None` turns it off. Default: 120 seconds.
    pub idle_timeout: Option<Duration>,
    /// Interval of the automatic ping: when nothing has been received from a peer for this long,
    /// the server sends it a ping, and again every interval while it stays silent, so that a
    /// live client answers within [`idle_timeout`](Limits::idle_timeout). When half the idle
    /// timeout is shorter, that is used instead, so that a client always has time to answer.
    /// `None` sends no automatic pings. Default: 30 seconds.
    pub ping_interval: Option<Duration>,
    /// Most peers open at once, counted from the accepted handshake until the connection is
    /// gone. A handshake beyond it gets `503 Service Unavailable` before any hook sees the
    /// request. `None`: no limit. Default: `None`.
    pub max_connections: Option<usize>,
    /// Most peers open at once from one IP address (the adapter's remote address; requests
    /// without one are not counted). A handshake beyond it gets `429 Too Many Requests`, since
    /// the limit is about that client and not the server, before any hook sees the request.
    /// `None`: no limit. Default: `None`.
    pub max_connections_per_ip: Option<usize>,
    /// Most streams open at once on one HTTP/2 connection (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`), WebSocket streams (RFC 8441) and requests alike; the
    /// client must wait for one to end before it opens another past it. Each WebSocket stream is a
    /// peer of its own, so [`max_connections`](Limits::max_connections) and
    /// [`max_connections_per_ip`](Limits::max_connections_per_ip) count it as one. It applies
    /// where anyws serves the HTTP/2 connection (the `serve` functions of the runtime adapters
    /// and of `anyws-hyper`); behind another HTTP layer that layer's own setting holds.
    /// Default: 128 streams.
    pub max_concurrent_streams: u32,
    /// Most messages one peer may send, as a token bucket: see [`MessageRate`]. A peer that
    /// goes over it is closed with 1008 (policy violation). `None`: no limit. Default: `None`.
    pub message_rate: Option<MessageRate>,
    /// Time to wait for the client's reply after the server sent a close frame, before the
    /// connection is dropped. After a protocol error the peer ends as soon as its close frame
    /// is out (it leaves every list and its `close` hook runs), and this is how long its socket
    /// is then kept for the client to close its side: what the client sends meanwhile is read
    /// and dropped, so that closing the socket does not reset the connection before the client
    /// read the close frame; until it is dropped, the socket keeps its place in
    /// [`max_connections`](Limits::max_connections) and
    /// [`max_connections_per_ip`](Limits::max_connections_per_ip). Default: 2 seconds.
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
            max_request_head_bytes: 16 << 10,
            idle_timeout: Some(Duration::from_secs(120)),
            ping_interval: Some(Duration::from_secs(30)),
            max_connections: None,
            max_connections_per_ip: None,
            max_concurrent_streams: 128,
            message_rate: None,
            close_timeout: Duration::from_secs(2),
            max_backplane_queue_bytes: 16 << 20,
        }
    }
}

/// A per-peer message rate limit: on average `per_second` messages a second, with bursts of up to
/// `burst` messages at once.
///
/// It is a token bucket that holds `burst` tokens and refills at `per_second` tokens a second;
/// each message a peer sends takes one token (text and binary messages, counted once complete
/// however many fragments they came in, and pings). A message that finds the bucket empty is not
/// handed to the hooks: the peer is closed with 1008 (policy violation) and the `error` hook
/// gets [`Error::RateLimited`](crate::Error::RateLimited); what it sends until it answers the
/// close frame (for at most [`Limits::close_timeout`]) is read and dropped. The bucket is a single timestamp per
/// peer, updated as messages arrive: no timer runs for it.
///
/// Peers of the [SSE transport](crate::sse) count each message of their `POST`s as it arrives.
/// The `POST` that carries a message over the rate is answered `429 Too Many Requests`; the
/// messages before it are still handed to the hooks, then the peer is closed with 1008: its
/// event stream ends, the `error` hook gets [`Error::RateLimited`](crate::Error::RateLimited)
/// and the `close` hook gets 1008. Later `POST`s for it get `429` until it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRate {
    /// Messages a second, on average. Zero is treated as one.
    pub per_second: u32,
    /// Messages that may arrive back to back. Zero is treated as one.
    pub burst: u32,
}

impl MessageRate {
    /// `per_second` messages a second on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// Time one token takes to refill.
    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }
}

/// The token bucket of one peer, kept as the time at which it will be full again (the
/// "theoretical arrival time" of the generic cell rate algorithm).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    /// How far ahead of now the bucket may be filled: `burst` intervals.
    capacity: Duration,
    full_at: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(rate: MessageRate) -> Self {
        let interval = rate.interval();
        Self {
            interval,
            capacity: interval.saturating_mul(rate.burst.max(1)),
            full_at: None,
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let base = match self.full_at {
            Some(at) if at > now => at,
            _ => now,
        };
        let next = base + self.interval;
        if next.duration_since(now) > self.capacity {
            return false;
        }
        self.full_at = Some(next);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = RateLimiter::new(MessageRate::new(10, 3));
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start), "the burst is 3");
        // One token refills every 100 ms.
        assert!(!bucket.take(start + Duration::from_millis(99)));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(150)));
        // A long pause refills the bucket to the burst and no further.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
    }

    #[test]
    fn zero_is_one() {
        let now = Instant::now();
        let mut bucket = RateLimiter::new(MessageRate::new(0, 0));
        assert!(bucket.take(now));
        assert!(!bucket.take(now));
        assert!(bucket.take(now + Duration::from_secs(1)));
    }
}
