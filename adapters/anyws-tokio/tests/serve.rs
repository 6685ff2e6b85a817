//! The tokio adapter end to end, with a real WebSocket client: the resolver, embedding in a plain
//! hyper service, the fallback, hooks order and graceful shutdown.

use anyws_core::{async_trait, CloseInfo, Hooks, Message, Peer, Request, ServerBuilder};
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

const LIMIT: Duration = Duration::from_secs(5);

/// Echoes with a prefix and reports its open and close hooks.
struct Named {
    name: &'static str,
    events: mpsc::UnboundedSender<String>,
}

#[async_trait]
impl Hooks for Named {
    async fn open(&self, peer: &Peer) {
        let _ = self
            .events
            .send(format!("{} open {}", self.name, peer.namespace()));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let _ = peer.send(format!("{}: {}", self.name, message.text().unwrap_or("?")));
    }

    async fn close(&self, peer: &Peer, info: CloseInfo) {
        assert!(
            peer.peers().iter().all(|p| p != peer),
            "a closed peer has left its namespace"
        );
        let _ = self
            .events
            .send(format!("{} close {}", self.name, info.code));
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("127.0.0.1:{}", addr.port()))
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: StreamExt<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(tungstenite::Message::Text(text))) => return text.to_string(),
            Some(Ok(tungstenite::Message::Ping(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn resolver_routes_by_path_and_unmatched_paths_get_404() {
    let (events, mut seen) = mpsc::unbounded_channel();
    let chat: Arc<dyn Hooks> = Arc::new(Named {
        name: "chat",
        events: events.clone(),
    });
    let echo: Arc<dyn Hooks> = Arc::new(Named {
        name: "echo",
        events,
    });
    let resolver = move |request: &mut Request| -> Option<Arc<dyn Hooks>> {
        match request.path() {
            "/chat" => Some(chat.clone()),
            "/echo" => Some(echo.clone()),
            _ => None,
        }
    };
    let server = ServerBuilder::with_resolver(resolver).build(anyws_tokio::runtime());
    let (listener, addr) = listener().await;
    let serving = tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());

    let (mut chat, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    let (mut echo, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo"))
        .await
        .unwrap();
    chat.send("hi".into()).await.unwrap();
    echo.send("hi".into()).await.unwrap();
    assert_eq!(next_text(&mut chat).await, "chat: hi");
    assert_eq!(next_text(&mut echo).await, "echo: hi");

    match tokio_tungstenite::connect_async(format!("ws://{addr}/nowhere")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    assert_eq!(server.peer_count(), 2);
    let mut opened = vec![seen.recv().await.unwrap(), seen.recv().await.unwrap()];
    opened.sort();
    assert_eq!(opened, ["chat open /chat", "echo open /echo"]);

    // Graceful shutdown closes every peer with 1001 and ends `serve`.
    server.shutdown().await;
    for ws in [&mut chat, &mut echo] {
        match tokio::time::timeout(LIMIT, ws.next()).await.unwrap() {
            Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1001)
            }
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    tokio::time::timeout(LIMIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut closed = vec![seen.recv().await.unwrap(), seen.recv().await.unwrap()];
    closed.sort();
    assert_eq!(closed, ["chat close 1001", "echo close 1001"]);
}

#[tokio::test]
async fn embeds_in_a_plain_hyper_service_next_to_ordinary_routes() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let (events, _seen) = mpsc::unbounded_channel();
    let server = anyws_tokio::server(Named {
        name: "embedded",
        events,
    });
    let (listener, addr) = listener().await;
    let accept = tokio::spawn(async move {
        loop {
            let (stream, remote) = listener.accept().await.unwrap();
            let server = server.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let server = server.clone();
                async move {
                    let response = match anyws_tokio::upgrade(&server, request, Some(remote)).await
                    {
                        Ok(websocket) => websocket,
                        Err(_plain) => {
                            use http_body_util::BodyExt;
                            let body = Full::new(bytes::Bytes::from("plain route"));
                            hyper::Response::new(
                                body.map_err(|never| match never {}).boxed_unsync(),
                            )
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });

    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/x"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send("ping".into()).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "embedded: ping");

    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    plain.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("plain route"), "{text}");
    accept.abort();
}

#[tokio::test]
async fn serve_sends_ordinary_requests_to_the_fallback() {
    let (events, _seen) = mpsc::unbounded_channel();
    let server = anyws_tokio::server(Named { name: "x", events });
    let (listener, addr) = listener().await;
    let hits = Arc::new(Mutex::new(Vec::new()));
    let recorded = hits.clone();
    let serving = tokio::spawn(
        anyws_tokio::serve(listener, server.clone())
            .fallback(move |request: hyper::Request<hyper::body::Incoming>| {
                recorded.lock().unwrap().push(request.uri().to_string());
                async {
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from("fallback")))
                }
            })
            .into_future(),
    );
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("x-test", "1".parse().unwrap());
    let (_ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET /page?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    plain.read_to_string(&mut text).await.unwrap();
    assert!(text.ends_with("fallback"), "{text}");
    assert_eq!(*hits.lock().unwrap(), ["/page?q=1"]);
    server.shutdown().await;
    tokio::time::timeout(LIMIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

use std::future::IntoFuture;

/// Dropping the `Serve` future (here by aborting the task that awaits it) stops the accept loop
/// and closes the listener, while a peer it accepted carries on.
#[tokio::test]
async fn dropping_serve_stops_accepting_and_peers_carry_on() {
    let (events, _seen) = mpsc::unbounded_channel();
    let server = anyws_tokio::server(Named { name: "x", events });
    let (listener, addr) = listener().await;
    let serving = tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    serving.abort();
    assert!(serving.await.unwrap_err().is_cancelled());
    // The loop's task sees the abort when next polled, and drops the listener.
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        refused,
        "still accepting after the Serve future was dropped"
    );
    ws.send(tungstenite::Message::text("still here"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "x: still here");
    assert_eq!(server.peers().len(), 1);
}

/// Floods the peer on request and reports when its buffer has drained.
struct Flood;

#[async_trait]
impl Hooks for Flood {
    async fn message(&self, peer: &Peer, _message: Message) {
        // 12 MiB: more than the kernel's socket buffers can absorb while the client is not reading.
        for _ in 0..12 {
            let _ = peer.send(vec![7_u8; 1 << 20]);
        }
    }

    async fn drain(&self, peer: &Peer) {
        let _ = peer.send("drained");
    }
}

#[tokio::test]
async fn drain_runs_once_a_backed_up_peer_has_caught_up() {
    let server = ServerBuilder::new(Flood)
        .max_buffered_bytes(64 << 20)
        .build(anyws_tokio::runtime());
    let (listener, addr) = listener().await;
    let serving = tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());

    // A client with a tiny receive buffer that stops reading, so the server's writes block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .unwrap();
    ws.send("flood".into()).await.unwrap();

    // Wait until the server has queued the flood.
    let peer = tokio::time::timeout(LIMIT, async {
        loop {
            match server.peers().pop() {
                Some(peer) if peer.buffered_amount() > 0 => break peer,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("the flood was never queued");

    // Read everything: twelve binary messages, then the drain notice.
    for _ in 0..12 {
        match tokio::time::timeout(LIMIT, ws.next()).await.unwrap() {
            Some(Ok(tungstenite::Message::Binary(data))) => assert_eq!(data.len(), 1 << 20),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    assert_eq!(next_text(&mut ws).await, "drained");
    assert_eq!(peer.buffered_amount(), 0);
    drop(ws);
    server.shutdown().await;
    tokio::time::timeout(LIMIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Greets with the room from the path, and lists the peers of its namespace.
struct Room(&'static str);

#[async_trait]
impl Hooks for Room {
    async fn upgrade(
        &self,
        request: &Request,
    ) -> Result<anyws_core::Accept, anyws_core::Rejection> {
        // Parameters are visible to `upgrade` too.
        assert!(request.param("id").is_some() || self.0 == "news");
        Ok(anyws_core::Accept::new())
    }

    async fn open(&self, peer: &Peer) {
        let room = peer.request().param("id").unwrap_or("-");
        let _ = peer.send(format!("{} {room} {}", self.0, peer.namespace()));
    }

    async fn message(&self, peer: &Peer, _message: Message) {
        let _ = peer.send(peer.peers().len().to_string());
    }
}

#[tokio::test]
async fn router_passes_path_parameters_and_keeps_routes_apart() {
    let router = anyws_core::Router::new()
        .route("/rooms/:id", Room("room"))
        .route("/news", Room("news"));
    let server = ServerBuilder::with_resolver(router).build(anyws_tokio::runtime());
    let (listener, addr) = listener().await;
    let serving = tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());

    let (mut a, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rooms/caf%C3%A9"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut a).await, "room café /rooms/caf%C3%A9");
    let (mut b, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rooms/caf%C3%A9"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut b).await, "room café /rooms/caf%C3%A9");
    let (mut news, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/news"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut news).await, "news - /news");

    // Each route's peers are in a namespace of their own.
    a.send("count".into()).await.unwrap();
    assert_eq!(next_text(&mut a).await, "2");
    news.send("count".into()).await.unwrap();
    assert_eq!(next_text(&mut news).await, "1");

    // No route: 404, and no peer is created.
    for path in ["/rooms/", "/rooms/a/b", "/elsewhere"] {
        match tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
            other => panic!("{path}: expected 404, got {other:?}"),
        }
    }
    assert_eq!(server.peer_count(), 3);
    drop((a, b, news));
    server.shutdown().await;
    tokio::time::timeout(LIMIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// An upgrade request whose head (request line, headers, final empty line) is exactly `len`
/// bytes, padded with an `x-pad` header written `name: value`.
fn upgrade_head(addr: &str, len: usize) -> String {
    let start = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-pad: "
    );
    let pad = len - start.len() - "\r\n\r\n".len();
    let head = format!("{start}{}\r\n\r\n", "a".repeat(pad));
    assert_eq!(head.len(), len);
    head
}

/// The status code of the answer to `head` on a connection of its own.
async fn status_of(addr: &str, head: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut status_line = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(LIMIT, reader.read_line(&mut status_line))
        .await
        .expect("timed out")
        .unwrap();
    status_line.get(9..12).unwrap_or_default().parse().unwrap()
}

#[tokio::test]
async fn serve_holds_request_heads_to_the_limit_to_the_byte() {
    struct App;
    impl Hooks for App {}
    // Below and above hyper's minimum read buffer (8 KiB) and its default (408 KiB).
    for limit in [1000, 20_000, 500_000] {
        let server = ServerBuilder::new(App)
            .max_request_head_bytes(limit)
            .build(anyws_tokio::runtime());
        let (listener, addr) = listener().await;
        tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());
        assert_eq!(status_of(&addr, &upgrade_head(&addr, limit)).await, 101);
        assert_eq!(status_of(&addr, &upgrade_head(&addr, limit + 1)).await, 431);
        // Ordinary requests on the connection are held to it too.
        let get = format!(
            "GET /{} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
            "a".repeat(limit)
        );
        assert_eq!(status_of(&addr, &get).await, 431);
        server.shutdown().await;
    }
}

/// Joins `room` on open.
struct Joins;

#[async_trait]
impl Hooks for Joins {
    async fn open(&self, peer: &Peer) {
        peer.subscribe("room");
    }
}

/// An SSE client that stops reading its stream is cut off (its send queue passes
/// `max_buffered_bytes`), and `serve` then drops its connection too: the response could never
/// finish, and keeping the connection would keep its socket and buffers until the client went
/// away. Reading again, the client finds the connection closed (not a finished response on a
/// connection kept open).
#[tokio::test]
async fn serve_drops_the_connection_of_a_stalled_sse_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, addr) = listener().await;
    let server = ServerBuilder::new(Joins)
        .sse(true)
        .max_buffered_bytes(64 * 1024)
        .close_timeout(Duration::from_millis(200))
        .build(anyws_tokio::runtime());
    let serving = tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr.parse().unwrap()).await.unwrap();
    stalled
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // Wait for the peer to join the room, without reading anything.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.peers().iter().all(|peer| peer.topics().is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "no peer opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer = server.peers().pop().expect("the peer");
    let message = "x".repeat(16 * 1024);
    let mut published = 0;
    while peer.ready_state() == anyws_core::ReadyState::Open {
        assert!(
            published < 4096,
            "the stalled peer was not cut off after {published} messages"
        );
        server.publish("room", message.as_str());
        published += 1;
        tokio::task::yield_now().await;
    }
    while server.peer_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the peer stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The peer is gone; so is the connection, whatever the client had not read yet.
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    loop {
        match tokio::time::timeout(LIMIT, stalled.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection stayed open ({read} bytes read, ending {:?})",
                String::from_utf8_lossy(&buf[..16])
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
        }
    }
    server.shutdown().await;
    serving.await.unwrap().unwrap();
}

/// Frames that arrive with the upgrade request, in the same write (hyper reads them along with
/// the head), reach the peer first and in order, before anything read from the socket after.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_read_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (events, _seen) = mpsc::unbounded_channel();
    let server = anyws_tokio::server(Named { name: "x", events });
    let (listener, addr) = listener().await;
    tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());
    // A masked text frame (mask 0x01020304).
    let frame = |text: &str| {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    };
    let mut bytes = upgrade_head(&addr, 300).into_bytes();
    bytes.extend(frame("one"));
    bytes.extend(frame("two"));
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream.write_all(&frame("three")).await.unwrap();
    // The 101 head, then three text frames from the server (unmasked, 2-byte headers).
    let expected: Vec<u8> = ["x: one", "x: two", "x: three"]
        .iter()
        .flat_map(|text| {
            let mut frame = vec![0x81, text.len() as u8];
            frame.extend_from_slice(text.as_bytes());
            frame
        })
        .collect();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            if received.len() >= end + 4 + expected.len() {
                break end + 4;
            }
        }
        let n = tokio::time::timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("timed out")
            .unwrap();
        assert_ne!(
            n,
            0,
            "closed early: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    };
    assert!(received.starts_with(b"HTTP/1.1 101"));
    assert_eq!(&received[head_end..], &expected[..]);
    server.shutdown().await;
}
