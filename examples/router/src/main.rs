//! Chat rooms by URL path: one anyws server, a [`Router`] choosing the hooks per request.
//!
//! Shows `Router::new().route("/rooms/:id", Room).route("/lobby", Lobby)`:
//!
//! - `/rooms/:id`: each room is its own namespace, so a message published in `/rooms/a` never
//!   reaches `/rooms/b`. The `Room` hooks read the room id with `request.param("id")` (in
//!   `upgrade`) and `peer.request().param("id")` (in the other hooks), greet with it and publish
//!   to the room. Their `upgrade` hook refuses ids that are not short names with `400`, and puts
//!   every peer of a room in the namespace `/rooms/<id>`, so `/rooms/a/` and `/rooms/a` are one
//!   room.
//! - `/lobby`: different hooks. A newcomer gets the directory of the rooms in use (as does the
//!   message `/rooms`); anything else is lobby chat.
//! - Any other path: the router answers the upgrade with `404 Not Found`.
//!
//! Plain HTTP requests go to the fallback of [`anyws::tokio::serve`]: a short text at `/`, `404`
//! elsewhere.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p router-rooms
//! ```
//!
//! then connect WebSocket clients to `ws://127.0.0.1:3000/rooms/a`, `ws://127.0.0.1:3000/rooms/b`
//! and `ws://127.0.0.1:3000/lobby`. The port comes from `PORT` (default 3000), e.g.
//! `PORT=8080 cargo run -p router-rooms`.

use anyws::http::StatusCode;
use anyws::{
    async_trait, Accept, CloseInfo, Hooks, Message, Peer, Rejection, Request, Router, ServerBuilder,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use std::collections::BTreeMap;

/// The topic every peer subscribes to; each namespace (room, lobby) has its own.
const TOPIC: &str = "chat";

/// Longest room id accepted.
const MAX_ID_LEN: usize = 32;

/// Longest chat line accepted, in characters; longer ones are cut.
const MAX_CHARS: usize = 1000;

/// A short, readable name for a peer: the first 8 hex digits of its id.
fn name(peer: &Peer) -> String {
    peer.id().to_string().chars().take(8).collect()
}

/// The text of a chat message: trimmed, cut to [`MAX_CHARS`]; `None` for binary or blank ones.
fn chat_text(message: &Message) -> Option<String> {
    let text = message.text().ok()?.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_CHARS).collect())
}

/// The hooks of `/rooms/:id`.
struct Room;

impl Room {
    /// The room id of a peer, as matched by the router.
    fn id(peer: &Peer) -> &str {
        peer.request().param("id").unwrap_or_default()
    }
}

#[async_trait]
impl Hooks for Room {
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        let id = request.param("id").unwrap_or_default();
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(Rejection::new(StatusCode::BAD_REQUEST)
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body("a room id is 1 to 32 letters, digits, `-` or `_`"));
        }
        // One namespace per room, whatever the spelling of the path.
        Ok(Accept::new().namespace(format!("/rooms/{id}")))
    }

    async fn open(&self, peer: &Peer) {
        let id = Room::id(peer);
        peer.subscribe(TOPIC);
        let here = peer.peers().len();
        let _ = peer.send(format!("welcome to room {id}, {}; {here} here", name(peer)));
        peer.publish(TOPIC, format!("{} joined room {id}", name(peer)));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let Some(text) = chat_text(&message) else {
            return;
        };
        let line = format!("[{}] {}: {text}", Room::id(peer), name(peer));
        let _ = peer.send(line.as_str());
        // Only the other subscribers of this room's namespace get it.
        peer.publish(TOPIC, line);
    }

    async fn close(&self, peer: &Peer, _info: CloseInfo) {
        peer.publish(
            TOPIC,
            format!("{} left room {}", name(peer), Room::id(peer)),
        );
    }
}

/// The hooks of `/lobby`.
struct Lobby;

impl Lobby {
    /// The rooms in use and how many peers each has.
    fn directory(peer: &Peer) -> String {
        let mut rooms = BTreeMap::<String, usize>::new();
        for other in peer.server().peers() {
            if let Some(id) = other.namespace().strip_prefix("/rooms/") {
                *rooms.entry(id.to_owned()).or_default() += 1;
            }
        }
        if rooms.is_empty() {
            return "lobby: no rooms in use; join one at /rooms/<id>".to_owned();
        }
        let list: Vec<String> = rooms.iter().map(|(id, n)| format!("{id} ({n})")).collect();
        format!("lobby: rooms in use: {}", list.join(", "))
    }
}

#[async_trait]
impl Hooks for Lobby {
    async fn open(&self, peer: &Peer) {
        peer.subscribe(TOPIC);
        let _ = peer.send(Lobby::directory(peer));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let Some(text) = chat_text(&message) else {
            return;
        };
        if text == "/rooms" {
            let _ = peer.send(Lobby::directory(peer));
            return;
        }
        let line = format!("[lobby] {}: {text}", name(peer));
        let _ = peer.send(line.as_str());
        peer.publish(TOPIC, line);
    }
}

/// Plain HTTP: a short text at `/`, `404` elsewhere.
async fn page(request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/" => (
            StatusCode::OK,
            "router-rooms: WebSocket rooms at /rooms/<id>, a directory at /lobby\n",
        ),
        _ => (StatusCode::NOT_FOUND, "Not Found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse::<u16>().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={port:?}: {error}"),
            )
        })?,
        Err(_) => 3000,
    };

    // Routes are tried in order; a WebSocket request no route matches gets `404`.
    let router = Router::new()
        .route("/rooms/:id", Room)
        .route("/lobby", Lobby);
    let server = ServerBuilder::with_resolver(router).build(anyws::tokio::runtime());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("router rooms on http://{}", listener.local_addr()?);

    anyws::tokio::serve(listener, server)
        .fallback(page)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
