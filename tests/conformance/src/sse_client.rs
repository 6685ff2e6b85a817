//! Real SSE clients for the SSE scenarios: crossws's own `WebSocketSSE` and the `eventsource`
//! npm package, hosted in one node process (`sse-client/bridge.mjs` in this crate) that speaks
//! newline-delimited JSON over its stdin and stdout.
//!
//! [`Bridge::start`] needs `node` (20 or newer) and the bridge's npm packages, installed with
//! `npm ci --prefix <crate>/sse-client` (`scripts/test.sh` does both). Without them it panics
//! and says how to install them: the SSE scenarios fail rather than skip.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::client::{parse_welcome, Fixture, TIMEOUT};

/// The directory of the bridge script and its `package.json`, inside this crate.
pub fn bridge_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sse-client")
}

/// How to install what the bridge needs, for failure messages.
fn install_hint() -> String {
    format!(
        "the SSE scenarios need node (20 or newer, as the eventsource package asks; on Debian: \
         `apt-get install -y nodejs npm`) \
         and the bridge's npm packages: `npm ci --prefix {}` (scripts/test.sh does both)",
        bridge_dir().display()
    )
}

/// Which real client a [`SseClient`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// crossws's `WebSocketSSE` (`crossws/websocket/sse`): one streaming `POST` carries every
    /// message, one chunk each.
    Crossws,
    /// The `eventsource` package's `EventSource`, plus one `fetch` `POST` per message, each
    /// sent once the previous one was answered.
    EventSource,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Crossws => "crossws",
            ClientKind::EventSource => "eventsource",
        }
    }
}

/// What the bridge reports about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The event stream's response arrived.
    Open,
    /// The `crossws-id` event: the peer id.
    Id(String),
    /// An `event: message`, with its data.
    Message(String),
    /// A stream error, a failed or refused `POST`, or a failed send.
    Error(String),
    /// The stream ended; the client is closed (it does not reconnect).
    Ended,
}

struct Shared {
    stdin: tokio::sync::Mutex<ChildStdin>,
    routes: Mutex<HashMap<u64, mpsc::UnboundedSender<ClientEvent>>>,
    stderr: Arc<Mutex<String>>,
    next: AtomicU64,
}

impl Shared {
    async fn command(&self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            panic!(
                "the SSE client bridge is gone ({e}); its output: {}",
                self.stderr()
            );
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One node process hosting any number of SSE clients. Dropping it ends the process.
pub struct Bridge {
    shared: Arc<Shared>,
    _child: Child,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl Bridge {
    /// Starts the bridge and waits until it is ready. Panics, saying how to install them, when
    /// node or the npm packages are missing.
    pub async fn start() -> Bridge {
        let dir = bridge_dir();
        for package in ["crossws", "eventsource"] {
            assert!(
                dir.join("node_modules").join(package).is_dir(),
                "the npm package `{package}` is not installed in {}: {}",
                dir.display(),
                install_hint()
            );
        }
        let mut child = Command::new("node")
            .arg("bridge.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` ({e}): {}", install_hint()));
        let stdin = child.stdin.take().expect("bridge stdin");
        let stdout = child.stdout.take().expect("bridge stdout");
        let mut stderr_pipe = child.stderr.take().expect("bridge stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk).await {
                if let Ok(mut log) = log.lock() {
                    log.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
        let shared = Arc::new(Shared {
            stdin: tokio::sync::Mutex::new(stdin),
            routes: Mutex::new(HashMap::new()),
            stderr,
            next: AtomicU64::new(1),
        });
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(route_events(shared.clone(), stdout, ready_tx));
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // Let the stderr reader catch up with the last words.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the SSE client bridge exited before it was ready: {}\n{}",
                    shared.stderr(),
                    install_hint()
                )
            }
            Err(_) => panic!(
                "the SSE client bridge was not ready within 10 s: {}",
                shared.stderr()
            ),
        }
        Bridge {
            shared,
            _child: child,
        }
    }

    /// Opens a client of `kind` on `url` (`http://…`); returns at once, before it connected.
    pub async fn open(&self, kind: ClientKind, url: &str) -> SseClient {
        let n = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::unbounded_channel();
        self.shared
            .routes
            .lock()
            .expect("routes lock")
            .insert(n, tx);
        self.shared
            .command(json!({ "op": "open", "client": n, "kind": kind.name(), "url": url }))
            .await;
        SseClient {
            n,
            kind,
            url: url.to_owned(),
            id: None,
            events,
            shared: self.shared.clone(),
        }
    }

    /// Opens a client of `kind` on `path` of `f`, waits for its `crossws-id` and reads the
    /// welcome line, which must come first and carry the same id; returns the client and the id.
    pub async fn connect_peer(
        &self,
        f: &Fixture,
        kind: ClientKind,
        path: &str,
    ) -> (SseClient, String) {
        let mut client = self.open(kind, &f.http_url(path)).await;
        let id = client.connected().await;
        let welcome = client.recv_text().await;
        let (welcome_id, _) = parse_welcome(&welcome);
        assert_eq!(
            welcome_id,
            id,
            "{}: the welcome line and the crossws-id event name different peers",
            client.describe()
        );
        (client, id)
    }
}

/// Reads the bridge's events and hands each to its client's channel.
async fn route_events(
    shared: Arc<Shared>,
    stdout: tokio::process::ChildStdout,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            eprintln!("SSE client bridge: not JSON: {line:?}");
            continue;
        };
        let text = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        let event = match value["event"].as_str().unwrap_or_default() {
            "ready" => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                continue;
            }
            "open" => ClientEvent::Open,
            "id" => ClientEvent::Id(text("id")),
            "message" => ClientEvent::Message(text("data")),
            "ended" => ClientEvent::Ended,
            _ => ClientEvent::Error(text("message")),
        };
        let Some(client) = value["client"].as_u64() else {
            eprintln!("SSE client bridge: {line}");
            continue;
        };
        if let Some(route) = shared.routes.lock().expect("routes lock").get(&client) {
            let _ = route.send(event);
        }
    }
    // The process ended: every client's channel closes, and its next wait fails.
    shared.routes.lock().expect("routes lock").clear();
}

/// One SSE client in the bridge. Every helper panics, and so fails the scenario, on a stream
/// error, a refused `POST`, the end of the stream or after [`TIMEOUT`], unless it expects that.
pub struct SseClient {
    n: u64,
    kind: ClientKind,
    url: String,
    id: Option<String>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SseClient {
    /// Which client this is.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The peer id from the `crossws-id` event, once it came.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn describe(&self) -> String {
        format!(
            "{} SSE client #{} of {} (peer {})",
            self.kind.name(),
            self.n,
            self.url,
            self.id.as_deref().unwrap_or("not connected yet")
        )
    }

    /// The next event, within `timeout`; `None` after it.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => None,
            Ok(Some(event)) => {
                if let ClientEvent::Id(id) = &event {
                    self.id = Some(id.clone());
                }
                Some(event)
            }
            Ok(None) => panic!(
                "{}: the SSE client bridge exited: {}",
                self.describe(),
                self.shared.stderr()
            ),
        }
    }

    /// Waits for the `crossws-id` event; returns the id.
    pub async fn connected(&mut self) -> String {
        loop {
            match self.next_event(TIMEOUT).await {
                Some(ClientEvent::Open) => {}
                Some(ClientEvent::Id(id)) => return id,
                None => panic!(
                    "{}: no crossws-id event within {TIMEOUT:?}",
                    self.describe()
                ),
                Some(other) => panic!(
                    "{}: expected the crossws-id event, got {other:?}",
                    self.describe()
                ),
            }
        }
    }

    /// The data of the next `event: message`.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match self.next_event(TIMEOUT).await {
                Some(ClientEvent::Message(data)) => return data,
                Some(ClientEvent::Open | ClientEvent::Id(_)) => {}
                None => panic!("{}: no message within {TIMEOUT:?}", self.describe()),
                Some(other) => panic!("{}: expected a message, got {other:?}", self.describe()),
            }
        }
    }

    /// The next message, which must be JSON.
    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text:?}", self.describe()))
    }

    /// Sends a text message: a chunk of the streaming `POST` (crossws), or a `POST` of its
    /// own (eventsource).
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.shared
            .command(json!({ "op": "send", "client": self.n, "data": text.into() }))
            .await;
    }

    /// Sends `ping` and asserts that the next message is `pong`: nothing else was queued for
    /// this peer before it.
    pub async fn sync(&mut self) {
        self.send_text("ping").await;
        let next = self.recv_text().await;
        assert_eq!(
            next,
            "pong",
            "{}: expected nothing before `pong`",
            self.describe()
        );
    }

    /// The client's own `close()`. crossws's client leaves its streaming `POST` open.
    pub async fn close(&mut self) {
        self.shared
            .command(json!({ "op": "close", "client": self.n }))
            .await;
    }

    /// `close()`, and every request of the client aborted, as when a page goes away.
    pub async fn abort(&mut self) {
        self.shared
            .command(json!({ "op": "abort", "client": self.n }))
            .await;
    }

    /// Waits up to `timeout` for the server to end the stream, failing on any message; returns
    /// the error the client reported, if any.
    pub async fn expect_end(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut error = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(ClientEvent::Ended) => return error,
                Some(ClientEvent::Error(e)) => error = Some(e),
                Some(ClientEvent::Open | ClientEvent::Id(_)) => {}
                Some(ClientEvent::Message(data)) => panic!(
                    "{}: expected the stream to end, got the message {:?}",
                    self.describe(),
                    data.get(..80.min(data.len())).unwrap_or(&data)
                ),
                None => panic!(
                    "{}: the stream did not end within {timeout:?}",
                    self.describe()
                ),
            }
        }
    }
}
