//! A WebSocket proxy as [`Hooks`]: each peer is joined to a client connection to an upstream
//! server, with backpressure both ways.
//!
//! ```no_run
//! # fn run(runtime: std::sync::Arc<dyn anyws_core::Runtime>,
//! #        connector: impl anyws_core::client::Connector) {
//! use anyws_core::proxy::Proxy;
//! use anyws_core::ServerBuilder;
//!
//! // Every peer of this server talks to ws://127.0.0.1:9000 at the same path and query.
//! // (The adapters wrap this as `anyws_tokio::proxy(url)` and the like.)
//! let proxy = Proxy::new("ws://127.0.0.1:9000", runtime.clone(), connector);
//! let server = ServerBuilder::new(proxy).build(runtime);
//! # let _ = server; }
//! ```
//!
//! What the peer sends goes to the upstream, and what the upstream sends to the peer, text as
//! text and binary as binary. The first subprotocol the peer offers is selected and offered to
//! the upstream; extra headers can be added to the upstream request. A close on either side
//! closes the other with the same code (1000 for a connection that dropped). An upstream that
//! cannot be reached within the connect timeout (10 s) closes the peer with 1011; what the peer
//! sends meanwhile waits, up to 1 MiB, past which the peer is closed with 1009.
//!
//! Backpressure: a message is handed on only once the receiving side's send queue is under
//! 64 KiB, and the next one is not read before, so a slow reader on one side slows the reading
//! on the other instead of filling memory.

use async_trait::async_trait;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{ClientBuilder, Connector};
use crate::peer::lock;
use crate::ws::is_valid_close_code;
use crate::{close_code, Accept, CloseInfo, Hooks, Message, Peer, Rejection, Request, Runtime};

/// A send queue above this many bytes makes the other side wait before handing on more.
const DRAIN_THRESHOLD: usize = 64 * 1024;

/// Picks the upstream URL of a request; `None` refuses the upgrade with `502`.
type TargetFn = dyn Fn(&Request) -> Option<String> + Send + Sync;

/// Hooks that forward every peer to an upstream WebSocket server; see the
/// [module docs](self).
///
/// Defaults: the upstream at the peer's own path and query, no extra header, a connect timeout
/// of 10 s (then 1011), at most 1 MiB waiting for the upstream (then 1009), and the client
/// defaults of [`ClientBuilder`] otherwise (permessage-deflate offered).
pub struct Proxy {
    target: Box<TargetFn>,
    runtime: Arc<dyn Runtime>,
    connector: Arc<dyn Connector>,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
    max_pending_bytes: usize,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("headers", &self.headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Forwards each peer to `upstream` (`ws://` or `wss://`, without a path) at the peer's
    /// own path and query, connecting with `connector` on `runtime`.
    pub fn new(
        upstream: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        connector: impl Connector,
    ) -> Self {
        let base = upstream.into().trim_end_matches('/').to_owned();
        Self::with_target(
            move |request: &Request| {
                let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                Some(format!("{base}{path}"))
            },
            runtime,
            connector,
        )
    }

    /// Forwards each peer to the URL `target` picks for its request, such as by path or by
    /// a header; `None` refuses the upgrade with `502 Bad Gateway`.
    pub fn with_target(
        target: impl Fn(&Request) -> Option<String> + Send + Sync + 'static,
        runtime: Arc<dyn Runtime>,
        connector: impl Connector,
    ) -> Self {
        Self {
            target: Box::new(target),
            runtime,
            connector: Arc::new(connector),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_pending_bytes: 1 << 20,
        }
    }

    /// Adds a header to every upstream request, such as a shared secret. Default: none.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long the upstream has to answer before the peer is closed with 1011. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many bytes of the peer's messages may wait for the upstream to connect before the
    /// peer is closed with 1009. Default: 1 MiB.
    pub fn max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
    }
}

/// One peer's side of the join, the peer's context.
#[derive(Default)]
struct Link {
    url: String,
    protocol: Option<String>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The upstream connection, once open.
    upstream: Option<Peer>,
    /// The peer's messages while the upstream connects.
    pending: VecDeque<Message>,
    pending_bytes: usize,
    /// The peer is gone: the upstream is closed as soon as it opens.
    closed: Option<u16>,
}

/// The close code to pass on: the same, when it may be sent; 1000 otherwise (1005, 1006).
fn pass_on(code: u16) -> u16 {
    if is_valid_close_code(code) {
        code
    } else {
        close_code::NORMAL
    }
}

/// Hands `message` to `to`, waiting first until `to` has drained below the threshold: the
/// hook that calls this holds up the reading of the other side meanwhile.
async fn forward(to: &Peer, message: Message) {
    to.wait_for_drain(DRAIN_THRESHOLD).await;
    let _ = to.send(message);
}

#[async_trait]
impl Hooks for Proxy {
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        let Some(url) = (self.target)(request) else {
            return Err(Rejection::new(http::StatusCode::BAD_GATEWAY));
        };
        let protocol = request.protocols().next().map(str::to_owned);
        let mut accept = Accept::new();
        if let Some(protocol) = &protocol {
            accept = accept.protocol(protocol.clone());
        }
        Ok(accept.context(Link {
            url,
            protocol,
            state: Mutex::default(),
        }))
    }

    async fn open(&self, peer: &Peer) {
        let Some(link) = peer.context::<Link>() else {
            return;
        };
        let upstream = Upstream {
            downstream: peer.clone(),
        };
        let mut builder = ClientBuilder::new(link.url.clone(), upstream)
            .connect_timeout(self.connect_timeout)
            .protocols(link.protocol.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let (runtime, connector, peer) =
            (self.runtime.clone(), self.connector.clone(), peer.clone());
        self.runtime.spawn(Box::pin(async move {
            if let Err(error) = builder.connect_with(runtime, connector).await {
                tracing::debug!(target: "anyws::proxy", %error, "upstream unavailable");
                peer.close(close_code::INTERNAL_ERROR, "upstream unavailable");
            }
        }));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let Some(link) = peer.context::<Link>() else {
            return;
        };
        let upstream = {
            let mut state = lock(&link.state);
            match &state.upstream {
                Some(upstream) => upstream.clone(),
                None => {
                    state.pending_bytes += message.len();
                    state.pending.push_back(message);
                    if state.pending_bytes > self.max_pending_bytes {
                        state.pending = VecDeque::new();
                        drop(state);
                        peer.close(
                            close_code::MESSAGE_TOO_BIG,
                            "too much waiting for the upstream",
                        );
                    }
                    return;
                }
            }
        };
        forward(&upstream, message).await;
    }

    async fn close(&self, peer: &Peer, info: CloseInfo) {
        let Some(link) = peer.context::<Link>() else {
            return;
        };
        let upstream = {
            let mut state = lock(&link.state);
            state.closed = Some(pass_on(info.code));
            state.pending = VecDeque::new();
            state.upstream.take()
        };
        if let Some(upstream) = upstream {
            upstream.close(pass_on(info.code), &info.reason);
        }
    }
}

/// The hooks of the upstream connection of one peer.
struct Upstream {
    downstream: Peer,
}

#[async_trait]
impl Hooks for Upstream {
    async fn open(&self, upstream: &Peer) {
        let Some(link) = self.downstream.context::<Link>() else {
            return;
        };
        // What waited goes first, in order; the link opens to direct forwarding only once
        // nothing waits any more, so that a message arriving meanwhile queues behind.
        loop {
            let batch = {
                let mut state = lock(&link.state);
                if let Some(code) = state.closed {
                    drop(state);
                    upstream.close(code, "");
                    return;
                }
                if state.pending.is_empty() {
                    state.upstream = Some(upstream.clone());
                    state.pending_bytes = 0;
                    return;
                }
                state.pending_bytes = 0;
                std::mem::take(&mut state.pending)
            };
            for message in batch {
                forward(upstream, message).await;
            }
        }
    }

    async fn message(&self, _upstream: &Peer, message: Message) {
        forward(&self.downstream, message).await;
    }

    async fn close(&self, _upstream: &Peer, info: CloseInfo) {
        if let Some(link) = self.downstream.context::<Link>() {
            lock(&link.state).upstream = None;
        }
        self.downstream.close(pass_on(info.code), &info.reason);
    }
}
