//! The `Hooks` trait: a WebSocket handler written once, run by every adapter and transport.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

use crate::{Accept, Error, Message, Peer, Rejection, Request};

/// How and why a peer went away, as passed to [`Hooks::close`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The close code: the one the client sent, the one the server sent, or
    /// [`close_code::ABNORMAL`](crate::close_code::ABNORMAL) (1006) when the connection dropped
    /// without a close frame.
    pub code: u16,
    /// The close reason, possibly empty.
    pub reason: String,
}

impl CloseInfo {
    /// A close with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A WebSocket handler: what happens on upgrade, open, message, close, error, drain, ping and
/// pong.
///
/// Every method has a default body, so an implementation writes only what it needs. The trait is
/// object-safe; servers hold handlers as `Arc<dyn Hooks>`.
///
/// The hooks of one peer run one at a time, in the order their events happened: a peer's
/// messages reach [`Hooks::message`] in the order they arrived, and the next one is read only
/// when the hook for the previous one has returned. While a hook runs, the peer's outgoing
/// messages keep flowing, so a hook may await [`Peer::wait_for_drain`].
///
/// A panic in a hook closes that peer with 1011 (internal error) and is reported to
/// [`Hooks::error`]; other peers and the server carry on. A panic in `upgrade` answers `500`.
///
/// ```
/// use anyws_core::{async_trait, Hooks, Message, Peer};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Hooks for Echo {
///     async fn message(&self, peer: &Peer, message: Message) {
///         let _ = peer.send(message);
///     }
/// }
/// ```
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Decides whether `request` becomes a peer. The default accepts every request with no extra
    /// headers, no subprotocol and the URL path as namespace.
    ///
    /// Return [`Rejection`] to answer with any HTTP response instead, byte for byte as built;
    /// [`Rejection::internal`] turns an error into a `500`.
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        let _ = request;
        Ok(Accept::new())
    }

    /// The peer is connected and may send and receive.
    async fn open(&self, peer: &Peer) {
        let _ = peer;
    }

    /// The peer sent a text or binary message, already reassembled from its fragments.
    async fn message(&self, peer: &Peer, message: Message) {
        let _ = (peer, message);
    }

    /// The peer is gone. Runs exactly once for every peer that was opened, after it has left
    /// its topics and the server's peer list.
    async fn close(&self, peer: &Peer, info: CloseInfo) {
        let _ = (peer, info);
    }

    /// Something went wrong with the peer: a protocol violation, an I/O error, a limit, or a
    /// panicking hook. [`Hooks::close`] follows.
    async fn error(&self, peer: &Peer, error: Error) {
        let _ = (peer, error);
    }

    /// The peer's outgoing buffer had filled faster than the socket could take it and has now
    /// been written out completely.
    async fn drain(&self, peer: &Peer) {
        let _ = peer;
    }

    /// The peer sent a ping frame with `payload` (at most 125 bytes). The server answers every
    /// ping with a pong of the same payload by itself, whatever this hook does. WebSocket only:
    /// SSE has no ping frames.
    async fn ping(&self, peer: &Peer, payload: Bytes) {
        let _ = (peer, payload);
    }

    /// The peer sent a pong frame with `payload`: the answer to a [`Peer::ping`] or to one of
    /// the server's automatic pings (see [`Limits::ping_interval`](crate::Limits::ping_interval)),
    /// or a heartbeat of the client's own. WebSocket only.
    async fn pong(&self, peer: &Peer, payload: Bytes) {
        let _ = (peer, payload);
    }
}

#[async_trait]
impl<H: Hooks + ?Sized> Hooks for Arc<H> {
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        (**self).upgrade(request).await
    }
    async fn open(&self, peer: &Peer) {
        (**self).open(peer).await
    }
    async fn message(&self, peer: &Peer, message: Message) {
        (**self).message(peer, message).await
    }
    async fn close(&self, peer: &Peer, info: CloseInfo) {
        (**self).close(peer, info).await
    }
    async fn error(&self, peer: &Peer, error: Error) {
        (**self).error(peer, error).await
    }
    async fn drain(&self, peer: &Peer) {
        (**self).drain(peer).await
    }
    async fn ping(&self, peer: &Peer, payload: Bytes) {
        (**self).ping(peer, payload).await
    }
    async fn pong(&self, peer: &Peer, payload: Bytes) {
        (**self).pong(peer, payload).await
    }
}

/// Chooses the hooks for a request, so that many handlers share one server, as routes do.
///
/// `None` answers `404 Not Found` without upgrading. A resolver may attach data to the request's
/// extensions for the hooks to read, as [`Router`](crate::Router) does with path parameters. Any
/// `Fn(&mut Request) -> Option<Arc<dyn Hooks>>` is a resolver.
///
/// ```
/// use std::sync::Arc;
/// use anyws_core::{Hooks, Request};
///
/// struct Chat;
/// impl Hooks for Chat {}
///
/// let chat: Arc<dyn Hooks> = Arc::new(Chat);
/// let resolver = move |request: &mut Request| -> Option<Arc<dyn Hooks>> {
///     request.path().starts_with("/chat").then(|| chat.clone())
/// };
/// # let _ = anyws_core::ServerBuilder::with_resolver(resolver);
/// ```
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The hooks that handle `request`, or `None` for `404`.
    async fn resolve(&self, request: &mut Request) -> Option<Arc<dyn Hooks>>;
}

#[async_trait]
impl<F> Resolver for F
where
    F: Fn(&mut Request) -> Option<Arc<dyn Hooks>> + Send + Sync + 'static,
{
    async fn resolve(&self, request: &mut Request) -> Option<Arc<dyn Hooks>> {
        self(request)
    }
}

/// The resolver of a server with a single handler: every request goes to it.
pub(crate) struct Single(pub(crate) Arc<dyn Hooks>);

#[async_trait]
impl Resolver for Single {
    async fn resolve(&self, _request: &mut Request) -> Option<Arc<dyn Hooks>> {
        Some(self.0.clone())
    }
}
