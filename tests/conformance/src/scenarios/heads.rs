//! Request heads: the head-size limit (`--max-request-head-bytes`, default 16 KiB) and the
//! handshake rules of RFC 6455 section 4.2.1 on the request itself (HTTP/1.1 or later, a `Host`
//! header), for WebSocket upgrades and for the SSE transport. Every refusal comes before any
//! hook runs (the `soak` app counts them) and creates no peer, and the server carries on.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::*;
use crate::scenarios::hardening::hook_counts;
use crate::scenarios::limits::read_until_closed;
use crate::scenarios::sse::{raw_stream_with, read_until};
use crate::{App, Harness, Options};

/// A header line whose value is `len` bytes long.
fn big_header(len: usize) -> String {
    format!("X-Big: {}", "a".repeat(len))
}

/// Sends `request` as is on a connection of its own and reads the response head (only the
/// head: an event stream opened by mistake never ends); returns it and the connection.
async fn send(f: &Fixture, request: &str) -> (HttpResponse, TcpStream) {
    let mut stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let response = read_response_head(&mut stream, &mut Vec::new()).await;
    (response, stream)
}

/// Asserts that the server closes `stream` within 2 s of a `431`, so that the connection (and
/// the buffer that held the head) is not left open.
async fn assert_closed(mut stream: impl AsyncRead + Unpin, what: &str) {
    read_until_closed(&mut stream, Duration::from_secs(2), what).await;
}

/// `GET /` still answers, a new WebSocket peer still works, and it is the only one listed next
/// to `others`.
async fn carries_on(f: &Fixture, others: &[&str]) {
    let response = f.get("/").await;
    assert_eq!(response.status, 200, "GET /: {}", response.status_line);
    let (mut ws, id) = f.connect_peer("/").await;
    sync(&mut ws).await;
    let mut ids = others.to_vec();
    ids.push(&id);
    f.assert_peers(&ids).await;
}

/// With the default limit of 16 KiB, an upgrade whose head holds one 20,000-byte header gets
/// `431` and no peer; one with a 12,000-byte header still gets `101` and a working peer.
pub async fn request_head_over_the_limit_gets_431(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().app(App::Soak)).await;
    let (response, raw) = f.raw_upgrade("/", &[&big_header(20_000)]).await;
    assert_eq!(response.status, 431, "20 KB head: {}", response.status_line);
    assert_eq!(response.header("sec-websocket-accept"), None);
    assert_closed(raw.stream, "20 KB head").await;
    assert_eq!(hook_counts(&f).await.upgrades, 0, "a hook saw the request");
    f.assert_peers(&[]).await;

    let (response, mut raw) = f.raw_upgrade("/", &[&big_header(12_000)]).await;
    assert_eq!(response.status, 101, "12 KB head: {}", response.status_line);
    let id = open_finished(&mut raw).await;
    carries_on(&f, &[&id]).await;
}

/// `--max-request-head-bytes 65536` lets a 20,000-byte header through, and a 70,000-byte one
/// gets `431`: the limit is the flag's, not a fixed one.
pub async fn request_head_limit_follows_the_option(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().max_request_head_bytes(64 << 10)).await;
    let (response, mut raw) = f.raw_upgrade("/", &[&big_header(20_000)]).await;
    assert_eq!(response.status, 101, "20 KB head: {}", response.status_line);
    let id = open_finished(&mut raw).await;
    let (response, raw) = f.raw_upgrade("/", &[&big_header(70_000)]).await;
    assert_eq!(response.status, 431, "70 KB head: {}", response.status_line);
    assert_closed(raw.stream, "70 KB head").await;
    carries_on(&f, &[&id]).await;
}

/// An upgrade request over HTTP/1.0 gets a 4xx, and one over HTTP/1.1 without `Host` gets
/// `400`, before any hook runs; neither creates a peer.
pub async fn handshake_needs_http_1_1_and_host(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().app(App::Soak)).await;
    let upgrade = f.upgrade_request("/", &[]);
    let http_1_0 = upgrade.replacen("HTTP/1.1", "HTTP/1.0", 1);
    let (response, _) = send(&f, &http_1_0).await;
    assert!(
        (400..500).contains(&response.status),
        "HTTP/1.0: expected a 4xx, got {}",
        response.status_line
    );
    assert_eq!(response.header("sec-websocket-accept"), None, "HTTP/1.0");

    let host = format!("Host: {}\r\n", f.addr());
    assert!(upgrade.contains(&host));
    let (response, _) = send(&f, &upgrade.replacen(&host, "", 1)).await;
    assert_eq!(response.status, 400, "no Host: {}", response.status_line);
    assert_eq!(response.header("sec-websocket-accept"), None, "no Host");

    assert_eq!(hook_counts(&f).await.upgrades, 0, "a hook saw the request");
    f.assert_peers(&[]).await;
    // The same request with `Host` over HTTP/1.1 is fine.
    let (response, mut raw) = f.raw_upgrade("/", &[]).await;
    assert_eq!(response.status, 101, "{}", response.status_line);
    let id = open_finished(&mut raw).await;
    carries_on(&f, &[&id]).await;
}

/// Reads the welcome of a peer opened by a raw upgrade, then a `pong` to its `ping`: its `open`
/// hook has finished (its `joined` line is out), so a peer opened after it hears nothing of it.
/// Returns its id.
async fn open_finished(raw: &mut RawWs) -> String {
    let welcome = raw.read_data().await;
    assert_eq!(welcome.opcode, OP_TEXT);
    let (id, _) = parse_welcome(&String::from_utf8_lossy(&welcome.payload));
    raw.send_text("ping").await;
    assert_eq!(raw.read_data().await.payload, b"pong");
    id
}

/// Over the SSE transport: an event-stream `GET` with a 20,000-byte header gets `431` and one
/// without `Host` `400`, neither opening a peer, while one with a 12,000-byte header opens one;
/// a `POST` of a message to that peer with a 20,000-byte header gets `431` and delivers nothing.
pub async fn sse_request_heads(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().app(App::Soak).sse()).await;
    let open = |extra: &str| format!("GET / HTTP/1.1\r\n{extra}Accept: text/event-stream\r\n\r\n");
    let host = format!("Host: {}\r\n", f.addr());
    let too_big = format!("{host}{}\r\n", big_header(20_000));
    let (response, stream) = send(&f, &open(&too_big)).await;
    assert_eq!(response.status, 431, "20 KB head: {}", response.status_line);
    assert_eq!(response.header("x-crossws-id"), None);
    assert_closed(stream, "20 KB head").await;
    let (response, _) = send(&f, &open("")).await;
    assert_eq!(response.status, 400, "no Host: {}", response.status_line);
    assert_eq!(response.header("x-crossws-id"), None);
    assert_eq!(hook_counts(&f).await.upgrades, 0, "a hook saw the request");
    f.assert_peers(&[]).await;

    let stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
    let (response, mut events) = raw_stream_with(&f, stream, "/", &[&big_header(12_000)]).await;
    assert_eq!(response.status, 200, "12 KB head: {}", response.status_line);
    let id = response.header("x-crossws-id").expect("an id").to_owned();

    let post = |extra: &str, message: &str| {
        format!(
            "POST / HTTP/1.1\r\n{host}x-crossws-id: {id}\r\nContent-Length: {}\r\n{extra}\
             Connection: close\r\n\r\n{message}",
            message.len()
        )
    };
    let big = format!("{}\r\n", big_header(20_000));
    let (response, _) = send(&f, &post(&big, "lost")).await;
    assert_eq!(response.status, 431, "20 KB POST: {}", response.status_line);
    // The same POST within the limit is delivered; the refused one, before it, was not.
    let (response, _) = send(&f, &post("", "ping")).await;
    assert!(
        (200..300).contains(&response.status),
        "POST: {}",
        response.status_line
    );
    read_until(&mut events, "data: pong\n", "pong").await;
    let stream = String::from_utf8_lossy(&events.buf);
    assert!(
        !stream.contains("data: lost"),
        "a refused POST was delivered: {stream}"
    );
    carries_on(&f, &[&id]).await;
}
