//! An echo server inside a plain hyper 1.x service, with its own accept loop on tokio.
//!
//! Shows how anyws embeds in any hyper service without taking the server over: the accept loop,
//! `hyper::server::conn::http1::Builder` (with `.with_upgrades()`, which anyws needs) and the
//! routing are the application's own. The service hands `/echo` to
//! [`anyws::hyper::upgrade`], which answers the handshake and runs the peer on the upgraded
//! connection, or gives the request back when it is not a WebSocket upgrade; every other request
//! the service answers itself.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p hyper-echo
//! ```
//!
//! then connect a WebSocket client to `ws://127.0.0.1:3000/echo`: every text or binary message
//! comes back unchanged. `curl http://127.0.0.1:3000/` gets a plain-text answer from the service
//! itself. The port comes from `PORT` (default 3000), e.g. `PORT=8080 cargo run -p hyper-echo`.

use anyws::{async_trait, Hooks, Message, Peer, Server};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The hooks: every message goes back to its sender.
struct Echo;

#[async_trait]
impl Hooks for Echo {
    async fn message(&self, peer: &Peer, message: Message) {
        let _ = peer.send(message);
    }
}

/// The hyper service of one connection.
async fn handle(
    server: Server,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<anyws::hyper::Body>, Infallible> {
    let request = if request.uri().path() == "/echo" {
        match anyws::hyper::upgrade(&server, request, Some(remote)).await {
            // `101 Switching Protocols` (or the hooks' refusal); the peer runs in its own task
            // once hyper has handed over the connection.
            Ok(response) => return Ok(response),
            // Not a WebSocket upgrade: the request comes back untouched.
            Err(request) => request,
        }
    } else {
        request
    };

    let response = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => text(
            StatusCode::OK,
            "hyper-echo: a plain hyper service. Connect a WebSocket to /echo.\n",
        ),
        (_, "/echo") => {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                "/echo is a WebSocket endpoint\n",
            );
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<anyws::hyper::Body> {
    let body = Full::new(Bytes::from_static(body.as_bytes()));
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
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

    let server = anyws::tokio::server(Echo);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("hyper echo on http://{}", listener.local_addr()?);

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // E.g. too many open files: keep serving the connections we have, and
                    // wait a little rather than spin.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(server.clone(), remote, request));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                // Without this, hyper never hands over the connection after `101`.
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("connection from {remote}: {error}");
            }
        });
    }

    // No new connections; close every peer with 1001 and wait for them to go.
    server.shutdown().await;
    Ok(())
}
