//! Live counters: [`Server::stats`](crate::Server::stats) and its snapshot, [`Stats`].
//!
//! The counters of the message path are atomics spread over a few cache lines by peer, so that
//! peers on different threads do not contend for one line; nothing on that path takes a lock.
//! Closes and refused upgrades, which are rare, are counted by code under a lock.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::peer::lock;
use crate::Transport;

/// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
///
/// Counts run from the server's start. It serializes as the JSON object the fixture's
/// `GET /stats` answers, with camel-case names, and codes and statuses as object keys:
///
/// ```json
/// {"peers": 2, "websocketPeers": 2, "ssePeers": 0, "messagesIn": 10, "messagesOut": 30,
///  "bytesIn": 120, "bytesOut": 360, "closes": {"1000": 1}, "rejected": {"401": 1},
///  "relaysSent": 0, "relaysReceived": 0, "relaysDropped": 0}
/// ```
///
/// The counters are read one after another, not all at one instant: under traffic, two of them
/// may be a few messages apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// Peers connected now, over both transports: those [`Server::peers`](crate::Server::peers)
    /// lists.
    pub peers: u64,
    /// Peers connected now over WebSocket.
    pub websocket_peers: u64,
    /// Peers connected now over the SSE transport.
    pub sse_peers: u64,
    /// Data messages received from peers and handed to the `message` hook.
    pub messages_in: u64,
    /// Data messages queued for peers: by [`Peer::send`](crate::Peer::send), and by a publish,
    /// which counts once per subscriber it reaches (a publish to k subscribers counts k).
    pub messages_out: u64,
    /// Payload bytes of [`messages_in`](Self::messages_in).
    pub bytes_in: u64,
    /// Payload bytes of [`messages_out`](Self::messages_out).
    pub bytes_out: u64,
    /// Connections ended, by the close code the `close` hook saw (1006 for a dropped
    /// connection; 1005 for an SSE stream that ended without a close).
    pub closes: BTreeMap<u16, u64>,
    /// Upgrade requests (WebSocket handshakes and SSE streams) refused, by HTTP status: by the
    /// `upgrade` hook, a limit (`503`, `429`, `403`, `431`), or a broken handshake (`400`,
    /// `426`, …).
    pub rejected: BTreeMap<u16, u64>,
    /// Publishes handed from this instance to the backplane driver.
    pub relays_sent: u64,
    /// Relays from other instances delivered here by the backplane driver.
    pub relays_received: u64,
    /// Publishes not relayed because the backplane queue was full.
    pub relays_dropped: u64,
}

impl Stats {
    /// The number of closes with `code`.
    pub fn closes_with(&self, code: u16) -> u64 {
        self.closes.get(&code).copied().unwrap_or(0)
    }

    /// The number of upgrades refused with `status`.
    pub fn rejected_with(&self, status: u16) -> u64 {
        self.rejected.get(&status).copied().unwrap_or(0)
    }
}

/// How many cache lines the message counters are spread over.
const STRIPES: usize = 8;

/// The message counters of one stripe, alone on their cache line.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// The counters of one server.
#[derive(Default)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
    websocket_peers: AtomicU64,
    sse_peers: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
    rejected: Mutex<BTreeMap<u16, u64>>,
    /// Kept out of the `metrics` facade: the counters of a client's connections, which are not
    /// the peers of any server the process serves.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    unreported: bool,
}

/// The backplane's counters, kept by its queue.
#[derive(Default, Debug)]
pub(crate) struct RelayCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Counters {
    /// Counters that [`Server::stats`](crate::Server::stats) reads but the `metrics` facade
    /// never sees.
    pub(crate) fn unreported() -> Self {
        Self {
            unreported: true,
            ..Self::default()
        }
    }

    fn stripe(&self, key: u64) -> &Stripe {
        &self.stripes[key as usize % STRIPES]
    }

    fn peers(&self, transport: Transport) -> &AtomicU64 {
        match transport {
            Transport::WebSocket => &self.websocket_peers,
            Transport::Sse => &self.sse_peers,
        }
    }

    /// A peer joined the registry.
    pub(crate) fn joined(&self, transport: Transport) {
        self.peers(transport).fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        if !self.unreported {
            metrics::gauge!("anyws_peers").increment(1.0);
        }
    }

    /// A peer left the registry.
    pub(crate) fn left(&self, transport: Transport) {
        self.peers(transport).fetch_sub(1, Relaxed);
        #[cfg(feature = "metrics")]
        if !self.unreported {
            metrics::gauge!("anyws_peers").decrement(1.0);
        }
    }

    /// The peer with `key` sent a data message of `len` bytes.
    #[inline]
    pub(crate) fn received(&self, key: u64, len: usize) {
        let stripe = self.stripe(key);
        stripe.messages_in.fetch_add(1, Relaxed);
        stripe.bytes_in.fetch_add(len as u64, Relaxed);
        #[cfg(feature = "metrics")]
        if !self.unreported {
            metrics::counter!("anyws_messages_received_total").increment(1);
            metrics::counter!("anyws_received_bytes_total").increment(len as u64);
        }
    }

    /// `count` messages of `len` bytes each were queued, on behalf of the peer with `key` (or
    /// of the server, key 0).
    #[inline]
    pub(crate) fn sent(&self, key: u64, count: u64, len: usize) {
        if count == 0 {
            return;
        }
        let stripe = self.stripe(key);
        stripe.messages_out.fetch_add(count, Relaxed);
        stripe.bytes_out.fetch_add(count * len as u64, Relaxed);
        #[cfg(feature = "metrics")]
        if !self.unreported {
            metrics::counter!("anyws_messages_sent_total").increment(count);
            metrics::counter!("anyws_sent_bytes_total").increment(count * len as u64);
        }
    }

    /// A publish reached `count` local subscribers.
    #[inline]
    pub(crate) fn fanned_out(&self, _count: u64) {
        #[cfg(feature = "metrics")]
        metrics::histogram!("anyws_publish_fanout").record(_count as f64);
    }

    /// A connection ended with `code`.
    pub(crate) fn closed(&self, code: u16) {
        *lock(&self.closes).entry(code).or_default() += 1;
        #[cfg(feature = "metrics")]
        if !self.unreported {
            count_close(code);
        }
    }

    /// An upgrade was refused with `status`.
    pub(crate) fn rejected(&self, status: u16) {
        *lock(&self.rejected).entry(status).or_default() += 1;
        #[cfg(feature = "metrics")]
        metrics::counter!("anyws_rejected_upgrades_total", "status" => status.to_string())
            .increment(1);
    }

    /// An upgrade was accepted after `seconds` of handshake (checks, resolver and `upgrade`
    /// hook).
    pub(crate) fn handshake_took(&self, _seconds: f64) {
        #[cfg(feature = "metrics")]
        metrics::histogram!("anyws_handshake_seconds").record(_seconds);
    }

    /// The snapshot, with the backplane's counters when there is one.
    pub(crate) fn snapshot(&self, relays: Option<&RelayCounters>) -> Stats {
        let mut stats = Stats {
            websocket_peers: self.websocket_peers.load(Relaxed),
            sse_peers: self.sse_peers.load(Relaxed),
            closes: lock(&self.closes).clone(),
            rejected: lock(&self.rejected).clone(),
            ..Stats::default()
        };
        stats.peers = stats.websocket_peers + stats.sse_peers;
        for stripe in &self.stripes {
            stats.messages_in += stripe.messages_in.load(Relaxed);
            stats.bytes_in += stripe.bytes_in.load(Relaxed);
            stats.messages_out += stripe.messages_out.load(Relaxed);
            stats.bytes_out += stripe.bytes_out.load(Relaxed);
        }
        if let Some(relays) = relays {
            stats.relays_sent = relays.sent.load(Relaxed);
            stats.relays_received = relays.received.load(Relaxed);
            stats.relays_dropped = relays.dropped.load(Relaxed);
        }
        stats
    }
}

impl RelayCounters {
    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("anyws_backplane_relays_sent_total").increment(1);
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("anyws_backplane_relays_received_total").increment(1);
    }

    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("anyws_backplane_relays_dropped_total").increment(1);
    }
}

/// Describes every metric anyws reports (unit and help text) to the installed `metrics`
/// recorder, and registers each at zero so that a scrape lists them before anything happened.
///
/// [`ServerBuilder::build`](crate::ServerBuilder::build) calls this; call it again after
/// installing a recorder when the server was built first.
///
/// | name | kind | unit | what |
/// | --- | --- | --- | --- |
/// | `anyws_peers` | gauge | peers | peers connected now (both transports) |
/// | `anyws_messages_received_total` | counter | messages | data messages received from peers |
/// | `anyws_messages_sent_total` | counter | messages | data messages queued for peers (a publish to k counts k) |
/// | `anyws_received_bytes_total` | counter | bytes | payload bytes received |
/// | `anyws_sent_bytes_total` | counter | bytes | payload bytes queued |
/// | `anyws_closes_total{code}` | counter | connections | connections ended, by close code |
/// | `anyws_rejected_upgrades_total{status}` | counter | requests | upgrades refused, by HTTP status |
/// | `anyws_backplane_relays_sent_total` | counter | relays | publishes handed to the backplane |
/// | `anyws_backplane_relays_received_total` | counter | relays | relays from other instances delivered |
/// | `anyws_backplane_relays_dropped_total` | counter | relays | publishes dropped on a full backplane queue |
/// | `anyws_publish_fanout` | histogram | peers | local subscribers one publish reached |
/// | `anyws_handshake_seconds` | histogram | seconds | accepted upgrades: checks, resolver and `upgrade` hook |
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    use metrics::Unit;
    let counters: [(&'static str, Unit, &'static str); 7] = [
        (
            "anyws_messages_received_total",
            Unit::Count,
            "Data messages received from peers.",
        ),
        (
            "anyws_messages_sent_total",
            Unit::Count,
            "Data messages queued for peers; a publish to k subscribers counts k.",
        ),
        (
            "anyws_received_bytes_total",
            Unit::Bytes,
            "Payload bytes received from peers.",
        ),
        (
            "anyws_sent_bytes_total",
            Unit::Bytes,
            "Payload bytes queued for peers.",
        ),
        (
            "anyws_backplane_relays_sent_total",
            Unit::Count,
            "Publishes handed to the backplane driver.",
        ),
        (
            "anyws_backplane_relays_received_total",
            Unit::Count,
            "Relays from other instances delivered here.",
        ),
        (
            "anyws_backplane_relays_dropped_total",
            Unit::Count,
            "Publishes not relayed because the backplane queue was full.",
        ),
    ];
    for (name, unit, help) in counters {
        metrics::describe_counter!(name, unit, help);
        metrics::counter!(name).increment(0);
    }
    metrics::describe_counter!(
        "anyws_closes_total",
        Unit::Count,
        "Connections ended, by close code."
    );
    metrics::describe_counter!(
        "anyws_rejected_upgrades_total",
        Unit::Count,
        "Upgrade requests refused, by HTTP status."
    );
    metrics::describe_gauge!(
        "anyws_peers",
        Unit::Count,
        "Peers connected now, over both transports."
    );
    metrics::gauge!("anyws_peers").increment(0.0);
    metrics::describe_histogram!(
        "anyws_publish_fanout",
        Unit::Count,
        "Local subscribers one publish reached."
    );
    metrics::describe_histogram!(
        "anyws_handshake_seconds",
        Unit::Seconds,
        "Time from an upgrade request to its acceptance: checks, resolver and upgrade hook."
    );
}

/// Counts a close with `code` in `anyws_closes_total`. The codes of RFC 6455 (1000–1015) have
/// their keys made once, so that a close allocates nothing here; other codes label a key made
/// for them.
#[cfg(feature = "metrics")]
fn count_close(code: u16) {
    use metrics::{Key, Label, Level, Metadata};
    const NAME: &str = "anyws_closes_total";
    macro_rules! keys {
        ($($code:literal),*) => {
            [$({
                static LABELS: [Label; 1] = [Label::from_static_parts("code", stringify!($code))];
                Key::from_static_parts(NAME, &LABELS)
            }),*]
        };
    }
    static KEYS: [Key; 16] = keys!(
        1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        1015
    );
    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
    match KEYS.get(usize::from(code.wrapping_sub(1000))) {
        Some(key) => {
            metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
                .increment(1);
        }
        None => metrics::counter!(NAME, "code" => code.to_string()).increment(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_the_stripes_and_serializes_codes_as_keys() {
        let counters = Counters::default();
        counters.joined(Transport::WebSocket);
        counters.joined(Transport::Sse);
        counters.joined(Transport::WebSocket);
        counters.left(Transport::WebSocket);
        for key in 0..20 {
            counters.received(key, 3);
        }
        counters.sent(1, 4, 10);
        counters.sent(2, 0, 10);
        counters.closed(1000);
        counters.closed(1000);
        counters.rejected(401);
        let stats = counters.snapshot(None);
        assert_eq!(
            (stats.peers, stats.websocket_peers, stats.sse_peers),
            (2, 1, 1)
        );
        assert_eq!((stats.messages_in, stats.bytes_in), (20, 60));
        assert_eq!((stats.messages_out, stats.bytes_out), (4, 40));
        assert_eq!(stats.closes_with(1000), 2);
        assert_eq!(stats.rejected_with(401), 1);
        assert_eq!(stats.rejected_with(503), 0);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["closes"]["1000"], 2);
        assert_eq!(json["rejected"]["401"], 1);
        assert_eq!(json["messagesIn"], 20);
    }
}
