//! Hardening: dead-peer detection, connection limits, the message rate, the origin allow-list
//! and fail-fast UTF-8 checking. The counts of hooks come from the `soak` app's
//! `GET /soak/hooks`.

use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::client::*;
use crate::{App, Harness, Options};

const TWO_S: Duration = Duration::from_secs(2);

/// `GET /soak/hooks`: how often `upgrade`, `open` and `close` ran, and the connections holding a
/// place in the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookCounts {
    /// `upgrade` hooks run.
    pub upgrades: u64,
    /// `open` hooks run.
    pub opened: u64,
    /// `close` hooks run to the end.
    pub closed: u64,
    /// Connections holding a place in the connection limits.
    pub connections: u64,
}

/// Reads `GET /soak/hooks` of a server running the `soak` app.
pub async fn hook_counts(f: &Fixture) -> HookCounts {
    let response = f.get("/soak/hooks").await;
    assert_eq!(
        response.status, 200,
        "GET /soak/hooks: {}",
        response.status_line
    );
    let value: serde_json::Value =
        serde_json::from_slice(&response.body).expect("/soak/hooks is JSON");
    let field = |name: &str| {
        value[name]
            .as_u64()
            .unwrap_or_else(|| panic!("/soak/hooks has no {name}: {value}"))
    };
    HookCounts {
        upgrades: field("upgrades"),
        opened: field("opened"),
        closed: field("closed"),
        connections: field("connections"),
    }
}

/// Polls `GET /soak/hooks` every 20 ms until `done` holds, for up to `timeout`; the last counts.
pub async fn wait_for_counts(
    f: &Fixture,
    timeout: Duration,
    done: impl Fn(&HookCounts) -> bool,
) -> HookCounts {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = hook_counts(f).await;
        if done(&counts) || Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dead-peer detection: with a ping interval of 100 ms and an idle timeout of 800 ms, a client
/// that completed the handshake and then ignores everything gets pings at the interval (several
/// of them, not one at half the idle timeout), is dropped, leaves `/peers`, and its `close` hook
/// runs. A client that answers the pings, while sending nothing of its own, stays open past
/// twice the idle timeout.
pub async fn dead_peer_is_closed_and_close_hook_runs(harness: &dyn Harness) {
    let f = Fixture::start(
        harness,
        Options::new()
            .app(App::Soak)
            .idle_timeout(Duration::from_millis(800))
            .ping_interval(Duration::from_millis(100)),
    )
    .await;
    // The dead peer first, so that the live one is sent nothing but pings.
    let (mut dead, dead_id) = f.raw_peer("/").await;
    let (mut live, _) = f.connect_peer("/").await;
    let started = Instant::now();
    // The live client reads, which answers every ping, until the dead one is gone and twice the
    // idle timeout has passed.
    let live_part = async {
        let mut pings = 0;
        while started.elapsed() < Duration::from_millis(1600) {
            match tokio::time::timeout(Duration::from_millis(100), live.next()).await {
                Err(_) => {}
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(other) => panic!("the answering peer got {other:?}"),
            }
        }
        pings
    };
    let (live_pings, ()) = tokio::join!(live_part, f.assert_leaves(&dead_id, TWO_S));
    assert!(live_pings >= 2, "the answering peer got {live_pings} pings");
    let counts = wait_for_counts(&f, TWO_S, |c| c.closed == 1).await;
    assert_eq!(
        (counts.opened, counts.closed),
        (2, 1),
        "the dead peer's close hook must run: {counts:?}"
    );
    // What the dead peer was sent before it was dropped: pings, then maybe nothing else.
    let mut pings = 0;
    while let Ok(Some(frame)) = dead.read_frame_timeout(TWO_S).await {
        if frame.opcode == OP_PING {
            pings += 1;
        }
    }
    assert!(
        pings >= 3,
        "the silent peer got {pings} pings within the 800 ms idle timeout, with an interval of \
         100 ms"
    );
    // The live peer is still there and still works.
    send_text(&mut live, "ping").await;
    assert_eq!(recv_text(&mut live).await, "pong");
    assert_eq!(f.peers().await.len(), 1);
}

/// `max_connections(2)`: a third handshake gets 503 before any hook sees it; once a peer is
/// gone (here by a dropped TCP connection), its place is free again.
pub async fn max_connections_gets_503(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().app(App::Soak).max_connections(2)).await;
    // Each in a namespace of its own, so that no peer hears of the others.
    let (first, first_id) = f.connect_peer("/1").await;
    let (mut second, _) = f.connect_peer("/2").await;
    let (response, _raw) = f.raw_upgrade("/", &[]).await;
    assert_eq!(response.status, 503, "{}", response.status_line);
    let counts = hook_counts(&f).await;
    assert_eq!(
        (counts.upgrades, counts.opened, counts.connections),
        (2, 2, 2),
        "{counts:?}"
    );
    assert_eq!(f.peers().await.len(), 2);

    // An abrupt end gives the place back.
    drop(first);
    f.assert_leaves(&first_id, TWO_S).await;
    let counts = wait_for_counts(&f, TWO_S, |c| c.connections == 1).await;
    assert_eq!(counts.connections, 1, "{counts:?}");
    let (mut third, _) = f.connect_peer("/3").await;
    sync(&mut third).await;
    sync(&mut second).await;
}

/// `max_connections_per_ip(1)`: a second peer from the same address gets 429; a peer from
/// another loopback address (127.0.0.2) is let in.
pub async fn max_connections_per_ip_gets_429(harness: &dyn Harness) {
    let f = Fixture::start(
        harness,
        Options::new().app(App::Soak).max_connections_per_ip(1),
    )
    .await;
    let (mut first, _) = f.connect_peer("/first").await;
    let (response, _raw) = f.raw_upgrade("/", &[]).await;
    assert_eq!(response.status, 429, "{}", response.status_line);
    assert_eq!(hook_counts(&f).await.upgrades, 1);
    if f.socket_addr().is_ipv4() {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("address"))
            .expect("bind 127.0.0.2");
        let stream = socket.connect(f.socket_addr()).await.expect("connect");
        let stream = f.http1_stream(stream).await;
        let (response, _other) = f
            .raw_request(stream, f.upgrade_request("/", &[]).as_bytes())
            .await;
        assert!(response.upgraded(), "{}", response.status_line);
    }
    sync(&mut first).await;
}

/// `message_rate(10, 5)`: 20 messages back to back get at most a few echoes (the burst and what
/// refilled meanwhile) and a close with 1008; a peer within the rate is never cut off.
pub async fn message_rate_closes_1008(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().message_rate(10, 5)).await;
    let (mut ws, id) = f.connect_peer("/").await;
    for i in 0..20 {
        send_text(&mut ws, format!("m{i}")).await;
    }
    let mut echoes = 0;
    let ending = loop {
        match tokio::time::timeout(TWO_S, ws.next())
            .await
            .expect("no close within 2 s")
        {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), format!("m{echoes}"));
                echoes += 1;
            }
            Some(Ok(Message::Close(frame))) => {
                break Ending::Close(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break Ending::Dropped,
        }
    };
    assert_eq!(ending, Ending::Close(1008));
    assert!(
        (5..20).contains(&echoes),
        "{echoes} echoes: the burst of 5 must get through, not all 20"
    );
    f.assert_leaves(&id, TWO_S).await;

    // Within the rate: one message every 150 ms with a rate of 10 a second.
    let (mut ws, _) = f.connect_peer("/").await;
    for i in 0..8 {
        send_text(&mut ws, format!("slow{i}")).await;
        assert_eq!(recv_text(&mut ws).await, format!("slow{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// An origin allow-list: a forbidden `Origin` gets 403 before any hook sees it; an allowed one
/// (in any case) and a request without `Origin` (a non-browser client) get a peer.
pub async fn origin_allow_list_gets_403(harness: &dyn Harness) {
    let f = Fixture::start(
        harness,
        Options::new()
            .app(App::Soak)
            .allowed_origin("https://good.example"),
    )
    .await;
    for origin in ["https://evil.example", "null", "https://good.example.evil"] {
        let (response, _raw) = f.raw_upgrade("/", &[&format!("Origin: {origin}")]).await;
        assert_eq!(response.status, 403, "{origin}: {}", response.status_line);
    }
    assert_eq!(hook_counts(&f).await.upgrades, 0);
    let (response, mut raw) = f.raw_upgrade("/", &["Origin: https://GOOD.example"]).await;
    assert!(response.upgraded(), "{}", response.status_line);
    assert_eq!(raw.read_data().await.opcode, OP_TEXT);
    let (mut ws, _) = f.connect_peer("/").await;
    sync(&mut ws).await;
    assert_eq!(hook_counts(&f).await.opened, 2);
}

/// Invalid UTF-8 closes the peer with 1007 as soon as it arrives: in the first part of a text
/// frame whose rest is never sent, and in a continuation frame of a fragmented text message.
pub async fn invalid_utf8_fails_fast(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;

    let (mut raw, id) = f.raw_peer("/").await;
    let mut payload = b"valid start ".to_vec();
    payload.extend_from_slice(&[0xF8, 0x88, 0x80, 0x80, 0x80]);
    payload.resize(1000, b'x');
    let frame = encode_frame(true, OP_TEXT, &payload, true);
    // The header (2 + 2 + 4 bytes) and the first 20 bytes of payload only.
    raw.write(&frame[..28]).await;
    assert_eq!(raw.expect_close(TWO_S).await, Ending::Close(1007));
    f.assert_leaves(&id, TWO_S).await;

    let (mut raw, id) = f.raw_peer("/").await;
    raw.send_frame(false, OP_TEXT, "κόσμε".as_bytes(), true)
        .await;
    let frame = encode_frame(
        false,
        OP_CONTINUATION,
        &[0xCE, 0xBA, 0xED, 0xA0, 0x80, 0x20],
        true,
    );
    raw.write(&frame[..frame.len() - 1]).await;
    assert_eq!(raw.expect_close(TWO_S).await, Ending::Close(1007));
    f.assert_leaves(&id, TWO_S).await;

    // Valid text split anywhere is still echoed whole.
    let (mut raw, _) = f.raw_peer("/").await;
    let text = "Hello-µ@ßöäüàá-UTF-8!!";
    raw.send_frame(false, OP_TEXT, &text.as_bytes()[..7], true)
        .await;
    raw.send_frame(true, OP_CONTINUATION, &text.as_bytes()[7..], true)
        .await;
    let echo = raw.read_data().await;
    assert_eq!(echo.payload, text.as_bytes());
}
