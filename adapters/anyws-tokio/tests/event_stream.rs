//! An event stream served by anyws-tokio to real TCP clients: a client that stops reading holds
//! the producer back at the bounded buffer (the server never holds more than the buffer and the
//! socket buffers), nothing is lost once it reads again, and a client that goes away while the
//! producer waits closes the producer's sender.

use anyws_core::sse::{Event, EventSender, EventStream};
use anyws_core::Hooks;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// The event stream's buffer in this test.
const BUFFER: usize = 16 * 1024;
/// What the producer tries to push to a client that reads nothing: far more than any buffer.
const ATTEMPT: usize = 64 * 1024 * 1024;
/// What may sit between the producer and a stalled client: the stream's buffer, hyper's write
/// buffer and the loopback socket buffers (a few MiB at most with Linux autotuning).
const IN_FLIGHT_BOUND: usize = 8 * 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(5);

struct NoHooks;
impl Hooks for NoHooks {}

/// Serves an event stream (buffer [`BUFFER`], no keep-alive) on every plain GET, and hands each
/// stream's sender to the test.
async fn start() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<EventSender>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (senders, streams) = mpsc::unbounded_channel();
    let server = anyws_tokio::server(NoHooks);
    tokio::spawn(
        anyws_tokio::serve(listener, server)
            .fallback(move |_request| {
                let (events, stream) = EventStream::builder(anyws_tokio::runtime())
                    .buffer(BUFFER)
                    .keep_alive(None)
                    .build();
                let _ = senders.send(events);
                async move { anyws_tokio::event_stream_response(stream) }
            })
            .into_future(),
    );
    (addr, streams)
}

/// A client with a 4 KiB receive buffer that sends a GET and reads the response head only.
async fn stalled_client(addr: std::net::SocketAddr) -> (TcpStream, Vec<u8>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, stream.read(&mut chunk))
            .await
            .expect("response head")
            .unwrap();
        assert!(n > 0, "closed before the head");
        seen.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("x-accel-buffering: no"), "{head}");
    (stream, seen)
}

fn event(i: usize) -> Event {
    Event::data(format!("{i:08}:{}", "x".repeat(1000))).id(i.to_string())
}

/// Pushes events with `send` until `ATTEMPT` bytes went or it has waited for room for `patience`;
/// returns how many events and bytes the stream took.
async fn push_until_blocked(events: &EventSender, patience: Duration) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    while bytes < ATTEMPT {
        let next = event(count);
        let len = next.encoded_len();
        match tokio::time::timeout(patience, events.send(next)).await {
            Ok(Ok(())) => {}
            Ok(Err(closed)) => panic!("the stream closed: {closed}"),
            Err(_) => break,
        }
        assert!(
            events.buffered_amount() <= BUFFER,
            "{} bytes buffered",
            events.buffered_amount()
        );
        count += 1;
        bytes += len;
    }
    (count, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_the_producer_back() {
    let (addr, mut streams) = start().await;
    let (mut client, mut received) = stalled_client(addr).await;
    let events = streams.recv().await.expect("the stream's sender");

    let (count, bytes) = push_until_blocked(&events, Duration::from_secs(1)).await;
    eprintln!("a stalled client took {count} events, {bytes} bytes, before the producer waited");
    assert!(
        bytes < IN_FLIGHT_BOUND,
        "the server took {bytes} bytes for a client that reads nothing"
    );
    assert!(
        events.try_send(event(count)).unwrap_err().is_full(),
        "try_send reports a full buffer"
    );
    assert!(events.buffered_amount() <= BUFFER);
    assert!(!events.is_closed());

    // The client reads again: every event the stream took arrives, in order, and nothing else.
    events.close();
    loop {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(LIMIT, client.read(&mut chunk))
            .await
            .expect("the rest of the stream")
            .unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        if received.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let body = dechunk(&received);
    assert_eq!(body.len(), bytes, "every byte the stream took, once");
    let expected: Vec<u8> = (0..count).flat_map(|i| event(i).to_bytes()).collect();
    assert!(body == expected, "the events arrive complete and in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_closes_the_waiting_producer() {
    let (addr, mut streams) = start().await;
    let (client, _) = stalled_client(addr).await;
    let events = streams.recv().await.expect("the stream's sender");
    push_until_blocked(&events, Duration::from_millis(500)).await;

    // The producer waits for room; the client leaves without reading.
    let waiting = tokio::spawn({
        let events = events.clone();
        async move { events.send(event(usize::MAX)).await }
    });
    drop(client);
    tokio::time::timeout(LIMIT, events.closed())
        .await
        .expect("closed() resolves once the client is gone");
    assert!(events.is_closed());
    assert_eq!(
        tokio::time::timeout(LIMIT, waiting).await.unwrap().unwrap(),
        Err(anyws_core::sse::Closed),
        "the waiting send fails"
    );
    assert_eq!(events.buffered_amount(), 0, "the buffer is freed");
}

/// The payload of a complete chunked body after its response head.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &raw[head_end..];
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
}
