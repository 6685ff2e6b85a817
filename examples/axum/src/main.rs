//! A chat room inside an axum app: anyws hooks next to ordinary axum routes, sharing state.
//!
//! Shows how an axum handler checks a request with axum's own extractors *before* handing it to
//! anyws, and how it passes what it learned to the hooks:
//!
//! - `GET /` is a tiny page to chat from, `GET /stats` is JSON built from the shared
//!   [`AppState`] (messages so far, who is online);
//! - `GET /ws?token=...` is the WebSocket. Its handler extracts `State`, `Query` and the headers,
//!   looks the token up (or an `Authorization: Bearer` header) and answers `401` when it is not
//!   allowed; otherwise it attaches the user with [`WebSocketUpgrade::extension`] and lets the
//!   anyws [`Server`] answer the handshake;
//! - the anyws `upgrade` hook checks again on its own: without a [`User`] it refuses with
//!   `403 Forbidden` (defence in depth: the server cannot be reached unauthenticated by a route
//!   that forgot the check);
//! - the hooks put every peer in the room, prefix each message with its sender's name and count
//!   messages in the shared state.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p axum-chat
//! ```
//!
//! then open <http://127.0.0.1:3000> in two tabs, one with token `alice-token` and one with
//! `bob-token`. The port comes from `PORT` (default 3000), e.g. `PORT=8080 cargo run -p axum-chat`.
//! From a terminal: `curl -i http://127.0.0.1:3000/stats`, or a WebSocket client on
//! `ws://127.0.0.1:3000/ws?token=alice-token` (without a valid token the handshake gets `401`).

use anyws::http::StatusCode as WsStatus;
use anyws::{async_trait, Accept, CloseInfo, Hooks, Message, Peer, Rejection, Request, Server};
use anyws_axum::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The topic of the one chat room.
const ROOM: &str = "room";

/// Longest chat line accepted, in characters; longer ones are cut.
const MAX_CHARS: usize = 1000;

/// The demo's users: token → name. A real app would ask its session store.
const USERS: &[(&str, &str)] = &[("alice-token", "alice"), ("bob-token", "bob")];

/// The authenticated user, attached to the upgrade request by the `/ws` handler and read by the
/// hooks from `peer.request().extensions()`.
#[derive(Clone, Debug)]
struct User(String);

/// Counters shared by the hooks and the HTTP routes.
#[derive(Debug, Default)]
struct Counters {
    /// Chat messages relayed since the start.
    messages: AtomicU64,
}

/// The axum application state, shared by every handler as `State<Arc<AppState>>`.
#[derive(Debug)]
struct AppState {
    /// The anyws server running the chat hooks.
    server: Server,
    /// Allowed tokens and the user each one stands for.
    tokens: HashMap<String, String>,
    /// Shared with the hooks.
    counters: Arc<Counters>,
}

/// The chat room's hooks.
struct Chat {
    counters: Arc<Counters>,
}

/// The user of a peer, as attached before the upgrade.
fn user(peer: &Peer) -> &str {
    peer.request()
        .extensions()
        .get::<User>()
        .map_or("?", |u| u.0.as_str())
}

#[async_trait]
impl Hooks for Chat {
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        // The axum handler has authenticated the user; anything that reaches the server without
        // one did not go through it.
        if request.extensions().get::<User>().is_none() {
            return Err(Rejection::new(WsStatus::FORBIDDEN)
                .header("content-type", "text/plain; charset=utf-8")
                .body("no authenticated user"));
        }
        Ok(Accept::new())
    }

    async fn open(&self, peer: &Peer) {
        peer.subscribe(ROOM);
        let online: Vec<String> = peer.peers().iter().map(|p| user(p).to_owned()).collect();
        let _ = peer.send(format!(
            "welcome {}, online: {}",
            user(peer),
            online.join(", ")
        ));
        peer.publish(ROOM, format!("{} joined", user(peer)));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let Ok(text) = message.text() else {
            return; // binary messages are ignored
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let text: String = text.chars().take(MAX_CHARS).collect();
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        let line = format!("{}: {text}", user(peer));
        // Back to the sender, then to everyone else: `publish` skips the publisher.
        let _ = peer.send(line.as_str());
        peer.publish(ROOM, line);
    }

    async fn close(&self, peer: &Peer, _info: CloseInfo) {
        peer.publish(ROOM, format!("{} left", user(peer)));
    }
}

/// The query string of `/ws`.
#[derive(Debug, Deserialize)]
struct Auth {
    token: Option<String>,
}

/// `GET /ws`: authenticates with axum extractors, then upgrades with anyws.
///
/// The extractors run in order; [`WebSocketUpgrade`] comes last because it takes the request
/// (and answers `426` to requests that are not upgrades).
async fn ws(
    State(state): State<Arc<AppState>>,
    Query(auth): Query<Auth>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Browsers cannot set headers on a WebSocket, so the token may come in the query string;
    // other clients may send `Authorization: Bearer <token>`.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = auth.token.as_deref().or(bearer);
    let Some(name) = token.and_then(|t| state.tokens.get(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or unknown token",
        )
            .into_response();
    };
    upgrade
        .extension(User(name.clone()))
        .on(&state.server)
        .await
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct Stats {
    messages: u64,
    online: usize,
    users: Vec<String>,
}

/// `GET /stats`: JSON from the shared state.
async fn stats(State(state): State<Arc<AppState>>) -> Json<Stats> {
    let mut users: Vec<String> = state
        .server
        .peers()
        .iter()
        .map(|p| user(p).to_owned())
        .collect();
    users.sort();
    Json(Stats {
        messages: state.counters.messages.load(Ordering::Relaxed),
        online: users.len(),
        users,
    })
}

/// `GET /`: the page, with its JavaScript inline.
async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

const INDEX_HTML: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>anyws + axum chat</title>
<style>body{font:16px system-ui;max-width:40em;margin:2em auto}#log{white-space:pre-wrap;border:1px solid #ccc;min-height:12em;padding:.5em}</style>
<h1>anyws + axum chat</h1>
<p><input id="token" value="alice-token"> <button id="join">join</button>
(tokens: <code>alice-token</code>, <code>bob-token</code>) · <a href="/stats">/stats</a></p>
<div id="log"></div>
<form id="form"><input id="text" size="50" autocomplete="off"> <button>send</button></form>
<script>
let ws;
const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const url = new URL("/ws", location.href);
  url.protocol = url.protocol.replace("http", "ws");
  url.searchParams.set("token", document.getElementById("token").value);
  ws = new WebSocket(url);
  ws.onmessage = (e) => log(e.data);
  ws.onclose = (e) => log("[closed " + e.code + "]");
};
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  if (ws && ws.readyState === 1) ws.send(text.value);
  text.value = "";
};
</script>
"#;

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

    let counters = Arc::new(Counters::default());
    let server = anyws::tokio::server(Chat {
        counters: counters.clone(),
    });
    let state = Arc::new(AppState {
        server: server.clone(),
        tokens: USERS
            .iter()
            .map(|(token, name)| ((*token).to_owned(), (*name).to_owned()))
            .collect(),
        counters,
    });

    let app = Router::new()
        .route("/", get(index))
        .route("/stats", get(stats))
        .route("/ws", get(ws))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("axum chat on http://{}", listener.local_addr()?);

    // `ConnectInfo` gives anyws the client's address (`peer.remote_addr()`).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // axum has stopped accepting; close the peers with 1001 and wait for them to go.
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(user: Option<&str>) -> Request {
        let mut request = anyws::http::Request::get("/ws").body(()).unwrap();
        if let Some(name) = user {
            request.extensions_mut().insert(User(name.to_owned()));
        }
        Request::new(request.into_parts().0, None)
    }

    #[tokio::test]
    async fn upgrade_hook_refuses_requests_without_a_user() {
        let chat = Chat {
            counters: Arc::default(),
        };
        let refused = chat.upgrade(&upgrade_request(None)).await.unwrap_err();
        assert_eq!(refused.response().status(), WsStatus::FORBIDDEN);
        assert!(chat.upgrade(&upgrade_request(Some("alice"))).await.is_ok());
    }
}
