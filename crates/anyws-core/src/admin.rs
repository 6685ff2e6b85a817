//! The admin dashboard: one self-contained page with live counts, a chart of message rates and
//! the peers, fed by an event stream of [`Server::stats`]. Runtime-free: it answers requests
//! that the application routes to it, on any adapter or framework.
//!
//! ```
//! # use anyws_core::admin::{Admin, AdminResponse};
//! # fn routes(server: anyws_core::Server, request: http::Request<()>) {
//! let admin = Admin::new(server, "a long random token");
//! match admin.answer(request.method(), request.uri(), request.headers()) {
//!     Some(AdminResponse::Full(response)) => { /* send it */ }
//!     Some(AdminResponse::Events(stream)) => { /* serve the event stream */ }
//!     None => { /* not a dashboard path: the application's own routes */ }
//!     Some(_) => {}
//! }
//! # }
//! ```
//!
//! # Routes
//!
//! Under its [path](Admin::path) (default `/admin`):
//!
//! - `GET /admin`: the page (HTML, inline script and style, nothing loaded from the network);
//! - `GET /admin/events`: an event stream with one `stats` event a second: the snapshot of
//!   [`Server::stats`] and the peers (id, namespace, remote address, topics, buffered amount,
//!   age), at most [`MAX_LISTED_PEERS`] of them;
//! - `POST /admin/close?id=PEER`: closes that peer with code 4000 (`204`; `404` when no such
//!   peer is connected).
//!
//! # Authentication
//!
//! Every route needs the token, as `?token=TOKEN` or `Authorization: Bearer TOKEN`; without it
//! the answer is `401`. The page passes the token it was opened with to its event stream and,
//! in the `Authorization` header, to the close action: no cookie is involved, so another site
//! cannot make a browser close a peer. An empty token matches nothing. To put the dashboard
//! behind your own authentication instead, check the user first and give `answer` a request
//! that carries the token.
//!
//! # Cost
//!
//! An open dashboard costs the server one event stream with a 64 KiB buffer and a task that
//! wakes once a second; at most [`Admin::max_streams`] dashboards stream at once (default 8),
//! more get `503`.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::sse::{Event, EventStream};
use crate::{PeerId, Server};

/// The page, served as is.
const PAGE: &str = include_str!("admin.html");

/// The most peers one `stats` event lists; the count in the event is always the full one.
pub const MAX_LISTED_PEERS: usize = 500;

/// The close code the dashboard's close button sends.
pub const CLOSE_CODE: u16 = 4000;

/// How often the event stream sends a snapshot.
const INTERVAL: Duration = Duration::from_secs(1);

/// The admin dashboard of one server; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    server: Server,
    token: Arc<str>,
    path: Arc<str>,
    max_streams: usize,
    streams: Arc<AtomicUsize>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("path", &self.path)
            .field("max_streams", &self.max_streams)
            .finish_non_exhaustive()
    }
}

/// What [`Admin::answer`] gives for a dashboard path.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminResponse {
    /// A whole response: the page, `204` for a close, or an error such as `401`.
    Full(Response<Bytes>),
    /// The event stream of snapshots; every adapter serves an [`EventStream`] (for hyper,
    /// `anyws::hyper::event_stream_response`).
    Events(Response<EventStream>),
}

impl Admin {
    /// The dashboard of `server`, at `/admin`, for requests that carry `token`.
    pub fn new(server: Server, token: impl Into<String>) -> Self {
        Self {
            server,
            token: token.into().into(),
            path: "/admin".into(),
            max_streams: 8,
            streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serves the dashboard at `path` instead of `/admin` (its event stream and close action
    /// below it). Default: `/admin`.
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.trim_end_matches('/').into();
        self
    }

    /// How many dashboards may stream at once; more get `503`. Default: 8.
    pub fn max_streams(mut self, streams: usize) -> Self {
        self.max_streams = streams;
        self
    }

    /// Answers a request for the dashboard, or `None` when `uri`'s path is not one of its
    /// routes (the application answers it). See the [module docs](self) for the routes.
    pub fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<AdminResponse> {
        let rest = uri.path().strip_prefix(&*self.path)?;
        let route = match rest {
            "" | "/" => Route::Page,
            "/events" => Route::Events,
            "/close" => Route::Close,
            _ => return None,
        };
        if !self.authorized(uri, headers) {
            let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"anyws admin\""),
            );
            return Some(AdminResponse::Full(response));
        }
        Some(match (route, method) {
            (Route::Page, &Method::GET) => AdminResponse::Full(page()),
            (Route::Events, &Method::GET) => self.events(),
            (Route::Close, &Method::POST) => AdminResponse::Full(self.close(uri)),
            _ => AdminResponse::Full(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
        })
    }

    fn authorized(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        if self.token.is_empty() {
            return false;
        }
        let bearer = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer "))
            .any(|t| same(t.trim(), &self.token));
        bearer || query(uri, "token").is_some_and(|t| same(&t, &self.token))
    }

    fn close(&self, uri: &Uri) -> Response<Bytes> {
        let Some(id) = query(uri, "id").and_then(|id| PeerId::parse(&id)) else {
            return text(StatusCode::BAD_REQUEST, "expected ?id=PEER");
        };
        match self.server.peers().into_iter().find(|p| p.id() == id) {
            Some(peer) => {
                tracing::info!(target: "anyws", peer = %id, "peer closed from the admin dashboard");
                peer.close(CLOSE_CODE, "closed by admin");
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            None => text(StatusCode::NOT_FOUND, "no such peer"),
        }
    }

    fn events(&self) -> AdminResponse {
        let taken = self
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_streams).then_some(n + 1)
            });
        if taken.is_err() {
            return AdminResponse::Full(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many dashboards open",
            ));
        }
        let slot = StreamSlot(self.streams.clone());
        let runtime = self.server.runtime().clone();
        let (sender, stream) = EventStream::builder(runtime.clone()).build();
        let server = self.server.clone();
        runtime.clone().spawn(Box::pin(async move {
            let _slot = slot;
            loop {
                // A client that does not read holds this send back at the stream's buffer.
                let event = Event::data(snapshot(&server)).event("stats");
                if sender.send(event).await.is_err() || server.is_shutting_down() {
                    break;
                }
                let deadline = runtime.now() + INTERVAL;
                let timer = crate::runtime::sleep_until(&*runtime, deadline);
                let closed = sender.closed();
                futures_util::pin_mut!(timer, closed);
                if let futures_util::future::Either::Right(_) =
                    futures_util::future::select(timer, closed).await
                {
                    break;
                }
            }
            sender.close();
        }));
        AdminResponse::Events(stream.into_response())
    }
}

enum Route {
    Page,
    Events,
    Close,
}

/// A place among the dashboards streaming, given back when the stream's task ends.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One `stats` event's data: the counters and the peers, as JSON.
fn snapshot(server: &Server) -> String {
    let peers: Vec<serde_json::Value> = server
        .peers()
        .iter()
        .take(MAX_LISTED_PEERS)
        .map(|peer| {
            serde_json::json!({
                "id": peer.id().to_string(),
                "namespace": peer.namespace(),
                "remoteAddress": peer.remote_addr().map(|a| a.ip().to_string()),
                "transport": crate::observe::transport_name(peer.transport()),
                "topics": peer.topics(),
                "bufferedAmount": peer.buffered_amount(),
                "ageMs": peer.inner.age().as_millis() as u64,
            })
        })
        .collect();
    serde_json::json!({ "stats": server.stats(), "peers": peers }).to_string()
}

/// The value of `key` in `uri`'s query, decoded.
fn query(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Compares two tokens in time that depends on their lengths only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn page() -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(PAGE.as_bytes()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing from the network, no framing by other sites.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("secret", "secret"));
        assert!(!same("secret", "secreT"));
        assert!(!same("secret", "secret2"));
        assert!(!same("", "x"));
    }
}
