//! A WebSocket proxy behind an authentication check, in axum: `GET /ws` needs
//! `Authorization: Bearer secret-token` (or `?token=secret-token`, as browsers cannot set
//! headers); every accepted peer is forwarded to the upstream at the same path and query, with
//! backpressure both ways.
//!
//! ```text
//! PORT=3001 cargo run -p echo-tokio                    # an upstream, in another terminal
//! UPSTREAM=ws://127.0.0.1:3001 cargo run -p axum-proxy
//! ```
//!
//! then connect a WebSocket client to `ws://127.0.0.1:3000/ws?token=secret-token`; without the
//! token the upgrade gets `401`. `PORT` (default 3000) is where the proxy listens.

use anyws::hyper::ClientSecurity;
use anyws::proxy::Proxy;
use anyws::{Server, ServerBuilder};
use anyws_axum::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{routing::get, Router};

const TOKEN: &str = "secret-token";

/// Whether the request carries the token, as a bearer header or in the query string.
fn authorized(headers: &axum::http::HeaderMap, uri: &Uri) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = uri.query().unwrap_or("");
    bearer == Some(TOKEN)
        || query
            .split('&')
            .any(|pair| pair == format!("token={TOKEN}"))
}

async fn ws(
    State(server): State<Server>,
    headers: axum::http::HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&headers, &uri) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    }
    upgrade.on(&server).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let upstream = std::env::var("UPSTREAM").unwrap_or("ws://127.0.0.1:3001".into());
    let runtime = anyws::tokio::runtime();
    let connector = anyws::tokio::connector(ClientSecurity::default());
    let proxy = Proxy::new(upstream, runtime.clone(), connector).header("x-proxied-by", "anyws");
    let server = ServerBuilder::new(proxy).build(runtime);
    let app = Router::new().route("/ws", get(ws)).with_state(server);
    let port = std::env::var("PORT").unwrap_or("3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, app).await
}
