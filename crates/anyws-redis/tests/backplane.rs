//! The Redis backplane in process, against a real `redis-server`: text and binary relays
//! between an async-std server and a smol server, routed by interest (an instance without
//! subscribers to a topic receives none of its relays), a malformed relay reported and
//! survived, a shutdown that closes the Redis connections, and one-channel routing.

use anyws_conformance::redis_server::RedisServer;
use anyws_core::{async_trait, BackplaneError, Hooks, Message, Peer, Server, ServerBuilder};
use anyws_redis::RedisBackplane;
use futures_util::StreamExt;
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Subscribes every peer to `t` and tells it so.
struct Subscriber;

#[async_trait]
impl Hooks for Subscriber {
    async fn open(&self, peer: &Peer) {
        peer.subscribe("t");
        let _ = peer.send(Message::from_static("ready"));
    }
}

/// A server with the Redis backplane whose errors go to the returned channel, as text.
fn builder(redis: &RedisServer) -> (ServerBuilder, mpsc::Receiver<String>) {
    let (errors, received) = mpsc::channel();
    let errors = std::sync::Mutex::new(errors);
    let builder = ServerBuilder::new(Subscriber)
        .backplane(RedisBackplane::new(&redis.url()).expect("a valid URL"))
        .on_backplane_error(move |error: &BackplaneError| {
            let kind = match error {
                BackplaneError::Malformed(_) => "malformed",
                _ => "other",
            };
            let _ = errors.lock().unwrap().send(format!("{kind}: {error}"));
        });
    (builder, received)
}

/// A raw RESP command to the Redis server; returns the raw reply.
fn redis_command(redis: &RedisServer, args: &[&[u8]]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port())).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).expect("write");
    let mut reply = vec![0; 256];
    let n = stream.read(&mut reply).expect("read");
    reply.truncate(n);
    reply
}

/// How many connections subscribe to `channel`.
fn subscribers(redis: &RedisServer, channel: &str) -> usize {
    let reply = redis_command(redis, &[b"PUBSUB", b"NUMSUB", channel.as_bytes()]);
    let reply = String::from_utf8_lossy(&reply);
    reply
        .rsplit(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected PUBSUB NUMSUB reply {reply:?}"))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> WsMessage {
    tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
        .expect("no websocket error")
}

#[test]
fn relays_between_async_std_and_smol() {
    let redis = RedisServer::start();

    // Instance A on async-std, serving peers; instance B on smol, publishing only.
    let (a_builder, a_errors) = builder(&redis);
    let listener =
        async_std::task::block_on(async_std::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().unwrap();
    let a = a_builder.build(anyws_async_std::runtime());
    async_std::task::spawn(anyws_async_std::serve(listener, a.clone()).into_future());
    let (b_builder, b_errors) = builder(&redis);
    let b = b_builder.build(anyws_smol::runtime());
    wait_until("both backplanes connected", || {
        a.is_backplane_connected() && b.is_backplane_connected()
    });
    assert_ne!(a.instance_id(), b.instance_id());

    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .expect("connect");
        assert_eq!(next(&mut ws).await, WsMessage::text("ready"));
        // Routed by interest: A's subscription to `t` must be in effect on Redis first.
        a.backplane_synced().await;
        assert_eq!(subscribers(&redis, "anyws:t:t"), 1, "A only");
        assert_eq!(subscribers(&redis, "anyws:t:not-subscribed"), 0);

        // Binary and text, byte for byte, each exactly as published on B.
        let binary: Vec<u8> = (0..=255).collect();
        b.publish("t", Message::from_binary(binary.clone()));
        b.publish("t", "héllo");
        b.publish("not-subscribed", "nobody");
        assert_eq!(next(&mut ws).await, WsMessage::binary(binary));
        assert_eq!(next(&mut ws).await, WsMessage::text("héllo"));

        // A malformed relay on the channel is reported and skipped; relaying goes on.
        redis_command(&redis, &[b"PUBLISH", b"anyws:t:t", b"\x01not an envelope"]);
        redis_command(&redis, &[b"PUBLISH", b"anyws:t:t", b""]);
        b.publish("t", "after garbage");
        assert_eq!(next(&mut ws).await, WsMessage::text("after garbage"));
        for _ in 0..2 {
            let error = a_errors.recv_timeout(TIMEOUT).expect("a reported error");
            assert!(error.starts_with("malformed: "), "{error}");
        }

        // A's own publish reaches its peer once, locally, and is not echoed back by Redis.
        a.publish("t", "from a");
        b.publish("t", "from b");
        assert_eq!(next(&mut ws).await, WsMessage::text("from a"));
        assert_eq!(next(&mut ws).await, WsMessage::text("from b"));
        // B has no subscribers: it received none of A's relays (A's publish to `t`), while A
        // received B's four.
        assert_eq!(b.backplane_stats().relays_received, 0);
        assert_eq!(a.backplane_stats().relays_received, 4);
        drop(ws);
        // The peer is gone, so A's interest in `t` ends.
        let deadline = Instant::now() + TIMEOUT;
        while subscribers(&redis, "anyws:t:t") != 0 {
            assert!(Instant::now() < deadline, "A unsubscribed from t");
            a.backplane_synced().await;
            tokio::task::yield_now().await;
        }
    });

    // Shutdown ends the backplane: its subscription (to the control channel) goes away.
    assert_eq!(subscribers(&redis, "anyws:control"), 2);
    async_std::task::block_on(a.shutdown());
    assert!(!a.is_backplane_connected());
    wait_until("A's subscription gone", || {
        subscribers(&redis, "anyws:control") == 1
    });
    smol::block_on(b.shutdown());
    wait_until("B's subscription gone", || {
        subscribers(&redis, "anyws:control") == 0
    });
    assert!(a_errors.try_recv().is_err(), "no other error on A");
    // B never subscribed to `t`, so it saw neither malformed relay, and nothing went wrong.
    let b_errors: Vec<String> = b_errors.try_iter().collect();
    assert!(b_errors.is_empty(), "{b_errors:?}");
}

/// `Routing::OneChannel`: every instance receives every relay on one channel, subscribers or
/// not; the control to the interest-routed test above.
#[test]
fn one_channel_reaches_every_instance() {
    let redis = RedisServer::start();
    let backplane = || {
        RedisBackplane::new(&redis.url())
            .expect("a valid URL")
            .routing(anyws_redis::Routing::OneChannel)
    };
    let a = ServerBuilder::new(Subscriber)
        .backplane(backplane())
        .build(anyws_smol::runtime());
    let b = ServerBuilder::new(Subscriber)
        .backplane(backplane())
        .build(anyws_smol::runtime());
    smol::block_on(async {
        a.backplane_connected().await;
        b.backplane_connected().await;
        // Already in effect: one channel needs no subscription per topic.
        a.backplane_synced().await;
    });
    assert_eq!(subscribers(&redis, "anyws"), 2);
    b.publish("nobody-here", "x");
    b.publish("nobody-here", "y");
    wait_until("A received B's relays", || {
        a.backplane_stats().relays_received == 2
    });
    assert_eq!(
        b.backplane_stats().relays_received,
        0,
        "its own are ignored"
    );
    smol::block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn invalid_url_is_an_error() {
    let error = RedisBackplane::new("http://127.0.0.1/").expect_err("not a Redis URL");
    assert!(
        error.to_string().starts_with("invalid Redis URL"),
        "{error}"
    );
}

/// Redis is not running at all: publishing goes on, the failure goes to the error callback,
/// and shutdown still ends the backplane.
#[test]
fn unreachable_redis_is_reported() {
    let redis = RedisServer::start();
    let (builder, errors) = builder(&redis);
    drop(redis);
    let server: Server = builder.build(anyws_smol::runtime());
    for n in 0..1000 {
        server.publish("t", format!("{n}"));
    }
    let first = errors
        .recv_timeout(TIMEOUT)
        .expect("the failure is reported");
    assert!(first.contains("Redis"), "{first}");
    assert!(!server.is_backplane_connected());
    smol::block_on(server.shutdown());
}
