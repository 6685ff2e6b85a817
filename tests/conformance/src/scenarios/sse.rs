//! The SSE transport (`--transport sse`, `Options::sse`): every scenario of the suite that
//! applies to it, with real clients (crossws's `WebSocketSSE` and the `eventsource` package,
//! see [`sse_client`](crate::sse_client)), next to WebSocket peers on the same server.
//!
//! Scenarios that need a handshake, frames, a close code, binary uploads or response headers of
//! a `101` do not apply (`FIXTURE.md`, "SSE variant").

use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::*;
use crate::sse_client::{Bridge, ClientEvent, ClientKind};
use crate::{Harness, Options};

const TWO_S: Duration = Duration::from_secs(2);
use ClientKind::{Crossws, EventSource};

/// A server with the SSE transport on and the bridge of real clients.
async fn start(harness: &dyn Harness, options: Options) -> (Fixture, Bridge) {
    let f = Fixture::start(harness, options.sse()).await;
    (f, Bridge::start().await)
}

/// A `POST` of `body` to `path` with a content length and `headers`.
async fn post(f: &Fixture, path: &str, headers: &[&str], body: &[u8]) -> HttpResponse {
    let mut head = format!("POST {path} HTTP/1.1\r\nContent-Length: {}", body.len());
    for header in headers {
        head.push_str("\r\n");
        head.push_str(header);
    }
    f.request(&head, body).await
}

/// Opens an event stream with a raw GET of `path`; returns the response head and the
/// connection, whose buffer holds what followed the head.
async fn raw_stream(f: &Fixture, stream: TcpStream, path: &str) -> (HttpResponse, RawWs) {
    raw_stream_with(f, stream, path, &[]).await
}

/// [`raw_stream`] with `extra` header lines.
pub(crate) async fn raw_stream_with(
    f: &Fixture,
    mut stream: TcpStream,
    path: &str,
    extra: &[&str],
) -> (HttpResponse, RawWs) {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
        f.addr()
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write request");

    let mut buf = Vec::new();
    let response = read_response_head(&mut stream, &mut buf).await;
    (
        response,
        RawWs {
            stream: stream.into(),
            buf,
        },
    )
}

/// Reads `raw`'s event stream into its buffer until the buffer holds `needle`; `what` names it
/// in failures.
pub(crate) async fn read_until(raw: &mut RawWs, needle: &str, what: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&raw.buf).contains(needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, raw.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {what} within the timeout"))
            .expect("read");
        assert!(n > 0, "the stream ended before the {what}");
        raw.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads `raw`'s event stream until its first `event: message`: the welcome line, which the
/// `open` hook sends once the peer is listed in `/peers` (the response head comes before).
async fn read_welcome(raw: &mut RawWs) {
    read_until(raw, "event: message\n", "welcome line").await;
}

/// Both kinds of client connect; the welcome line comes first and names the peer by the id of
/// the `crossws-id` event, which the stream's `x-crossws-id` header carries too; ids are unique.
pub async fn welcome_and_ids(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut a, a_id) = bridge.connect_peer(&f, Crossws, "/").await;
    let (mut b, b_id) = bridge.connect_peer(&f, EventSource, "/?foo=bar").await;
    let (mut c, c_id) = bridge.connect_peer(&f, Crossws, "/room-b").await;
    let unique: HashSet<_> = [&a_id, &b_id, &c_id].into_iter().collect();
    assert_eq!(unique.len(), 3, "ids must be unique: {a_id} {b_id} {c_id}");
    assert_eq!(a.recv_text().await, format!("{b_id} joined!"));

    let stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
    let (response, mut raw) = raw_stream(&f, stream, "/room-b").await;
    assert_eq!(response.status, 200, "{}", response.status_line);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type: {content_type:?}"
    );
    let header_id = response
        .header("x-crossws-id")
        .expect("an x-crossws-id header")
        .to_owned();
    // The first event names the same id (after the first chunk size line).
    let want = format!("event: crossws-id\ndata: {header_id}\n\n");
    read_until(&mut raw, "\n\n", "crossws-id event").await;
    let first = String::from_utf8_lossy(&raw.buf).into_owned();
    let first = first.split_once("\r\n").map_or(&*first, |(_, rest)| rest);
    assert!(
        first.starts_with(&want),
        "the stream must open with the crossws-id event {want:?}: {first:?}"
    );
    assert_eq!(c.recv_text().await, format!("{header_id} joined!"));
    f.assert_peers(&[&a_id, &b_id, &c_id, &header_id]).await;
    for client in [&mut a, &mut b, &mut c] {
        client.sync().await;
    }
}

/// `GET /peers` lists SSE peers next to WebSocket peers; a peer leaves within 2 s after its
/// client closes, aborts, or its TCP connection drops; a streaming `POST` still open (crossws's
/// `close()` leaves it so) gets `410` once its peer is gone.
pub async fn peers_route(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    f.assert_peers(&[]).await;
    let (mut a, a_id) = bridge.connect_peer(&f, Crossws, "/").await;
    let (mut b, b_id) = bridge.connect_peer(&f, EventSource, "/").await;
    let (mut c, c_id) = bridge.connect_peer(&f, Crossws, "/room-b").await;
    let (mut ws, ws_id) = f.connect_peer("/").await;
    let stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
    let (response, mut raw) = raw_stream(&f, stream, "/raw").await;
    assert_eq!(response.status, 200, "{}", response.status_line);
    let raw_id = response.header("x-crossws-id").expect("id").to_owned();
    read_welcome(&mut raw).await;
    f.assert_peers(&[&a_id, &b_id, &c_id, &ws_id, &raw_id])
        .await;

    // crossws's close() leaves its streaming POST open; the peer leaves all the same.
    a.close().await;
    f.assert_leaves(&a_id, TWO_S).await;
    b.close().await;
    f.assert_leaves(&b_id, TWO_S).await;
    c.abort().await;
    f.assert_leaves(&c_id, TWO_S).await;

    // A streaming POST that outlives its peer gets 410 at once, while its body is still open.
    let mut post = TcpStream::connect(f.socket_addr()).await.expect("connect");
    let head = format!(
        "POST /raw HTTP/1.1\r\nHost: {}\r\nx-crossws-id: {raw_id}\r\n\
         Transfer-Encoding: chunked\r\n\r\n4\r\nping\r\n",
        f.addr()
    );
    post.write_all(head.as_bytes()).await.expect("write");
    let mut pong = Vec::new();
    while !String::from_utf8_lossy(&pong).contains("data: pong") {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, raw.stream.read(&mut chunk))
            .await
            .expect("no pong within the timeout")
            .expect("read");
        assert!(n > 0, "the stream ended before the pong");
        pong.extend_from_slice(&chunk[..n]);
    }
    drop(raw);
    f.assert_leaves(&raw_id, TWO_S).await;
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(TWO_S, read_response(&mut post, &mut buf))
        .await
        .expect("the streaming POST of a peer that left was not answered within 2 s");
    assert_eq!(answer.status, 410, "{}", answer.status_line);
    f.assert_peers(&[&ws_id]).await;
    sync(&mut ws).await;
}

/// `GET /publish` reaches SSE peers in every namespace, once.
pub async fn publish_every_namespace(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut a, _) = bridge.connect_peer(&f, Crossws, "/").await;
    let (mut b, _) = bridge.connect_peer(&f, EventSource, "/room-b").await;
    let (mut ws, _) = f.connect_peer("/room-c").await;
    let response = f.get("/publish?topic=chat&message=hello%20everyone").await;
    assert_eq!(response.status, 200, "{}", response.status_line);
    assert_eq!(a.recv_text().await, "hello everyone");
    assert_eq!(b.recv_text().await, "hello everyone");
    assert_eq!(recv_text(&mut ws).await, "hello everyone");
    a.sync().await;
    b.sync().await;
    sync(&mut ws).await;
}

/// The welcome line comes first; `<id> joined!` reaches the other peers of the namespace,
/// SSE and WebSocket, but not the joiner nor other namespaces; the context is `{"test": "1"}`.
pub async fn open_order(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut ws, ws_id) = f.connect_peer("/").await;
    let (mut a, a_id) = bridge.connect_peer(&f, Crossws, "/").await;
    assert_eq!(recv_text(&mut ws).await, format!("{a_id} joined!"));
    let (mut other, _) = bridge.connect_peer(&f, EventSource, "/room-b").await;
    let (mut b, b_id) = bridge.connect_peer(&f, EventSource, "/?x=1").await;
    assert_eq!(recv_text(&mut ws).await, format!("{b_id} joined!"));
    assert_eq!(a.recv_text().await, format!("{b_id} joined!"));
    let (_ws2, ws2_id) = f.connect_peer("/").await;
    assert_eq!(a.recv_text().await, format!("{ws2_id} joined!"));
    assert_eq!(b.recv_text().await, format!("{ws2_id} joined!"));
    assert_eq!(recv_text(&mut ws).await, format!("{ws2_id} joined!"));
    // Nothing crossed into /room-b, and the joiners got nothing of their own.
    other.sync().await;
    a.sync().await;
    b.sync().await;
    sync(&mut ws).await;
    b.send_text("debug").await;
    assert_eq!(b.recv_json().await["context"], json!({ "test": "1" }));
    let _ = ws_id;
}

/// `ping` answers `pong`, with both clients.
pub async fn ping_pong(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    for kind in [Crossws, EventSource] {
        let (mut client, _) = bridge.connect_peer(&f, kind, "/").await;
        client.send_text("ping").await;
        assert_eq!(client.recv_text().await, "pong", "{kind:?}");
        client.close().await;
    }
}

/// `binary` answers the bytes of `binary message works!` as a base64 data URL.
pub async fn binary_command(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    for kind in [Crossws, EventSource] {
        let (mut client, _) = bridge.connect_peer(&f, kind, "/").await;
        client.send_text("binary").await;
        assert_eq!(
            client.recv_text().await,
            "data:application/octet-stream;base64,YmluYXJ5IG1lc3NhZ2Ugd29ya3Mh",
            "{kind:?}: base64 of `binary message works!`"
        );
        client.sync().await;
    }
}

/// Every field of `debug`, as the SSE variant has them.
pub async fn debug_fields(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    for kind in [Crossws, EventSource] {
        let (mut client, id) = bridge.connect_peer(&f, kind, "/?foo=bar").await;
        client.send_text("debug").await;
        let debug = client.recv_json().await;
        // Printed with the failure: which client it was.
        eprintln!("{kind:?}: debug {debug}");
        let headers = super::shared::assert_debug_basics(&f, &debug, &id, "/?foo=bar");
        assert_eq!(
            headers.get("connection"),
            Some(&json!("keep-alive")),
            "{kind:?}"
        );
        assert_eq!(
            headers.get("accept"),
            Some(&json!("text/event-stream")),
            "{kind:?}"
        );
        let websocket = &debug["websocket"];
        assert_eq!(websocket["protocol"], "", "{kind:?}");
        assert_eq!(websocket["extensions"], "", "{kind:?}");
        client.close().await;
    }
}

/// `peers` lists the peer's own namespace, itself included, SSE and WebSocket peers alike.
pub async fn peers_command(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut a, a_id) = bridge.connect_peer(&f, EventSource, "/").await;
    a.send_text("peers").await;
    assert_eq!(peer_list(&a.recv_json().await), std::slice::from_ref(&a_id));
    let (_b, b_id) = bridge.connect_peer(&f, Crossws, "/").await;
    assert_eq!(a.recv_text().await, format!("{b_id} joined!"));
    let (_ws, ws_id) = f.connect_peer("/").await;
    assert_eq!(a.recv_text().await, format!("{ws_id} joined!"));
    let (_c, _) = bridge.connect_peer(&f, Crossws, "/elsewhere").await;
    a.send_text("peers").await;
    let listed: HashSet<String> = peer_list(&a.recv_json().await).into_iter().collect();
    let want: HashSet<String> = [a_id, b_id, ws_id].into_iter().collect();
    assert_eq!(listed, want);
}

/// `waitForDrain` answers `drained`, after what was queued before it.
pub async fn wait_for_drain(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut client, _) = bridge.connect_peer(&f, EventSource, "/").await;
    client.send_text("waitForDrain").await;
    assert_eq!(client.recv_text().await, "drained");
    let big = sample_text(1 << 20);
    client.send_text(big.clone()).await;
    client.send_text("waitForDrain").await;
    let echo = client.recv_text().await;
    assert!(echo == big, "the 1 MiB echo differs ({} bytes)", echo.len());
    assert_eq!(client.recv_text().await, "drained");
}

/// Anything else comes back byte for byte (empty, 64 KiB, 1 MiB; one `POST` each), reaches the
/// other peers of the namespace once, and nothing else.
pub async fn echo_exact(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut a, _) = bridge.connect_peer(&f, EventSource, "/").await;
    let (mut b, b_id) = bridge.connect_peer(&f, Crossws, "/").await;
    assert_eq!(a.recv_text().await, format!("{b_id} joined!"));
    let (mut ws, ws_id) = f.connect_peer("/").await;
    assert_eq!(a.recv_text().await, format!("{ws_id} joined!"));
    assert_eq!(b.recv_text().await, format!("{ws_id} joined!"));
    let (mut c, _) = bridge.connect_peer(&f, Crossws, "/room-b").await;
    for message in [
        String::new(),
        "hello ✓".to_owned(),
        sample_text(64 * 1024),
        sample_text(1 << 20),
    ] {
        a.send_text(message.clone()).await;
        assert_same_text("echo", &a.recv_text().await, &message);
        assert_same_text("SSE publish", &b.recv_text().await, &message);
        assert_same_text("WebSocket publish", &recv_text(&mut ws).await, &message);
    }
    a.sync().await;
    b.sync().await;
    c.sync().await;
    sync(&mut ws).await;
}

/// 200 messages sent back to back come back complete and in order: one by one with the
/// eventsource client (a `POST` each), and as the same bytes in the same order with crossws's
/// streaming `POST`. HTTP does not keep chunk boundaries, so a chunk that reaches the server in
/// two reads may be handed over as two messages; the boundaries are only counted there.
pub async fn ordering(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let sent: Vec<String> = (0..200)
        .map(|i| format!("{i}:{}", sample_text(i * 37 % 3000)))
        .collect();

    let (mut client, _) = bridge.connect_peer(&f, EventSource, "/").await;
    for message in &sent {
        client.send_text(message.clone()).await;
    }
    for (i, sent) in sent.iter().enumerate() {
        let got = client.recv_text().await;
        assert!(
            &got == sent,
            "eventsource: echo {i} is out of order or damaged: starts {:?}",
            got.get(..10.min(got.len())).unwrap_or(&got)
        );
    }
    client.sync().await;
    client.close().await;

    let (mut client, _) = bridge.connect_peer(&f, Crossws, "/").await;
    for message in &sent {
        client.send_text(message.clone()).await;
    }
    let want: String = sent.concat();
    // Where each message ends in `want`: an echo is whole when it spans one message exactly.
    let ends: HashSet<usize> = sent
        .iter()
        .scan(0, |end, m| {
            *end += m.len();
            Some(*end)
        })
        .collect();
    let mut got = String::with_capacity(want.len());
    let mut echoes = 0;
    let mut whole = 0;
    while got.len() < want.len() {
        let echo = client.recv_text().await;
        let start = got.len();
        echoes += 1;
        got.push_str(&echo);
        whole += usize::from((start == 0 || ends.contains(&start)) && ends.contains(&got.len()));
        let at = got.len().min(want.len());
        if got.as_bytes()[..at] != want.as_bytes()[..at] {
            panic!(
                "crossws: the echoes differ from what was sent from byte {start} on \
                 (echo {echoes}: {:?})",
                echo.get(..40.min(echo.len())).unwrap_or(&echo)
            );
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "crossws: more came back than was sent"
    );
    eprintln!("crossws: 200 messages came back as {echoes} echoes, {whole} of them whole");
    client.sync().await;
}

/// A WebSocket peer and SSE peers in one namespace see each other's messages, both ways.
pub async fn websocket_and_sse_together(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut ws, _) = f.connect_peer("/room").await;
    for kind in [Crossws, EventSource] {
        let (mut sse, id) = bridge.connect_peer(&f, kind, "/room").await;
        assert_eq!(recv_text(&mut ws).await, format!("{id} joined!"));
        send_text(&mut ws, format!("from ws to {kind:?}")).await;
        assert_eq!(recv_text(&mut ws).await, format!("from ws to {kind:?}"));
        assert_eq!(sse.recv_text().await, format!("from ws to {kind:?}"));
        sse.send_text(format!("from {kind:?} to ws")).await;
        assert_eq!(sse.recv_text().await, format!("from {kind:?} to ws"));
        assert_eq!(recv_text(&mut ws).await, format!("from {kind:?} to ws"));
        sse.sync().await;
        sync(&mut ws).await;
        sse.close().await;
        f.assert_leaves(&id, TWO_S).await;
    }
}

/// `panic` ends that peer's stream and it leaves `/peers`; the other peers and the server carry
/// on.
pub async fn panic_ends_stream(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let (mut ws, ws_id) = f.connect_peer("/").await;
    let (mut other, other_id) = bridge.connect_peer(&f, EventSource, "/").await;
    assert_eq!(recv_text(&mut ws).await, format!("{other_id} joined!"));
    for kind in [Crossws, EventSource] {
        let (mut client, id) = bridge.connect_peer(&f, kind, "/").await;
        assert_eq!(recv_text(&mut ws).await, format!("{id} joined!"));
        assert_eq!(other.recv_text().await, format!("{id} joined!"));
        client.send_text("panic").await;
        client.expect_end(TWO_S).await;
        f.assert_leaves(&id, TWO_S).await;
    }
    other.sync().await;
    sync(&mut ws).await;
    other.send_text("still here").await;
    assert_eq!(other.recv_text().await, "still here");
    assert_eq!(recv_text(&mut ws).await, "still here");
    assert_eq!(f.get("/").await.status, 200);
    f.assert_peers(&[&ws_id, &other_id]).await;
}

/// `?unauthorized` is refused with the contract's 401 and body, by the `upgrade` hook, and no
/// peer appears; the `eventsource` client gets an error and no stream.
pub async fn unauthorized(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new()).await;
    let response = f
        .request(
            "GET /?unauthorized HTTP/1.1\r\nAccept: text/event-stream",
            b"",
        )
        .await;
    assert_eq!(response.status, 401, "{}", response.status_line);
    assert_eq!(response.header("x-error"), Some("unauthorized"));
    assert_eq!(response.body, b"unauthorized");
    assert_eq!(response.header("x-crossws-id"), None);
    let mut client = bridge
        .open(EventSource, &f.http_url("/?unauthorized"))
        .await;
    let error = client.expect_end(TIMEOUT).await;
    assert!(error.is_some(), "the client reported no error");
    assert_eq!(client.id(), None, "a refused client got an id");
    f.assert_peers(&[]).await;
}

/// A `POST` with an unknown id, without an id, or with text that is not UTF-8 gets 400, and a
/// body over `--max-message-size` gets 413 (with a length or streamed); none of them reaches
/// the peers, which carry on.
pub async fn bad_posts(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new().max_message_size(1024)).await;
    let (mut a, a_id) = bridge.connect_peer(&f, EventSource, "/").await;
    let (mut b, b_id) = bridge.connect_peer(&f, Crossws, "/").await;
    assert_eq!(a.recv_text().await, format!("{b_id} joined!"));
    let (mut ws, ws_id) = f.connect_peer("/").await;
    assert_eq!(a.recv_text().await, format!("{ws_id} joined!"));
    assert_eq!(b.recv_text().await, format!("{ws_id} joined!"));
    let a_header = format!("x-crossws-id: {a_id}");

    for (what, headers, status) in [
        ("unknown id", vec!["x-crossws-id: not-a-peer"], 400),
        (
            "unknown id of the right form",
            vec!["x-crossws-id: 00000000-0000-4000-8000-000000000000"],
            400,
        ),
        ("no id", vec![], 400),
    ] {
        let response = post(&f, "/", &headers, b"hello from nowhere").await;
        assert_eq!(response.status, status, "{what}: {}", response.status_line);
    }
    let response = post(&f, "/", &[&a_header], b"bad \xFF\xFE text").await;
    assert_eq!(response.status, 400, "not UTF-8: {}", response.status_line);
    let response = post(&f, "/", &[&a_header], &[b'L'; 2000]).await;
    assert_eq!(response.status, 413, "2000 bytes: {}", response.status_line);
    // Streamed: a chunk over the limit.
    let mut chunked = format!("{:x}\r\n", 2000).into_bytes();
    chunked.extend_from_slice(&[b'C'; 2000]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = f
        .request(
            &format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{a_header}"),
            &chunked,
        )
        .await;
    assert_eq!(
        response.status, 413,
        "a 2000-byte chunk: {}",
        response.status_line
    );

    // Nothing of the above reached anyone; under the limit is fine.
    let small = "s".repeat(1000);
    a.send_text(small.clone()).await;
    assert_eq!(a.recv_text().await, small);
    assert_eq!(b.recv_text().await, small);
    assert_eq!(recv_text(&mut ws).await, small);
    a.sync().await;
    b.sync().await;
    sync(&mut ws).await;
    f.assert_peers(&[&a_id, &b_id, &ws_id]).await;
}

/// A graceful shutdown (SIGTERM for a process) ends every event stream, crossws's streaming
/// `POST` included, and the server stops within 2 s.
pub async fn graceful_shutdown(harness: &dyn Harness) {
    let (mut f, bridge) = start(harness, Options::new()).await;
    let (mut a, _) = bridge.connect_peer(&f, Crossws, "/").await;
    let (mut b, _) = bridge.connect_peer(&f, EventSource, "/room-b").await;
    let (mut ws, ws_id) = f.connect_peer("/").await;
    assert_eq!(a.recv_text().await, format!("{ws_id} joined!"));
    a.sync().await;
    b.sync().await;
    let started = Instant::now();
    let (stopped, _, _, ws_end) = tokio::join!(
        f.shut_down(TWO_S),
        a.expect_end(TWO_S),
        b.expect_end(TWO_S),
        expect_close(&mut ws, TWO_S),
    );
    assert_eq!(ws_end, Ending::Close(1001), "the WebSocket peer");
    assert_stopped(stopped, started);
}

/// `--max-buffered-bytes 1MiB`: an SSE client that stops reading while `GET /publish` pushes
/// 64 MiB to it is dropped from `/peers`; another client gets everything; (for a server in a
/// process of its own) the server's memory does not grow with what was published; and when
/// the stalled client reads again, its stream ends after far less than what was published.
/// The publishes carry their 32 KiB in the URL, so the head limit is raised to 64 KiB.
pub async fn stalled_reader_is_cut_off(harness: &dyn Harness) {
    const SIZE: usize = 32 * 1024;
    const COUNT: usize = 2048;
    // The reader's client (crossws's, on node's fetch) opens its streaming POST's connection
    // at once but writes the request head only with its first message, and this reader sends
    // none: the head timeout must outlast the publishes, which take over 10 s on a slow
    // machine.
    let options = Options::new()
        .max_buffered_bytes(1 << 20)
        .max_request_head_bytes(64 << 10)
        .handshake_timeout(Duration::from_secs(120));
    let (f, bridge) = start(harness, options).await;

    // The stalled client: a small receive buffer, and it never reads after the response head.
    let stream = f.connect_small_receive_buffer().await;
    let (response, mut stalled) = raw_stream(&f, stream, "/").await;
    assert_eq!(response.status, 200, "{}", response.status_line);
    let stalled_id = response.header("x-crossws-id").expect("id").to_owned();
    let (mut reader, reader_id) = bridge.connect_peer(&f, Crossws, "/other").await;
    f.assert_peers(&[&stalled_id, &reader_id]).await;
    let memory_before = f.peak_rss_kib();

    let message = |i: usize| {
        let mut text = format!("{i:05}:");
        text.push_str(&"p".repeat(SIZE - text.len()));
        text
    };
    let mut cut_off_at = None;
    for i in 0..COUNT {
        let response = f
            .get(&format!("/publish?topic=chat&message={}", message(i)))
            .await;
        assert_eq!(
            response.status, 200,
            "publish {i}: {}",
            response.status_line
        );
        // The reader keeps up: one message in flight at a time.
        let got = reader.recv_text().await;
        assert!(got == message(i), "the reader's message {i} differs");
        if cut_off_at.is_none() && i % 64 == 63 && !f.peers().await.contains(&stalled_id) {
            cut_off_at = Some(i + 1);
        }
    }
    f.assert_leaves(&stalled_id, TWO_S).await;
    let published_kib = (COUNT * SIZE / 1024) as u64;
    eprintln!(
        "stalled SSE client left /peers after {cut_off_at:?} of {COUNT} publishes of {SIZE} bytes"
    );
    if let (Some(before), Some(after)) = (memory_before, f.peak_rss_kib()) {
        eprintln!("peak RSS before {before} KiB, after {after} KiB");
        assert!(
            after.saturating_sub(before) < published_kib / 4,
            "peak memory grew by {} KiB while {published_kib} KiB were published",
            after.saturating_sub(before)
        );
    }
    // Once it reads again, its stream ends, after far less than what was published.
    let mut received = stalled.buf.len();
    let mut tail = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        match tokio::time::timeout_at(deadline, stalled.stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "the stalled client's stream did not end within 10 s of reading again \
                 ({received} bytes read)"
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                received += n;
                tail.extend_from_slice(&chunk[..n]);
                let keep = tail.len().saturating_sub(5);
                tail.drain(..keep);
                if tail == b"0\r\n\r\n" {
                    break;
                }
            }
        }
    }
    eprintln!("the stalled client read {received} bytes before its stream ended");
    assert!(
        (received as u64) < published_kib * 1024 / 2,
        "the stalled client got {received} bytes of {published_kib} KiB: it was not cut off"
    );
    reader.sync().await;
    f.assert_peers(&[&reader_id]).await;
}

/// Many clients, each asking `GET /peers` as soon as its stream's headers arrive (on a
/// connection opened beforehand), all at once and in several rounds: every one finds its peer
/// (the id of its `x-crossws-id` header) listed.
pub async fn peers_listed_from_open(harness: &dyn Harness) {
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 30;
    let (f, _bridge) = start(harness, Options::new()).await;
    for round in 0..ROUNDS {
        let clients = (0..CLIENTS).map(|_| async {
            use tokio::io::AsyncWriteExt;
            let mut probe = TcpStream::connect(f.socket_addr()).await.expect("connect");
            let stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
            let (response, raw) = raw_stream(&f, stream, "/").await;
            assert_eq!(response.status, 200, "{}", response.status_line);
            let get = format!(
                "GET /peers HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                f.addr()
            );
            probe.write_all(get.as_bytes()).await.expect("write");
            let listed = read_response(&mut probe, &mut Vec::new()).await;
            assert_eq!(listed.status, 200, "GET /peers: {}", listed.status_line);
            let listed = peer_list(&serde_json::from_slice(&listed.body).expect("JSON"));
            let id = response.header("x-crossws-id").expect("id").to_owned();
            (raw, id, listed)
        });
        let opened = futures_util::future::join_all(clients).await;
        for (_, id, listed) in &opened {
            assert!(
                listed.iter().any(|p| is_id(p, id)),
                "round {round}: SSE peer {id} was not listed by a GET /peers sent after its \
                 stream's headers: {listed:?}"
            );
        }
        drop(opened);
        f.poll_peers(TIMEOUT, |peers| peers.is_empty()).await;
    }
}

/// An origin allow-list: an SSE open with a forbidden `Origin` gets 403 and no peer appears,
/// and so does a `POST` for an open peer; an allowed one (in any case) and a client without
/// `Origin` (the `eventsource` package) get a peer.
pub async fn origin_allow_list_gets_403(harness: &dyn Harness) {
    let (f, bridge) = start(
        harness,
        Options::new().allowed_origin("https://good.example"),
    )
    .await;
    for origin in ["https://evil.example", "null", "https://good.example.evil"] {
        let response = f
            .request(
                &format!("GET / HTTP/1.1\r\nAccept: text/event-stream\r\nOrigin: {origin}"),
                b"",
            )
            .await;
        assert_eq!(response.status, 403, "{origin}: {}", response.status_line);
        assert_eq!(response.header("x-crossws-id"), None, "{origin}");
    }
    f.assert_peers(&[]).await;

    let stream = TcpStream::connect(f.socket_addr()).await.expect("connect");
    let (response, mut raw) =
        raw_stream_with(&f, stream, "/", &["Origin: https://GOOD.example"]).await;
    assert_eq!(response.status, 200, "{}", response.status_line);
    let raw_id = response.header("x-crossws-id").expect("id").to_owned();
    read_welcome(&mut raw).await;
    let (mut client, id) = bridge.connect_peer(&f, EventSource, "/").await;
    f.assert_peers(&[&raw_id, &id]).await;

    // A POST from a forbidden origin reaches nobody, even with a valid peer id.
    let response = post(
        &f,
        "/",
        &[
            &format!("x-crossws-id: {id}"),
            "Origin: https://evil.example",
        ],
        b"hijacked",
    )
    .await;
    assert_eq!(response.status, 403, "POST: {}", response.status_line);
    client.sync().await;
}

/// `max_connections(2)`: WebSocket and SSE peers share the count. With one of each open, an
/// SSE open and a WebSocket handshake both get 503 and no peer appears; once the SSE peer's
/// client goes away, its place is free for a new SSE peer.
pub async fn max_connections_gets_503(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new().max_connections(2)).await;
    // Each in a namespace of its own, so that no peer hears of the others.
    let (mut ws, ws_id) = f.connect_peer("/1").await;
    let (mut sse, sse_id) = bridge.connect_peer(&f, Crossws, "/2").await;
    f.assert_peers(&[&ws_id, &sse_id]).await;

    let response = f
        .request("GET /3 HTTP/1.1\r\nAccept: text/event-stream", b"")
        .await;
    assert_eq!(response.status, 503, "SSE open: {}", response.status_line);
    assert_eq!(response.header("x-crossws-id"), None);
    let mut refused = bridge.open(EventSource, &f.http_url("/3")).await;
    let error = refused.expect_end(TIMEOUT).await;
    assert!(error.is_some(), "the refused client reported no error");
    assert_eq!(refused.id(), None, "a refused client got an id");
    let (response, _raw) = f.raw_upgrade("/3", &[]).await;
    assert_eq!(response.status, 503, "WebSocket: {}", response.status_line);
    f.assert_peers(&[&ws_id, &sse_id]).await;

    // The SSE peer's client goes away: its place is given back.
    sse.abort().await;
    f.assert_leaves(&sse_id, TWO_S).await;
    // The stream was dropped before the peer left: its place is free.
    let (mut again, again_id) = bridge.connect_peer(&f, EventSource, "/4").await;
    f.assert_peers(&[&ws_id, &again_id]).await;
    again.sync().await;
    sync(&mut ws).await;
}

/// `message_rate(10, 5)`: an SSE client that sends 20 messages back to back (as chunks of
/// crossws's streaming `POST`, or one `POST` each) gets at most a few echoes (the burst and
/// what refilled meanwhile), then its stream ends and the peer leaves `/peers`; a WebSocket
/// peer next to it carries on, and an SSE peer within the rate is never cut off.
pub async fn message_rate_ends_stream(harness: &dyn Harness) {
    let (f, bridge) = start(harness, Options::new().message_rate(10, 5)).await;
    let (mut ws, ws_id) = f.connect_peer("/ws").await;
    for kind in [Crossws, EventSource] {
        let (mut client, id) = bridge.connect_peer(&f, kind, &format!("/{kind:?}")).await;
        for i in 0..20 {
            client.send_text(format!("m{i}")).await;
        }
        let mut echoes = 0;
        loop {
            match client.next_event(TWO_S).await {
                Some(ClientEvent::Message(data)) => {
                    // crossws's client streams its messages in order; the eventsource bridge
                    // sends one `POST` each, at once, which may overtake each other.
                    if kind == Crossws {
                        assert_eq!(data, format!("m{echoes}"), "{kind:?}");
                    } else {
                        assert!(
                            data.strip_prefix('m')
                                .and_then(|n| n.parse::<u32>().ok())
                                .is_some_and(|n| n < 20),
                            "{kind:?}: {data:?}"
                        );
                    }
                    echoes += 1;
                }
                Some(ClientEvent::Ended) => break,
                Some(ClientEvent::Error(_) | ClientEvent::Open | ClientEvent::Id(_)) => {}
                None => panic!("{kind:?}: the stream did not end within 2 s ({echoes} echoes)"),
            }
        }
        assert!(
            (5..20).contains(&echoes),
            "{kind:?}: {echoes} echoes: the burst of 5 must get through, not all 20"
        );
        f.assert_leaves(&id, TWO_S).await;
    }
    sync(&mut ws).await;

    // Within the rate: one message every 150 ms with a rate of 10 a second.
    let (mut client, id) = bridge.connect_peer(&f, Crossws, "/slow").await;
    for i in 0..8 {
        client.send_text(format!("slow{i}")).await;
        assert_eq!(client.recv_text().await, format!("slow{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    f.assert_peers(&[&ws_id, &id]).await;
}
