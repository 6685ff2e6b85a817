//! With a `tracing` subscriber installed, a server on anyws-tokio reports what an operator needs,
//! to real clients: a message over the size limit gives a `warn` event with close code 1009
//! inside the peer's span (id, namespace, remote address, transport, HTTP version) and a `debug`
//! close event; a panicking hook gives an `error` event naming the hook; an upgrade refused by
//! a limit gives a `warn` event with its status.
//!
//! The subscriber is a small recorder written here, installed for the test's thread; the test
//! runs on a current-thread runtime, so the server's tasks run on that thread too.

use anyws_core::{async_trait, CloseInfo, Hooks, Message, Peer, ServerBuilder};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

/// One event as recorded: its level, message and fields, and the fields of the span it
/// happened in.
#[derive(Debug, Clone)]
struct Recorded {
    level: Level,
    fields: Fields,
    span: Fields,
}

#[derive(Default)]
struct Recorder {
    next_id: AtomicU64,
    spans: Mutex<HashMap<u64, Fields>>,
    stack: Mutex<Vec<u64>>,
    events: Mutex<Vec<Recorded>>,
}

#[derive(Clone, Default)]
struct Recording(Arc<Recorder>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recording {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        fields.insert("name".into(), span.metadata().name().into());
        span.record(&mut Visitor(&mut fields));
        self.0.spans.lock().unwrap().insert(id, fields);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(fields) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let span = self
            .0
            .stack
            .lock()
            .unwrap()
            .last()
            .and_then(|id| self.0.spans.lock().unwrap().get(id).cloned())
            .unwrap_or_default();
        self.0.events.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            fields,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        self.0.stack.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut stack = self.0.stack.lock().unwrap();
        if let Some(pos) = stack.iter().rposition(|id| *id == span.into_u64()) {
            stack.remove(pos);
        }
    }
}

impl Recording {
    fn events(&self) -> Vec<Recorded> {
        self.0.events.lock().unwrap().clone()
    }
}

/// Echoes; panics on `panic`; reports each close with the peer's id.
#[derive(Debug)]
struct App(mpsc::UnboundedSender<(String, u16)>);

#[async_trait]
impl Hooks for App {
    async fn message(&self, peer: &Peer, message: Message) {
        if message.text().ok() == Some("panic") {
            panic!("asked to panic");
        }
        let _ = peer.send(message);
    }

    async fn close(&self, peer: &Peer, info: CloseInfo) {
        let _ = self.0.send((peer.id().to_string(), info.code));
    }
}

const LIMIT: Duration = Duration::from_secs(5);

async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    >,
) -> Option<u16> {
    // Read on to the end, so that the client's answer to the close goes out.
    let mut code = None;
    loop {
        match tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(WsMessage::Close(frame))) => code = frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => return code,
        }
    }
}

#[tokio::test]
async fn limits_and_panics_are_reported_with_the_peer_span() {
    let recording = Recording::default();
    let _guard = tracing::subscriber::set_default(recording.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closes, mut closed) = mpsc::unbounded_channel();
    let server = ServerBuilder::new(App(closes))
        .max_message_size(1024)
        .max_connections(Some(2))
        // Longer than the test: the socket of the peer closed with 1009 lingers until its
        // client closes it, which this one does not (see the limit below).
        .close_timeout(Duration::from_secs(600))
        .build(anyws_tokio::runtime());
    tokio::spawn(anyws_tokio::serve(listener, server.clone()).into_future());
    let url = format!("ws://{addr}/room");

    // Over the size limit: 1009.
    let (mut big, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    big.send(WsMessage::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut big).await, Some(1009));
    let (big_id, code) = tokio::time::timeout(LIMIT, closed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 1009);

    let events = recording.events();
    let warn = events
        .iter()
        .find(|e| {
            e.level == Level::WARN && e.fields.get("code").map(String::as_str) == Some("1009")
        })
        .unwrap_or_else(|| panic!("no warn event with code 1009 in {events:#?}"));
    assert_eq!(
        warn.span.get("name").map(String::as_str),
        Some("anyws.peer")
    );
    assert_eq!(warn.span.get("id"), Some(&big_id), "{warn:?}");
    assert_eq!(
        warn.span.get("namespace").map(String::as_str),
        Some("/room")
    );
    assert_eq!(
        warn.span.get("transport").map(String::as_str),
        Some("websocket")
    );
    assert_eq!(
        warn.span.get("http_version").map(String::as_str),
        Some("HTTP/1.1")
    );
    assert!(
        warn.span
            .get("remote_addr")
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{warn:?}"
    );
    let close = events
        .iter()
        .find(|e| {
            e.level == Level::DEBUG
                && e.fields.get("message").map(String::as_str) == Some("peer closed")
        })
        .unwrap_or_else(|| panic!("no close event in {events:#?}"));
    assert_eq!(close.fields.get("code").map(String::as_str), Some("1009"));
    assert!(close.fields.contains_key("lifetime_ms"), "{close:?}");

    // A panicking hook: an error naming it.
    let (mut panics, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    panics.send(WsMessage::text("panic")).await.unwrap();
    assert_eq!(close_code(&mut panics).await, Some(1011));
    tokio::time::timeout(LIMIT, closed.recv())
        .await
        .unwrap()
        .unwrap();
    let events = recording.events();
    let error = events
        .iter()
        .find(|e| e.level == Level::ERROR)
        .unwrap_or_else(|| panic!("no error event in {events:#?}"));
    assert_eq!(
        error.fields.get("hook").map(String::as_str),
        Some("message"),
        "{error:?}"
    );
    assert!(
        error
            .fields
            .get("panic")
            .is_some_and(|p| p.contains("asked to panic")),
        "{error:?}"
    );

    // Refused by a limit: a warn with the status, and no peer span. The peer closed with 1009
    // is gone, but its socket, which its client keeps open, is read out before it is dropped
    // and keeps its place in the limit until then: one more peer fits, not two.
    let (_first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let refused = tokio_tungstenite::connect_async(&url).await;
    assert!(
        refused.is_err(),
        "a peer was let in past max_connections(2) while a closed peer's socket lingers"
    );
    drop(big);
    let events = recording.events();
    assert!(
        events
            .iter()
            .any(|e| e.level == Level::WARN
                && e.fields.get("status").map(String::as_str) == Some("503")),
        "no warn event with status 503 in {events:#?}"
    );
    assert_eq!(server.stats().rejected_with(503), 1);
}
