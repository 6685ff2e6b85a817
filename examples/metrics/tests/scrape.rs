//! The example's `/metrics` follows real WebSocket clients: after two peers join and one sends
//! three messages (each echoed and published to the other), the Prometheus text shows two peers,
//! three messages received and six sent; after one leaves with 4001, one peer and that close.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// The example's process, killed when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` on `addr`: the body.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect for /metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the sample named exactly `name` (labels included), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
}

/// Scrapes until `done` holds for up to 2 s (a close is counted as the connection ends, just
/// after the client saw it); the last body.
fn scrape_until(addr: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = scrape(addr);
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prometheus_text_follows_the_clients() {
    let mut example = Running(
        Command::new(env!("CARGO_BIN_EXE_metrics-prometheus"))
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the example starts"),
    );
    let mut line = String::new();
    let stdout = example.0.stdout.take().expect("stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the example prints its address");
    let url = line
        .trim()
        .strip_prefix("metrics example on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();

    // A client's `101` can arrive before its `open` hook has subscribed it: each says `sync`
    // and reads its echo first (hooks run in order), so that both are in the room before the
    // counted messages. `a` is alone for its own, and hears `b`'s.
    let sync = Message::text("sync");
    let (mut a, _) = tungstenite::connect(&url).expect("first client");
    a.send(sync.clone()).unwrap();
    assert_eq!(a.read().unwrap(), sync);
    let (mut b, _) = tungstenite::connect(&url).expect("second client");
    b.send(sync.clone()).unwrap();
    assert_eq!(b.read().unwrap(), sync);
    assert_eq!(a.read().unwrap(), sync);
    for i in 0..3 {
        let message = Message::text(format!("hello {i}"));
        a.send(message.clone()).unwrap();
        assert_eq!(a.read().unwrap(), message);
        assert_eq!(b.read().unwrap(), message);
    }
    let text = scrape(&addr);
    assert_eq!(sample(&text, "anyws_peers"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "anyws_messages_received_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "anyws_messages_sent_total"),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "anyws_received_bytes_total"),
        Some(29.0),
        "{text}"
    );
    assert!(text.contains("anyws_publish_fanout"), "{text}");
    assert!(text.contains("anyws_handshake_seconds"), "{text}");

    b.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    }))
    .unwrap();
    while b.read().is_ok() {}
    let text = scrape_until(&addr, |t| sample(t, "anyws_peers") == Some(1.0));
    assert_eq!(sample(&text, "anyws_peers"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "anyws_closes_total{code=\"4001\"}"),
        Some(1.0),
        "{text}"
    );
    // A close without a code counts as 1005, one of the codes whose key is made once.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    let text = scrape_until(&addr, |t| sample(t, "anyws_peers") == Some(0.0));
    assert_eq!(
        sample(&text, "anyws_closes_total{code=\"1005\"}"),
        Some(1.0),
        "{text}"
    );
}
