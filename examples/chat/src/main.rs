//! A chat room: one HTML page, one WebSocket, and anyws pub/sub.
//!
//! Shows how a [`Hooks`] implementation uses topics: every page subscribes to the topic `chat`,
//! a message goes back to its sender with [`Peer::send`] and to everyone else with
//! [`Peer::publish`], so each page shows each line exactly once. The page itself is served by the
//! same listener through [`serve`](anyws::tokio::serve)'s fallback.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p chat
//! ```
//!
//! then open <http://127.0.0.1:3000> in two tabs. With `TLS_CERT=cert.pem TLS_KEY=key.pem` it
//! serves HTTPS instead, and a browser opens its WebSocket on the page's HTTP/2 connection
//! (RFC 8441); the server prints which HTTP version each peer came over. The port comes from `PORT` (default 3000) and
//! the address from `HOST` (default 127.0.0.1), e.g. `HOST=0.0.0.0 PORT=8080 cargo run --release -p chat`.
//!
//! The page connects to `ws://<host>/_ws`. Any path upgrades, but a peer's namespace is its URL
//! path and `publish` stays inside a namespace, so all pages use the same path to share a room.
//! It shows who joins and leaves, and reconnects by itself (with backoff up to 10 s) when the
//! connection drops, e.g. across a server restart. Its WebSocket negotiates permessage-deflate
//! ([`Deflate::shared`](anyws::Deflate::shared)): lines of 128 bytes or more travel
//! compressed both ways, each published line compressed once for every page.
//!
//! With `?transport=sse` (<http://127.0.0.1:3000/?transport=sse>) the page speaks crossws's
//! Server-Sent Events protocol on the same URL instead: an `EventSource` receives, and each
//! message goes up as one `POST` carrying the peer id from the `crossws-id` event. The server
//! side of that protocol is in progress; until it lands, only the WebSocket page connects.
//!
//! `tests/browser.rs` checks all of this in headless Chromium.

use anyws::{async_trait, CloseInfo, Hooks, Message, Peer};
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;

/// The page, with its CSS and JavaScript inline: it needs no network besides this server.
const INDEX_HTML: &str = include_str!("index.html");

/// The topic every page subscribes to.
const TOPIC: &str = "chat";

/// Longest chat line accepted, in characters; longer ones are cut.
const MAX_CHARS: usize = 1000;

/// The chat room's hooks.
struct Chat;

/// A short, readable name for a peer: the first 8 hex digits of its id.
fn short_id(peer: &Peer) -> String {
    peer.id().to_string().chars().take(8).collect()
}

#[async_trait]
impl Hooks for Chat {
    async fn open(&self, peer: &Peer) {
        peer.subscribe(TOPIC);
        // Over HTTPS a browser that holds an HTTP/2 connection opens its WebSocket on it.
        println!(
            "{} joined over {:?}",
            short_id(peer),
            peer.request().version()
        );
        let line = format!("{} joined", short_id(peer));
        // The newcomer sees its own join line too, so it learns its name.
        let _ = peer.send(line.as_str());
        peer.publish(TOPIC, line);
    }

    async fn message(&self, peer: &Peer, message: Message) {
        // Binary messages and blank lines are ignored.
        if !message.is_text() {
            return;
        }
        let Ok(text) = message.text() else {
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let text: String = text.chars().take(MAX_CHARS).collect();
        let line = format!("{}: {text}", short_id(peer));
        // Back to the sender, then to every other subscriber: `publish` skips the publisher.
        let _ = peer.send(line.as_str());
        peer.publish(TOPIC, line);
    }

    async fn close(&self, peer: &Peer, _info: CloseInfo) {
        // The peer has already left its topics; publishing still reaches the rest of its
        // namespace.
        peer.publish(TOPIC, format!("{} left", short_id(peer)));
    }
}

/// Answers plain HTTP: the page at `/`, `404` elsewhere.
async fn page(request: hyper::Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path != "/" && path != "/index.html" {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::from_static(INDEX_HTML.as_bytes())))
        .expect("static response parts are valid")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse::<u16>().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={port:?}: {error}"),
            )
        })?,
        Err(_) => 3000,
    };

    // With `TLS_CERT` and `TLS_KEY` (PEM files), the page and its WebSocket go over HTTPS, and
    // browsers speak HTTP/2 to it.
    let tls = match (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY")) {
        (Some(cert), Some(key)) => Some(anyws::tls::load_pem(cert, key).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, error.to_string())
        })?),
        (None, None) => None,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TLS_CERT and TLS_KEY go together",
            ))
        }
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("chat demo on {scheme}://{}", listener.local_addr()?);

    // The SSE transport serves the same hooks to pages opened with `?transport=sse`; their peers
    // share the room with the WebSocket ones. Browsers offer permessage-deflate; in shared mode
    // a line of 128 bytes or more is compressed once for every page it goes to, and a page costs
    // no compression memory between lines.
    let server = anyws::ServerBuilder::new(Chat)
        .sse(true)
        .deflate(anyws::Deflate::shared())
        .build(anyws::tokio::runtime());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        Some(tls) => {
            anyws::tokio::serve_tls(listener, tls, server)
                .fallback(page)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            anyws::tokio::serve(listener, server)
                .fallback(page)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
