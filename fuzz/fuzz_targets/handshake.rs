//! (a) Upgrade request handling: arbitrary bytes parsed as an HTTP request head, turned into a
//! `Request` (every method, URI and header the HTTP types accept) and run through
//! `is_websocket_upgrade` and `Server::handshake` (the RFC 6455 checks, the admission step with
//! an origin allow-list and connection limits, the resolver and the `upgrade` hook).
#![no_main]

use anyws_core::http::{HeaderName, HeaderValue, Method, Uri};
use anyws_core::{async_trait, Accept, Hooks, Rejection, Request, Router, ServerBuilder};
use anyws_fuzz::{poll_to_end, ManualRuntime};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Accepts with the first offered subprotocol, refuses `?no`.
struct App;

#[async_trait]
impl Hooks for App {
    async fn upgrade(&self, request: &Request) -> Result<Accept, Rejection> {
        if request.query() == Some("no") {
            return Err(Rejection::new(anyws_core::http::StatusCode::FORBIDDEN).body("no"));
        }
        let mut accept = Accept::new().header("x-fuzz", "1");
        if let Some(protocol) = request.protocols().next() {
            accept = accept.protocol(protocol.to_owned());
        }
        Ok(accept)
    }
}

fn server() -> &'static anyws_core::Server {
    static SERVER: OnceLock<anyws_core::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let router = Router::new().route("/", App).route("/rooms/:id", App);
        ServerBuilder::with_resolver(router)
            .allowed_origins(["https://example.com", "http://localhost:3000"])
            .max_connections(Some(4))
            .max_connections_per_ip(Some(2))
            .build(Arc::new(ManualRuntime))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    if parsed.parse(data).is_err() {
        return;
    }
    let mut builder = anyws_core::http::Request::builder();
    if let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    {
        builder = builder.method(method);
    }
    if let Some(uri) = parsed.path.and_then(|p| p.parse::<Uri>().ok()) {
        builder = builder.uri(uri);
    }
    for header in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let upgrade = anyws_core::is_websocket_upgrade(&parts.headers);
    let remote = SocketAddr::from(([127, 0, 0, data.len() as u8 % 4], 40000));
    let request = Request::new(parts, Some(remote));
    let _ = (request.url(), request.path(), request.query());
    let _ = request.protocols().count();
    let handshake =
        poll_to_end(server().handshake(request), 100).expect("the handshake waits for nothing");
    let status = handshake.response().status();
    assert!(status.as_u16() == 101 || status.is_client_error() || status.is_server_error());
    let (response, peer) = handshake.into_parts();
    assert_eq!(peer.is_some(), response.status() == 101);
    if peer.is_some() {
        assert!(
            upgrade,
            "an upgrade was accepted without `Upgrade: websocket`"
        );
    }
    // Dropping the pending peer gives its place in the connection limits back.
    drop(peer);
    assert_eq!(server().connection_count(), 0);
});
