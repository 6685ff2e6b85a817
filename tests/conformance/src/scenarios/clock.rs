//! `GET /clock` and `GET /clock/active`: the fixture's server-sent event stream.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::*;
use crate::Harness;

const TWO_S: Duration = Duration::from_secs(2);

/// The exact body of a clock stream with ticks `ids`: `retry: 2000`, one event per tick, the
/// two-line note, the comment.
fn clock_body(ids: impl IntoIterator<Item = i64>) -> String {
    let mut body = String::from("retry: 2000\n\n");
    for id in ids {
        body.push_str(&format!("id: {id}\nevent: tick\ndata: {id}\n\n"));
    }
    body.push_str("event: note\ndata: first line\ndata: second line\n\n: bye\n\n");
    body
}

/// A complete clock stream (read to its end), checked byte for byte with its headers.
async fn read_clock(f: &Fixture, path: &str, headers: &[&str], ids: impl IntoIterator<Item = i64>) {
    let response = f.get_with(path, headers).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.status_line);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "GET {path}: content-type {content_type:?}"
    );
    assert_eq!(
        response.header("cache-control"),
        Some("no-cache"),
        "GET {path}"
    );
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(body, clock_body(ids), "GET {path} with {headers:?}");
}

/// The body received so far of a response read raw: the complete chunks of a chunked body, or
/// everything after the head.
fn dechunked(raw: &[u8]) -> String {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return String::new();
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let mut rest = &raw[head_end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return String::from_utf8_lossy(rest).into_owned();
    }
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..line_end]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `GET /clock/active`.
async fn active(f: &Fixture) -> u64 {
    let response = f.get("/clock/active").await;
    assert_eq!(
        response.status, 200,
        "GET /clock/active: {}",
        response.status_line
    );
    let value: serde_json::Value =
        serde_json::from_slice(&response.body).expect("/clock/active is JSON");
    value["active"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected {{\"active\": n}}, got {value}"))
}

/// Polls `GET /clock/active` every 20 ms until it is `want`, for up to `timeout`.
async fn assert_active_becomes(f: &Fixture, want: u64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let now = active(f).await;
        if now == want {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "/clock/active is {now}, not {want}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `retry: 2000` first, then the ticks with ids 1, 2, 3 in order, the two-line note, the
/// comment `: bye`, and the end of the response; byte for byte, with the event-stream headers.
/// The defaults are 5 ticks.
pub async fn clock_stream(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    assert_eq!(active(&f).await, 0);
    read_clock(&f, "/clock?count=3&interval_ms=20", &[], 1..=3).await;
    read_clock(&f, "/clock", &[], 1..=5).await;
    read_clock(&f, "/clock?count=0&interval_ms=0", &[], []).await;
    // Both streams ended: none is counted as running.
    assert_active_becomes(&f, 0, TWO_S).await;
}

/// `Last-Event-ID: 41` resumes at 42; an id that is not an integer starts at 1.
pub async fn clock_resumes_after_last_event_id(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    let path = "/clock?count=3&interval_ms=10";
    read_clock(&f, path, &["Last-Event-ID: 41"], 42..=44).await;
    read_clock(&f, path, &["Last-Event-ID: -1"], 0..=2).await;
    read_clock(&f, path, &["Last-Event-ID: tick-7"], 1..=3).await;
}

/// Absurd parameters get `400 Bad Request` and start no stream.
pub async fn clock_rejects_absurd_parameters(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    for query in [
        "count=10001",
        "count=-1",
        "count=many",
        "interval_ms=10001",
        "interval_ms=18446744073709551616",
    ] {
        let response = f.get(&format!("/clock?{query}")).await;
        assert_eq!(response.status, 400, "?{query}: {}", response.status_line);
    }
    assert_eq!(active(&f).await, 0);
}

/// Two long clock streams run (`/clock/active` is 2) and arrive tick by tick; the clients
/// disconnect in the middle, and `/clock/active` is back to 0 within 2 s.
pub async fn clock_stops_when_the_client_aborts(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut stream = f.open_stream().await;
        let request = format!(
            "GET /clock?count=10000&interval_ms=50 HTTP/1.1\r\nHost: {}\r\n\r\n",
            f.addr()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // The second tick arrives long before the stream would end (after 500 s): the events
        // are streamed, not collected.
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !dechunked(&seen).contains("id: 2\nevent: tick\ndata: 2\n\n") {
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("the second tick did not arrive in time")
                .expect("read");
            assert!(
                n > 0,
                "the stream ended early: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");
        assert!(
            dechunked(&seen).starts_with(
                "retry: 2000\n\nid: 1\nevent: tick\ndata: 1\n\nid: 2\nevent: tick\ndata: 2\n\n"
            ),
            "{:?}",
            dechunked(&seen)
        );
        clients.push(stream);
    }
    assert_eq!(active(&f).await, 2);
    drop(clients);
    assert_active_becomes(&f, 0, TWO_S).await;
    // The server carries on.
    read_clock(&f, "/clock?count=1&interval_ms=0", &[], 1..=1).await;
}
