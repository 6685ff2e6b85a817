//! How the suite starts and stops a server: the [`Harness`] an adapter implements.

use anyws_core::{Deflate, Limits, MessageRate, Runtime, Server, ServerBuilder};
use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apps;
use crate::transport::{Certificate, Transport};

/// Which hooks a server runs (the fixture's `--app`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum App {
    /// Everything the fixture contract describes.
    #[default]
    Conformance,
    /// Every message back to its sender, unchanged.
    Echo,
    /// One room: every message to its sender and to every other peer.
    Chatroom,
    /// The conformance app with its hooks counted, and the route `GET /soak/hooks` that reports
    /// the counts (see [`apps::HookCounts`]); for the soak and dead-peer tests. `GET /soak/trim`
    /// asks the allocator to give its free memory back to the system (see [`apps::trim_heap`]).
    Soak,
}

impl App {
    /// The name the fixture's `--app` flag takes.
    pub fn flag(self) -> &'static str {
        match self {
            App::Conformance => "conformance",
            App::Echo => "echo",
            App::Chatroom => "chatroom",
            App::Soak => "soak",
        }
    }
}

/// What a scenario asks of the server: the app and the limits (the fixture's flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The hooks.
    pub app: App,
    /// `--max-message-size`, in bytes.
    pub max_message_size: Option<usize>,
    /// `--max-buffered-bytes`, in bytes.
    pub max_buffered_bytes: Option<usize>,
    /// `--handshake-timeout-ms`.
    pub handshake_timeout: Option<Duration>,
    /// `--idle-timeout-ms`; zero turns the idle timeout off.
    pub idle_timeout: Option<Duration>,
    /// `--transport sse`: the server also serves its hooks over the SSE transport.
    pub sse: bool,
    /// `--ping-interval-ms`; zero turns the automatic ping off.
    pub ping_interval: Option<Duration>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--max-connections-per-ip`.
    pub max_connections_per_ip: Option<usize>,
    /// `--message-rate PER_SECOND:BURST`.
    pub message_rate: Option<(u32, u32)>,
    /// `--allowed-origin ORIGIN`, once per origin; empty: every origin.
    pub allowed_origins: Vec<String>,
    /// `--max-request-head-bytes`, in bytes.
    pub max_request_head_bytes: Option<usize>,
    /// `--max-concurrent-streams`: streams at once on one HTTP/2 connection.
    pub max_concurrent_streams: Option<u32>,
    /// `--deflate shared|dedicated`; `None` is `--deflate off`.
    pub deflate: Option<Deflate>,
    /// `--tls-cert CERT --tls-key KEY`: the server speaks TLS with these PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Options {
    /// The default app (`conformance`) and the library's default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `app` instead.
    pub fn app(mut self, app: App) -> Self {
        self.app = app;
        self
    }

    /// Sets `--max-message-size` (and the frame size limit with it).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// Sets `--max-buffered-bytes`.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = Some(bytes);
        self
    }

    /// Sets `--handshake-timeout-ms`.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Sets `--idle-timeout-ms`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Sets `--transport sse`.
    pub fn sse(mut self) -> Self {
        self.sse = true;
        self
    }

    /// Sets `--ping-interval-ms`.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = Some(interval);
        self
    }

    /// Sets `--max-connections`.
    pub fn max_connections(mut self, peers: usize) -> Self {
        self.max_connections = Some(peers);
        self
    }

    /// Sets `--max-connections-per-ip`.
    pub fn max_connections_per_ip(mut self, peers: usize) -> Self {
        self.max_connections_per_ip = Some(peers);
        self
    }

    /// Sets `--message-rate PER_SECOND:BURST`.
    pub fn message_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.message_rate = Some((per_second, burst));
        self
    }

    /// Adds an `--allowed-origin`.
    pub fn allowed_origin(mut self, origin: &str) -> Self {
        self.allowed_origins.push(origin.to_owned());
        self
    }

    /// Sets `--max-request-head-bytes`.
    pub fn max_request_head_bytes(mut self, bytes: usize) -> Self {
        self.max_request_head_bytes = Some(bytes);
        self
    }

    /// Sets `--max-concurrent-streams`.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = Some(streams);
        self
    }

    /// Sets `--deflate shared` or `--deflate dedicated`, by [`Deflate::is_dedicated`]; the
    /// other settings are the library's defaults, as the fixture's.
    pub fn deflate(mut self, deflate: Deflate) -> Self {
        self.deflate = Some(deflate);
        self
    }

    /// Sets `--tls-cert` and `--tls-key`: the server serves TLS with the certificate chain
    /// `cert` and the private key `key`, PEM files.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// The server's limits: the library's defaults with these options applied, and a close
    /// timeout of 1 s so that a graceful shutdown ends within 2 s.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(bytes) = self.max_message_size {
            limits.max_message_size = bytes;
            limits.max_frame_size = bytes;
        }
        if let Some(bytes) = self.max_buffered_bytes {
            limits.max_buffered_bytes = bytes;
        }
        if let Some(timeout) = self.handshake_timeout {
            limits.handshake_timeout = timeout;
        }
        if let Some(bytes) = self.max_request_head_bytes {
            limits.max_request_head_bytes = bytes;
        }
        if let Some(streams) = self.max_concurrent_streams {
            limits.max_concurrent_streams = streams;
        }
        if let Some(timeout) = self.idle_timeout {
            limits.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        }
        if let Some(interval) = self.ping_interval {
            limits.ping_interval = (!interval.is_zero()).then_some(interval);
        }
        limits.max_connections = self.max_connections;
        limits.max_connections_per_ip = self.max_connections_per_ip;
        limits.message_rate = self
            .message_rate
            .map(|(per_second, burst)| MessageRate::new(per_second, burst));
        limits.close_timeout = Duration::from_secs(1);
        limits
    }

    /// A server builder with the app's hooks and these limits. For [`App::Soak`], whose routes
    /// need the hook counts, use [`Options::build`].
    ///
    /// Its resolver leaves `/clock` and `/clock/active` to the routes unless the request is a
    /// WebSocket upgrade, so that an `EventSource` reaches the clock in SSE mode too.
    pub fn server_builder(&self) -> ServerBuilder {
        self.builder_and_counts().0
    }

    fn builder_and_counts(&self) -> (ServerBuilder, Option<Arc<apps::HookCounts>>) {
        let mut counts = None;
        let hooks: Arc<dyn anyws_core::Hooks> = match self.app {
            App::Conformance => Arc::new(apps::Conformance),
            App::Echo => Arc::new(apps::Echo),
            App::Chatroom => Arc::new(apps::Chatroom),
            App::Soak => {
                let counted = apps::Counted::new(apps::Conformance);
                counts = Some(counted.counts());
                Arc::new(counted)
            }
        };
        let resolver = move |request: &mut anyws_core::Request| {
            let clock = matches!(request.path(), "/clock" | "/clock/active");
            (!clock || anyws_core::is_websocket_upgrade(request.headers())).then(|| hooks.clone())
        };
        let mut builder = ServerBuilder::with_resolver(resolver)
            .limits(self.limits())
            .sse(self.sse)
            .deflate(self.deflate.clone());
        if !self.allowed_origins.is_empty() {
            builder = builder.allowed_origins(self.allowed_origins.iter().cloned());
        }
        (builder, counts)
    }

    /// The server on `runtime`, and its plain HTTP routes.
    pub fn build(&self, runtime: Arc<dyn Runtime>) -> (Server, Routes) {
        self.build_with(runtime, |builder| builder)
    }

    /// Like [`Options::build`], with `customize` applied to the builder first (say, to add a
    /// backplane).
    pub fn build_with(
        &self,
        runtime: Arc<dyn Runtime>,
        customize: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> (Server, Routes) {
        let (builder, counts) = self.builder_and_counts();
        let server = customize(builder).build(runtime);
        let routes = Routes {
            server: server.clone(),
            counts,
            clocks: apps::Clocks::new(),
            extra: None,
        };
        (server, routes)
    }

    /// The same options as `anyws-fixture` flags.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--app".to_owned(), self.app.flag().to_owned()];
        let mut flag = |name: &str, value: String| {
            args.push(name.to_owned());
            args.push(value);
        };
        if let Some(bytes) = self.max_message_size {
            flag("--max-message-size", bytes.to_string());
        }
        if let Some(bytes) = self.max_buffered_bytes {
            flag("--max-buffered-bytes", bytes.to_string());
        }
        if let Some(timeout) = self.handshake_timeout {
            flag("--handshake-timeout-ms", timeout.as_millis().to_string());
        }
        if let Some(timeout) = self.idle_timeout {
            flag("--idle-timeout-ms", timeout.as_millis().to_string());
        }
        if self.sse {
            flag("--transport", "sse".to_owned());
        }
        if let Some(interval) = self.ping_interval {
            flag("--ping-interval-ms", interval.as_millis().to_string());
        }
        if let Some(peers) = self.max_connections {
            flag("--max-connections", peers.to_string());
        }
        if let Some(peers) = self.max_connections_per_ip {
            flag("--max-connections-per-ip", peers.to_string());
        }
        if let Some((per_second, burst)) = self.message_rate {
            flag("--message-rate", format!("{per_second}:{burst}"));
        }
        for origin in &self.allowed_origins {
            flag("--allowed-origin", origin.clone());
        }
        if let Some(bytes) = self.max_request_head_bytes {
            flag("--max-request-head-bytes", bytes.to_string());
        }
        if let Some(streams) = self.max_concurrent_streams {
            flag("--max-concurrent-streams", streams.to_string());
        }
        if let Some(deflate) = &self.deflate {
            let mode = if deflate.is_dedicated() {
                "dedicated"
            } else {
                "shared"
            };
            flag("--deflate", mode.to_owned());
        }
        if let Some((cert, key)) = &self.tls {
            flag("--tls-cert", cert.display().to_string());
            flag("--tls-key", key.display().to_string());
        }
        args
    }
}

/// Starts servers for the suite. Implement [`Adapter`] and use [`InProcess`] to test an adapter
/// in the test process, or use [`FixtureProcess`] to test a fixture program from outside.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A short name for failure messages, such as `smol`.
    fn name(&self) -> String;

    /// Starts a server for `options` listening on a free loopback port, and returns once it
    /// accepts connections.
    async fn start(&self, options: &Options) -> Box<dyn Instance>;

    /// How the clients reach the servers it starts; see [`Over`](crate::Over).
    fn transport(&self) -> Transport {
        Transport::Plain
    }

    /// The certificate its servers serve TLS with, when the transport is TLS.
    fn certificate(&self) -> Option<Arc<Certificate>> {
        None
    }
}

/// A running server.
#[async_trait]
pub trait Instance: Send {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;

    /// Shuts it down gracefully, as SIGTERM does for the fixture, and waits up to `within` for it
    /// to stop. `Err` says what went wrong (it did not stop, or a process exited with failure).
    async fn shut_down(&mut self, within: Duration) -> Result<(), String>;

    /// Its peak resident memory in KiB, when it runs as a process of its own.
    fn peak_rss_kib(&self) -> Option<u64> {
        None
    }

    /// Its resident memory now in KiB (`VmRSS`), when it runs as a process of its own.
    fn rss_kib(&self) -> Option<u64> {
        None
    }

    /// How many file descriptors it has open (sockets included), when it runs as a process of
    /// its own.
    fn open_fds(&self) -> Option<usize> {
        None
    }

    /// What it logged, shown when a scenario fails.
    fn log(&self) -> String {
        String::new()
    }
}

/// An adapter under test: what [`InProcess`] needs to serve the suite's hooks on it.
pub trait Adapter: Send + Sync + 'static {
    /// A short name for failure messages.
    fn name(&self) -> String;

    /// The runtime servers are built on.
    fn runtime(&self) -> Arc<dyn Runtime>;

    /// Serves `server` on `listener` (bound to a loopback port, in blocking mode) in a task of the
    /// adapter's runtime: WebSocket upgrades go to the server and every other request to
    /// `routes`. The returned future resolves once serving has stopped after
    /// [`Server::shutdown`]; it is awaited from another runtime, so it must not depend on the
    /// adapter's.
    fn serve(
        &self,
        listener: std::net::TcpListener,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Like [`Adapter::serve`], with every connection speaking TLS with `tls` (ALPN `h2` and
    /// `http/1.1`). Only the [`Over`](crate::Over) harnesses with a TLS transport call it; an
    /// adapter without TLS leaves the default, which fails the scenario saying so.
    fn serve_tls(
        &self,
        listener: std::net::TcpListener,
        tls: Arc<anyws_hyper::tls::rustls::ServerConfig>,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let _ = (listener, tls, server, routes);
        panic!("{}: this adapter does not serve TLS", self.name())
    }
}

/// For [`Adapter::serve`]: runs `serve` as a task that `spawn` starts on the adapter's runtime,
/// printing its error, if any, under `name`; the returned future resolves once it ended, on any
/// runtime.
pub fn spawn_serving<S>(
    name: &'static str,
    serve: S,
    spawn: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>),
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: std::future::IntoFuture<Output = std::io::Result<()>> + Send + 'static,
    S::IntoFuture: Send,
{
    // A runtime-agnostic channel: the suite awaits `on_stop` on its own tokio runtime.
    let (stopped, on_stop) = tokio::sync::oneshot::channel();
    spawn(Box::pin(async move {
        if let Err(error) = serve.into_future().await {
            eprintln!("{name}: serving failed: {error}");
        }
        let _ = stopped.send(());
    }));
    Box::pin(async move {
        let _ = on_stop.await;
    })
}

/// The plain HTTP routes of the fixture for one server, as an [`anyws_hyper::Fallback`], or
/// through [`Routes::answer`] for adapters with an HTTP layer of their own. Clones share the
/// count of running `/clock` streams; each `Routes::new` starts its own.
#[derive(Clone, Debug)]
pub struct Routes {
    server: Server,
    clocks: apps::Clocks,
    /// The hook counts `GET /soak/hooks` reports, for [`App::Soak`].
    counts: Option<Arc<apps::HookCounts>>,
    /// Routes a program adds in front of these (the fixture's `/metrics` and `/admin`).
    extra: Option<Extra>,
}

/// A handler for routes in front of the fixture's own: `None` passes the request on.
type ExtraRoutes = dyn Fn(&http::Method, &http::Uri, &http::HeaderMap) -> Option<http::Response<apps::Body>>
    + Send
    + Sync;

#[derive(Clone)]
struct Extra(Arc<ExtraRoutes>);

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extra(..)")
    }
}

impl Routes {
    /// The routes of `server`.
    pub fn new(server: Server) -> Self {
        Self {
            server,
            clocks: apps::Clocks::new(),
            counts: None,
            extra: None,
        }
    }

    /// These routes with `extra` answering first; where it returns `None`, these answer.
    pub fn with_extra(
        mut self,
        extra: impl Fn(&http::Method, &http::Uri, &http::HeaderMap) -> Option<http::Response<apps::Body>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.extra = Some(Extra(Arc::new(extra)));
        self
    }

    /// The server the routes answer for.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Answers a request with this method, URI and headers: a whole body, or an event stream
    /// (`/clock`) whose response carries the `text/event-stream` headers.
    pub async fn answer(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> http::Response<apps::Body> {
        if let Some(response) = self
            .extra
            .as_ref()
            .and_then(|e| (e.0)(method, uri, headers))
        {
            return response;
        }
        match &self.counts {
            Some(counts) if uri.path() == "/soak/hooks" => counts.response(&self.server),
            Some(_) if uri.path() == "/soak/trim" => apps::trim_heap(),
            _ => apps::answer(&self.server, &self.clocks, method, uri, headers).await,
        }
    }

    /// [`Routes::answer`] as a hyper response, the event stream served with
    /// [`anyws_hyper::event_stream_response`].
    pub async fn answer_hyper<B>(
        &self,
        request: &http::Request<B>,
    ) -> http::Response<anyws_hyper::Body> {
        let (parts, body) = self
            .answer(request.method(), request.uri(), request.headers())
            .await
            .into_parts();
        match body {
            apps::Body::Full(bytes) => http::Response::from_parts(
                parts,
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            apps::Body::EventStream(stream) => {
                anyws_hyper::event_stream_response(http::Response::from_parts(parts, stream))
            }
        }
    }
}

impl anyws_hyper::Fallback for Routes {
    fn call(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Pin<Box<dyn Future<Output = http::Response<anyws_hyper::Body>> + Send>> {
        let routes = self.clone();
        Box::pin(async move { routes.answer_hyper(&request).await })
    }
}

/// Runs the suite's servers in the test process on an [`Adapter`].
#[derive(Debug)]
pub struct InProcess<A>(pub A);

#[async_trait]
impl<A: Adapter> Harness for InProcess<A> {
    fn name(&self) -> String {
        self.0.name()
    }

    async fn start(&self, options: &Options) -> Box<dyn Instance> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (server, routes) = options.build(self.0.runtime());
        let stopped = match &options.tls {
            Some((cert, key)) => {
                let certificates = anyws_hyper::tls::Certificates::from_pem_files(cert, key)
                    .unwrap_or_else(|error| panic!("the TLS certificate: {error}"));
                let config = anyws_hyper::tls::server_config(certificates);
                self.0
                    .serve_tls(listener, Arc::new(config), server.clone(), routes)
            }
            None => self.0.serve(listener, server.clone(), routes),
        };
        Box::new(InProcessInstance {
            addr,
            server,
            stopped: Some(stopped),
        })
    }
}

struct InProcessInstance {
    addr: SocketAddr,
    server: Server,
    stopped: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

#[async_trait]
impl Instance for InProcessInstance {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn shut_down(&mut self, within: Duration) -> Result<(), String> {
        let server = self.server.clone();
        let stopped = self.stopped.take().ok_or("already shut down")?;
        let both = async move {
            server.shutdown().await;
            stopped.await;
        };
        tokio::time::timeout(within, both)
            .await
            .map_err(|_| format!("serving did not stop within {within:?}"))
    }
}

impl Drop for InProcessInstance {
    fn drop(&mut self) {
        if self.stopped.is_some() {
            // Begin the shutdown (the first poll stops the accept loop and closes every peer) and
            // drop the connections; nobody waits for the rest.
            use futures_util::FutureExt;
            let _ = self.server.shutdown().now_or_never();
            for peer in self.server.peers() {
                peer.terminate();
            }
        }
    }
}

/// Runs a fixture program (such as `anyws-fixture`) as a process of its own, the way outside
/// runners do: `PORT` and `HOST` in the environment, [`Options::to_args`] on the command line,
/// SIGTERM to stop it.
#[derive(Clone, Debug)]
pub struct FixtureProcess {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl FixtureProcess {
    /// Runs `program` with `args` before the scenario's own flags, such as
    /// `["--runtime", "smol"]`.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the program, besides `PORT` and `HOST`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

#[async_trait]
impl Harness for FixtureProcess {
    fn name(&self) -> String {
        format!("{} {}", self.program.display(), self.args.join(" "))
    }

    async fn start(&self, options: &Options) -> Box<dyn Instance> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log =
            std::env::temp_dir().join(format!("anyws-fixture-{}-{port}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).expect("create the fixture log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .args(options.to_args())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        let mut process = ProcessInstance {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for addr in [
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            ] {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    process.addr = addr;
                    return Box::new(process);
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the fixture exited with {status}: {}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "the fixture did not listen within 10 s: {}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct ProcessInstance {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl fmt::Debug for ProcessInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessInstance")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .finish()
    }
}

#[async_trait]
impl Instance for ProcessInstance {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn shut_down(&mut self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("kill -TERM: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM exited with {sent}"));
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the fixture exited with {status}")),
                Ok(None) if started.elapsed() < within => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(None) => return Err(format!("the fixture did not exit within {within:?}")),
                Err(e) => return Err(format!("waiting for the fixture: {e}")),
            }
        }
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    fn open_fds(&self) -> Option<usize> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok()?;
        Some(fds.count())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A `kB` field of `/proc/PID/status`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
