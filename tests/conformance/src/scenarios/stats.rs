//! Live counters: `GET /stats` (`FIXTURE.md`, "Observability") moves as peers connect, talk,
//! close and are refused. Every check compares two snapshots, so whatever the server did
//! before (the welcome lines, the `joined!` publishes) does not matter.

use std::time::{Duration, Instant};

use crate::client::*;
use crate::sse_client::{Bridge, ClientKind};
use crate::{Harness, Options};

const TWO_S: Duration = Duration::from_secs(2);

/// `GET /stats`, parsed.
pub async fn stats(f: &Fixture) -> serde_json::Value {
    let response = f.get("/stats").await;
    assert_eq!(response.status, 200, "GET /stats: {}", response.status_line);
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "GET /stats content-type: {:?}",
        response.header("content-type")
    );
    serde_json::from_slice(&response.body).expect("/stats is JSON")
}

/// A counter of a `/stats` object: `path` is a field, or `closes.1000` for a key of a map
/// (absent counts as 0).
pub fn counter(stats: &serde_json::Value, path: &str) -> u64 {
    let mut value = stats;
    let mut parts = path.split('.');
    let field = parts.next().unwrap_or_default();
    value = &value[field];
    if let Some(key) = parts.next() {
        return value.get(key).map_or(0, |v| v.as_u64().expect("a count"));
    }
    value
        .as_u64()
        .unwrap_or_else(|| panic!("/stats has no {path}: {stats}"))
}

/// Polls `GET /stats` every 20 ms until `done` holds, for up to `timeout`; the last snapshot.
async fn wait_for_stats(
    f: &Fixture,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = stats(f).await;
        if done(&stats) || Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three peers: one sends n messages, each echoed to it and published to the two others, so
/// `messagesIn` moves by n and `messagesOut` by 3n (a publish to k subscribers counts k), and
/// the bytes likewise; `peers` is 3. Then one closes with 4001 and one drops its connection:
/// `closes` gains a 4001 and a 1006, and `peers` is 1.
pub async fn stats_count_messages_and_closes(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    let (mut a, _) = f.connect_peer("/stats").await;
    let (mut b, b_id) = f.connect_peer("/stats").await;
    let (mut c, c_id) = f.connect_peer("/stats").await;
    // The `joined!` lines of the later peers, then nothing else is queued for anyone.
    assert!(recv_text(&mut a).await.ends_with("joined!"));
    assert!(recv_text(&mut a).await.ends_with("joined!"));
    assert!(recv_text(&mut b).await.ends_with("joined!"));
    sync(&mut a).await;
    sync(&mut b).await;
    sync(&mut c).await;

    let before = stats(&f).await;
    assert_eq!(counter(&before, "peers"), 3, "{before}");
    let sent: Vec<String> = (0..5)
        .map(|i| format!("message {i} {}", "x".repeat(i)))
        .collect();
    let bytes: u64 = sent.iter().map(|m| m.len() as u64).sum();
    for message in &sent {
        send_text(&mut a, message.clone()).await;
    }
    for message in &sent {
        assert_eq!(&recv_text(&mut a).await, message);
        assert_eq!(&recv_text(&mut b).await, message);
        assert_eq!(&recv_text(&mut c).await, message);
    }
    // Every copy was queued before its client could read it.
    let after = stats(&f).await;
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("messagesIn"), 5, "{before} → {after}");
    assert_eq!(delta("bytesIn"), bytes, "{before} → {after}");
    assert_eq!(delta("messagesOut"), 15, "{before} → {after}");
    assert_eq!(delta("bytesOut"), 3 * bytes, "{before} → {after}");
    assert_eq!(counter(&after, "peers"), 3, "{after}");

    send_close(&mut b, 4001, "done").await;
    assert_eq!(expect_close(&mut b, TWO_S).await, Ending::Close(4001));
    f.assert_leaves(&b_id, TWO_S).await;
    drop(c);
    f.assert_leaves(&c_id, TWO_S).await;
    // A peer's close is counted before it leaves the list.
    let closed = stats(&f).await;
    let closes = |code: &str| {
        counter(&closed, &format!("closes.{code}")) - counter(&before, &format!("closes.{code}"))
    };
    assert_eq!(closes("4001"), 1, "{before} → {closed}");
    assert_eq!(closes("1006"), 1, "{before} → {closed}");
    assert_eq!(counter(&closed, "peers"), 1, "{closed}");
    sync(&mut a).await;
}

/// A refused upgrade (`?unauthorized`, 401), a broken one (no `Sec-WebSocket-Key`, a 4xx) and
/// one whose head is over the 16 KiB limit (431, whether the HTTP layer or the server refused
/// it) show in `rejected` by status, and no peer is counted for them.
pub async fn stats_count_refused_upgrades(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    let before = stats(&f).await;
    let (response, _raw) = f.raw_upgrade("/?unauthorized", &[]).await;
    assert_eq!(response.status, 401, "{}", response.status_line);
    let broken = f
        .request(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13",
            b"",
        )
        .await;
    assert!(
        (400..500).contains(&broken.status),
        "{}",
        broken.status_line
    );
    let after = stats(&f).await;
    let rejected = |status: u16| {
        counter(&after, &format!("rejected.{status}"))
            - counter(&before, &format!("rejected.{status}"))
    };
    assert_eq!(rejected(401), 1, "{before} → {after}");
    assert_eq!(rejected(broken.status), 1, "{before} → {after}");
    assert_eq!(counter(&after, "peers"), 0, "{after}");

    let big = format!("X-Big: {}", "b".repeat(20_000));
    let (response, _raw) = f.raw_upgrade("/", &[&big]).await;
    assert_eq!(response.status, 431, "{}", response.status_line);
    // The HTTP layer may count it as the connection ends, just after the client has the answer.
    let last = wait_for_stats(&f, TWO_S, |s| counter(s, "rejected.431") == 1).await;
    assert_eq!(counter(&last, "rejected.431"), 1, "{last}");
    assert_eq!(counter(&last, "peers"), 0, "{last}");
}

/// A limit's refusal is counted too: with `max_connections(1)`, a second upgrade gets 503 and
/// `rejected` shows it.
pub async fn stats_count_limit_refusals(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().max_connections(1)).await;
    let (mut ws, _) = f.connect_peer("/").await;
    let (response, _raw) = f.raw_upgrade("/", &[]).await;
    assert_eq!(response.status, 503, "{}", response.status_line);
    let after = stats(&f).await;
    assert_eq!(counter(&after, "rejected.503"), 1, "{after}");
    assert_eq!(counter(&after, "peers"), 1, "{after}");
    sync(&mut ws).await;
}

/// SSE peers count as peers, and their messages in and out as a WebSocket peer's do; the end
/// of an SSE stream is counted as a close.
pub async fn stats_count_sse_peers(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().sse()).await;
    let bridge = Bridge::start().await;
    let (mut sse, sse_id) = bridge.connect_peer(&f, ClientKind::Crossws, "/stats").await;
    let (mut ws, _) = f.connect_peer("/stats").await;
    // The SSE peer hears the WebSocket peer join.
    assert!(sse.recv_text().await.ends_with("joined!"));
    sse.sync().await;
    sync(&mut ws).await;
    let before = stats(&f).await;
    assert_eq!(counter(&before, "peers"), 2, "{before}");
    assert_eq!(counter(&before, "ssePeers"), 1, "{before}");
    assert_eq!(counter(&before, "websocketPeers"), 1, "{before}");
    sse.send_text("from sse").await;
    assert_eq!(sse.recv_text().await, "from sse");
    assert_eq!(recv_text(&mut ws).await, "from sse");
    let after = stats(&f).await;
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("messagesIn"), 1, "{before} → {after}");
    assert_eq!(delta("messagesOut"), 2, "{before} → {after}");
    assert_eq!(
        delta("bytesOut"),
        2 * "from sse".len() as u64,
        "{before} → {after}"
    );

    sse.abort().await;
    f.assert_leaves(&sse_id, TWO_S).await;
    let closed = wait_for_stats(&f, TWO_S, |s| {
        counter(s, "ssePeers") == 0 && counter(s, "closes.1005") > counter(&before, "closes.1005")
    })
    .await;
    assert_eq!(counter(&closed, "ssePeers"), 0, "{closed}");
    assert_eq!(
        counter(&closed, "closes.1005"),
        counter(&before, "closes.1005") + 1,
        "{before} → {closed}"
    );
    sync(&mut ws).await;
}
