//! `anyws-bench`: measures what WebSocket servers cost, so the anyws fixture can be compared
//! with controls doing the same job (a direct tokio-tungstenite server, served by this binary,
//! and Bun's native server, `bench/bun-server.js`). `bench/run.sh` runs every workload against
//! every server and prints the tables; see BENCHMARKS.md. The workloads: a chat room (CPU time
//! per message delivered, throughput and peak memory), idle connections (resident memory and
//! CPU time per connection opened), echo (CPU per message and throughput) and broadcast (one
//! publish to many subscribers: CPU per delivery and time until the last one has it).
//!
//! It has five modes:
//!
//! - `control-server --port P [--app echo|chatroom] [--small-buffers]` serves a direct
//!   tokio-tungstenite (0.30) server on 127.0.0.1:P on a tokio **multi-thread** runtime with the
//!   default worker count (one worker per CPU it may run on, so one under `taskset -c 0`; the
//!   anyws fixture builds its runtime the same way). Accepted sockets get TCP_NODELAY, as the
//!   anyws tokio adapter's do. It uses tungstenite's default `WebSocketConfig` (128 KiB read
//!   and write buffers), or with `--small-buffers` a `read_buffer_size` of 4096 and a
//!   `write_buffer_size` of 0.
//!   - `--app echo` (the default): one task per connection, which sends every text and binary
//!     message back.
//!   - `--app chatroom`: one room, the counterpart of `anyws-fixture --app chatroom`. Each
//!     connection has a reader task and a writer task and an unbounded tokio mpsc queue of
//!     `Message`s; the room is an `Arc<RwLock<Vec<(id, sender)>>>`. On open the connection
//!     queues `ready` and joins the room; the reader sends a clone of every message it reads
//!     (cheap: payloads are `Bytes`) to every member, itself included. The writer waits for a
//!     message, takes whatever else is queued with `try_recv`, `feed`s each and flushes once:
//!     batched writes, one write system call per burst instead of one per message.
//! - `idle --url ws://127.0.0.1:P/ --connections N --server-pid PID [--concurrency C]` reads the
//!   server's VmRSS (`/proc/PID/status`) and utime+stime (`/proc/PID/stat`), opens N connections
//!   with at most C (default 200) handshakes in flight, sends one small text message on each
//!   and waits for its echo, waits one second for the server to settle, reads RSS and CPU again
//!   and prints RSS before/after, KiB per connection and server CPU µs per connection opened,
//!   then closes every connection. It raises its own open-file limit first (to 65536, or the
//!   hard limit if lower). Runs on a current-thread runtime.
//! - `chat --url ws://127.0.0.1:P/ --clients N --server-pid PID [--messages M] [--batches B]
//!   [--timeout-secs S] [--nagle]` (defaults 32 clients, 640 messages, 20 batches, 300 s) opens
//!   N clients (TCP_NODELAY unless `--nagle`) and waits for `ready` on each, then runs one
//!   warm-up batch and B measured ones. In a batch every client sends M copies of a 30-byte
//!   text (all fed, then one flush) and the batch ends when every client has received all N×M
//!   of them, its own included: N×M×N deliveries. Over the measured batches it reports
//!   delivered messages per second (deliveries / wall time), the server's CPU (utime+stime
//!   from `/proc/PID/stat`, in clock ticks of 10 ms) per 1,000 delivered, the same from the
//!   nanosecond counters of `/proc/PID/task/*/schedstat` as a cross-check, the server's peak
//!   RSS (VmHWM), the min/median/max batch time and the client's own CPU use; a client near
//!   100% of its core means the client, not the server, limits the throughput. Runs on a
//!   multi-thread runtime (one worker under `taskset -c 1`), one writer and one reader task
//!   per client.
//! - `echo --url ws://127.0.0.1:P/ --connections N --size BYTES --server-pid PID [--rounds R]`
//!   (defaults 100 connections, 20 B, 1,000 rounds) as uWebSockets' load_test: every connection
//!   sends one message (text up to 125 B, binary above), waits for its echo and sends the next.
//!   After a warm-up of a tenth of the rounds, reports messages per second and the server's CPU
//!   per 1,000 messages from `/proc/PID/task/*/schedstat` (utime+stime as a cross-check).
//! - `broadcast --url ws://127.0.0.1:P/ --subscribers N --server-pid PID [--rounds R]` (defaults
//!   10,000 and 20) opens N clients on a chat room and waits for `ready` on each; then, one round
//!   at a time, the first sends a text, which the room sends back and publishes to every other
//!   member. It reports the server's CPU (schedstat) per delivered message and the min/median/max
//!   time until the last subscriber has the text.
//!
//! - `streams --url ws://127.0.0.1:P/ --streams N --server-pid PID [--http1] [--per-connection K]
//!   [--size BYTES] [--rounds R]` (defaults 1,000, 125, 20 B, 100) opens N WebSockets as RFC 8441
//!   streams of cleartext HTTP/2 connections (prior knowledge, K streams on each: the anyws
//!   servers take at most 128 at once per connection), or with `--http1` as N HTTP/1.1
//!   connections; each echoes one message. It reports the server's RSS growth and CPU
//!   (schedstat) per WebSocket opened, then runs `echo`'s rounds on them.
//! - `make-cert --dir DIR` writes a self-signed certificate for 127.0.0.1 (`cert.pem`,
//!   `key.pem`) for the TLS workloads.
//!
//! `idle` and `echo` take `--tls-ca PEM` with a `wss://` URL: they then connect over TLS,
//! trusting that certificate, and `idle` also reports the CPU per connection from schedstat.
//!
//! `idle`, `chat` and `broadcast` take `--deflate [--size BYTES]`: the client then speaks
//! WebSocket itself (`deflate.rs`), offers `permessage-deflate; client_max_window_bits` as
//! browsers do, sends compressible JSON texts of BYTES bytes (defaults 256, 200 and 1024)
//! compressed when the server accepted the offer, and inflates and checks every message; the
//! `RESULT` line also counts what came compressed.
//!
//! Every mode prints a last line starting with `RESULT` that holds the numbers as
//! `key=value` pairs for scripts.
//!
//! The runner scripts build everything, run each server pinned to CPU 0 with the client pinned
//! to CPU 1, on free loopback ports, with every step under a timeout, and print a table:
//!
//! ```text
//! bench/run.sh [--smoke]             # every workload on anyws (tokio, smol, async-std),
//!                                    # tokio-tungstenite and Bun, with ratios
//! bench/idle.sh [CONNECTIONS]        # default 10000: anyws-fixture --app echo against
//!                                    # control-server with default and with small buffers
//! bench/chat.sh [CLIENTS] [BATCHES]  # defaults 32 and 20: anyws-fixture --app chatroom
//!                                    # against control-server --app chatroom, with ratios
//! ```
//!
//! One mode by hand:
//!
//! ```text
//! cargo build --release -p anyws-fixture -p anyws-bench
//! ulimit -n 20000; PORT=9001 taskset -c 0 target/release/anyws-fixture --app echo &
//! taskset -c 1 target/release/anyws-bench idle --url ws://127.0.0.1:9001/ \
//!     --connections 10000 --server-pid $!
//!
//! PORT=9002 taskset -c 0 target/release/anyws-fixture --app chatroom &
//! taskset -c 1 target/release/anyws-bench chat --url ws://127.0.0.1:9002/ \
//!     --clients 32 --messages 640 --batches 20 --server-pid $!
//! ```
//!
//! (Start the server as a simple command, as here, so that `$!` is its own pid: `taskset`
//! execs it, but `cd dir && server &` would background a subshell instead.)

mod deflate;

use anyws_conformance::transport::{h2_client, h2_websocket, Conn, H2Stream};
use futures_util::{SinkExt, StreamExt};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{rustls, TlsConnector};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const USAGE: &str = "\
usage: anyws-bench control-server --port P [--app echo|chatroom] [--small-buffers]
       anyws-bench idle --url ws://127.0.0.1:P/ --connections N --server-pid PID
                        [--concurrency C] [--timeout-secs S] [--settle-ms MS]
                        [--deflate [--size BYTES]]
       anyws-bench chat --url ws://127.0.0.1:P/ --clients N --server-pid PID
                        [--messages M] [--batches B] [--timeout-secs S] [--nagle]
                        [--deflate [--size BYTES]]
       anyws-bench echo --url ws://127.0.0.1:P/ --connections N --size BYTES --server-pid PID
                        [--rounds R] [--timeout-secs S]
       anyws-bench broadcast --url ws://127.0.0.1:P/ --subscribers N --server-pid PID
                        [--rounds R] [--timeout-secs S] [--deflate [--size BYTES]]
       anyws-bench streams --url ws://127.0.0.1:P/ --streams N --server-pid PID [--http1]
                        [--per-connection K]
                        [--size BYTES] [--rounds R] [--settle-ms MS] [--timeout-secs S]
       anyws-bench make-cert --dir DIR
(idle and echo also take --tls-ca PEM with a wss:// URL)";

/// The open-file limit both modes ask for; the hard limit caps it.
const WANTED_NOFILE: u64 = 65536;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run: Result<Box<dyn FnOnce() -> Result<(), String>>, String> = match args
        .first()
        .map(String::as_str)
    {
        Some("control-server") => ControlOptions::parse(&args[1..])
            .map(|options| Box::new(move || control_server(options)) as Box<_>),
        Some("idle") => {
            IdleOptions::parse(&args[1..]).map(|options| Box::new(move || idle(options)) as Box<_>)
        }
        Some("chat") => {
            ChatOptions::parse(&args[1..]).map(|options| Box::new(move || chat(options)) as Box<_>)
        }
        Some("echo") => {
            EchoOptions::parse(&args[1..]).map(|options| Box::new(move || echo(options)) as Box<_>)
        }
        Some("broadcast") => BroadcastOptions::parse(&args[1..])
            .map(|options| Box::new(move || broadcast(options)) as Box<_>),
        Some("streams") => StreamsOptions::parse(&args[1..])
            .map(|options| Box::new(move || streams(options)) as Box<_>),
        Some("make-cert") => match flags(&args[1..]).as_slice() {
            [(flag, Some(dir))] if flag == "--dir" => {
                let dir = std::path::PathBuf::from(dir);
                Ok(Box::new(move || make_cert(&dir)) as Box<_>)
            }
            _ => Err("make-cert takes --dir DIR".to_owned()),
        },
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(
            "expected a mode: control-server, idle, chat, echo, broadcast, streams or make-cert"
                .to_owned(),
        ),
    };
    let run = match run {
        Ok(run) => run,
        Err(message) => {
            eprintln!("anyws-bench: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("anyws-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `--flag value` and `--flag=value` arguments into pairs; a flag without a value gets
/// `None` when the next argument is another flag or there is none.
fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if let Some((flag, value)) = arg.split_once('=') {
            out.push((flag.to_owned(), Some(value.to_owned())));
        } else if args.get(i + 1).is_some_and(|next| !next.starts_with("--")) {
            out.push((arg.clone(), Some(args[i + 1].clone())));
            i += 1;
        } else {
            out.push((arg.clone(), None));
        }
        i += 1;
    }
    out
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number"))
}

/// Raises the soft open-file limit to [`WANTED_NOFILE`] or the hard limit, whichever is lower,
/// and returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            let wanted = WANTED_NOFILE.min(hard);
            if wanted > soft && rlimit::Resource::NOFILE.set(wanted, hard).is_ok() {
                wanted
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

// ---------------------------------------------------------------------------------------------
// control-server

/// What the control server does with the messages it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlApp {
    /// Sends every text and binary message back to its sender.
    Echo,
    /// One room: sends `ready` on open, and every message to every member, sender included.
    Chatroom,
}

#[derive(Debug)]
struct ControlOptions {
    port: u16,
    app: ControlApp,
    small_buffers: bool,
}

impl ControlOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut port = None;
        let mut app = ControlApp::Echo;
        let mut small_buffers = false;
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--port" => port = Some(number(&flag, value)?),
                "--app" => {
                    app = match value.as_deref() {
                        Some("echo") => ControlApp::Echo,
                        Some("chatroom") => ControlApp::Chatroom,
                        _ => return Err("control-server: --app takes echo or chatroom".to_owned()),
                    }
                }
                "--small-buffers" if value.is_none() => small_buffers = true,
                _ => return Err(format!("control-server: unexpected argument `{flag}`")),
            }
        }
        Ok(Self {
            port: port.ok_or("control-server needs --port")?,
            app,
            small_buffers,
        })
    }
}

fn control_server(options: ControlOptions) -> Result<(), String> {
    let nofile = raise_nofile_limit();
    let config = if options.small_buffers {
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
    } else {
        WebSocketConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|error| format!("cannot listen on 127.0.0.1:{}: {error}", options.port))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("no local address: {error}"))?;
        eprintln!(
            "anyws-bench control-server: tokio-tungstenite, {:?} app, {} buffers (read {} B, \
             write {} B), open-file limit {nofile}, listening on {address}",
            options.app,
            if options.small_buffers {
                "small"
            } else {
                "default"
            },
            config.read_buffer_size,
            config.write_buffer_size,
        );
        let room = Room::default();
        let mut next_id = 0_u64;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // As the anyws tokio adapter does: without it, Nagle's algorithm and the
                    // peer's delayed ACKs stall small writes by ~40 ms.
                    let _ = stream.set_nodelay(true);
                    match options.app {
                        ControlApp::Echo => {
                            tokio::spawn(echo_connection(stream, config));
                        }
                        ControlApp::Chatroom => {
                            next_id += 1;
                            tokio::spawn(chat_connection(stream, config, room.clone(), next_id));
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors, most likely: say so and back off instead of
                    // spinning on the listener.
                    eprintln!("anyws-bench control-server: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Upgrades one connection and echoes its text and binary messages until it ends.
/// tungstenite answers pings and close frames itself.
async fn echo_connection(stream: TcpStream, config: WebSocketConfig) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// The chat room's members: each one's id and the sending end of its unbounded queue.
type Room = Arc<RwLock<Vec<(u64, mpsc::UnboundedSender<Message>)>>>;

/// Upgrades one connection, queues `ready`, joins the room, and then sends a clone of every
/// text or binary message it reads to every member (this one included) until it ends.
///
/// A writer task owns the sink: it waits for one message, takes whatever else is queued
/// without waiting, `feed`s each and flushes once, so a burst costs one write system call
/// rather than one per message.
async fn chat_connection(stream: TcpStream, config: WebSocketConfig, room: Room, id: u64) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (queue, mut queued) = mpsc::unbounded_channel::<Message>();
    let _ = queue.send(Message::text("ready"));
    room.write()
        .unwrap_or_else(PoisonError::into_inner)
        .push((id, queue));

    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = queued.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });

    while let Some(Ok(message)) = stream.next().await {
        if message.is_text() || message.is_binary() {
            let members = room.read().unwrap_or_else(PoisonError::into_inner);
            for (_, member) in members.iter() {
                // A member whose writer has ended is leaving the room; skip it.
                let _ = member.send(message.clone());
            }
        }
    }
    // Leaving the room drops the last sender, so the writer drains its queue and ends.
    room.write()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(member, _)| *member != id);
    let _ = writer.await;
}

// ---------------------------------------------------------------------------------------------
// idle

#[derive(Debug)]
struct IdleOptions {
    url: String,
    connections: usize,
    server_pid: u32,
    concurrency: usize,
    timeout: Duration,
    settle: Duration,
    /// `--deflate`: offer permessage-deflate and echo a compressible text of `size` bytes.
    deflate: bool,
    size: usize,
    /// `--tls-ca PEM`: `wss://`, trusting this certificate.
    tls_ca: Option<std::path::PathBuf>,
}

impl IdleOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut url = None;
        let mut connections = 10_000;
        let mut server_pid = None;
        let mut concurrency = 200;
        let mut timeout_secs = 300;
        let mut settle_ms = 1000;
        let (mut deflate, mut size) = (false, 256);
        let mut tls_ca: Option<std::path::PathBuf> = None;
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--deflate" if value.is_none() => deflate = true,
                "--size" => size = number(&flag, value)?,
                "--url" => url = Some(value.ok_or("--url needs a value")?),
                "--settle-ms" => settle_ms = number(&flag, value)?,
                "--connections" => connections = number(&flag, value)?,
                "--tls-ca" => tls_ca = Some(value.ok_or("--tls-ca needs a file")?.into()),
                "--server-pid" => server_pid = Some(number(&flag, value)?),
                "--concurrency" | "--batch" => concurrency = number(&flag, value)?,
                "--timeout-secs" => timeout_secs = number(&flag, value)?,
                _ => return Err(format!("idle: unexpected argument `{flag}`")),
            }
        }
        let url = loopback_url("idle", url, tls_ca.is_some())?;
        if deflate && tls_ca.is_some() {
            return Err("idle: --deflate goes without --tls-ca".to_owned());
        }
        if connections == 0 || concurrency == 0 {
            return Err("idle: --connections and --concurrency must be at least 1".to_owned());
        }
        Ok(Self {
            url,
            connections,
            server_pid: server_pid.ok_or("idle needs --server-pid")?,
            concurrency,
            timeout: Duration::from_secs(timeout_secs),
            settle: Duration::from_millis(settle_ms),
            deflate,
            size,
            tls_ca,
        })
    }
}

/// What `/proc` says about the server at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    cpu_us: u64,
}

/// Clock ticks per second for `/proc/PID/stat`, from `getconf CLK_TCK` (100 on Linux).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

fn sample(pid: u32, ticks_per_second: u64) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("cannot read /proc/{pid}/status: {error}"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("cannot read /proc/{pid}/stat: {error}"))?;
    // The command name in field 2 may hold spaces; the fields after its closing parenthesis
    // start at field 3 (state), so utime (field 14) and stime (field 15) are at 11 and 12.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64, String> {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))
    };
    let cpu_ticks = ticks(11)? + ticks(12)?;
    Ok(Sample {
        rss_kib,
        cpu_us: cpu_ticks * 1_000_000 / ticks_per_second,
    })
}

/// A load client's connection: TCP, TLS, or a stream of an HTTP/2 connection.
type Client = WebSocketStream<Conn>;

/// Opens a WebSocket to `url` (`ws://` or, with `tls`, `wss://`): TCP (TCP_NODELAY with
/// `nodelay`), the TLS handshake, then the upgrade.
async fn connect_ws(
    url: &str,
    config: Option<WebSocketConfig>,
    nodelay: bool,
    tls: Option<&TlsConnector>,
) -> Result<Client, String> {
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .ok_or_else(|| format!("`{url}` has no host"))?;
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|error| format!("connect to {authority}: {error}"))?;
    tcp.set_nodelay(nodelay)
        .map_err(|error| format!("TCP_NODELAY: {error}"))?;
    let stream = match tls {
        Some(tls) => {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host);
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|error| format!("`{host}`: {error}"))?;
            let tls = tls
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS handshake failed: {error}"))?;
            Conn::Tls(Box::new(tls))
        }
        None => Conn::Tcp(tcp),
    };
    tokio_tungstenite::client_async_with_config(url, stream, config)
        .await
        .map(|(ws, _)| ws)
        .map_err(|error| format!("handshake failed: {error}"))
}

/// A TLS client that trusts the certificate in the PEM file `ca` (the benchmark's
/// self-signed one, `anyws-bench make-cert`) and offers ALPN `http/1.1`.
fn tls_connector(ca: &std::path::Path) -> Result<TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_file(ca)
        .map_err(|error| format!("{}: {error}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert)
        .map_err(|error| format!("{}: {error}", ca.display()))?;
    // X25519 first, as browsers offer it (ring's provider lists P-384 first).
    #[allow(deprecated)] // The post-quantum key exchange is not needed on loopback.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = {
        use rustls::crypto::ring::kx_group;
        vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1]
    };
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS versions: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens one connection, sends one small message and waits for its echo.
async fn open_one(
    url: &str,
    config: WebSocketConfig,
    tls: Option<&TlsConnector>,
) -> Result<Client, String> {
    let ws = connect_ws(url, Some(config), false, tls).await?;
    probe_echo(ws).await
}

/// Sends one small message on `ws` and waits for its echo.
async fn probe_echo(mut ws: Client) -> Result<Client, String> {
    let probe = "idle-probe";
    ws.send(Message::text(probe))
        .await
        .map_err(|error| format!("send failed: {error}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == probe => return Ok(ws),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server before the echo: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("read failed: {error}")),
            None => return Err("connection ended before the echo".to_owned()),
        }
    }
}

/// Closes one connection and reads until the server's close frame or the end of the stream.
async fn close_one(mut ws: Client) {
    let closing = async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

fn idle(options: IdleOptions) -> Result<(), String> {
    let nofile = raise_nofile_limit();
    if (options.connections as u64) + 64 > nofile {
        return Err(format!(
            "idle: {} connections need more file descriptors than the limit of {nofile}",
            options.connections
        ));
    }
    let ticks_per_second = clock_ticks_per_second();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    if options.deflate {
        return runtime.block_on(deflate::idle_run(options, ticks_per_second));
    }
    runtime.block_on(idle_run(options, ticks_per_second))
}

async fn idle_run(options: IdleOptions, ticks_per_second: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let tls = options.tls_ca.as_deref().map(tls_connector).transpose()?;
    let tls = tls.as_ref();
    // The client's own buffers do not count; keep them small so the client stays light.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);

    let before = sample(pid, ticks_per_second)?;
    let before_sched = scheduled_ns(pid);
    let started = Instant::now();
    let url = options.url.as_str();
    let mut opening = futures_util::stream::iter(0..options.connections)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(30), open_one(url, config, tls))
                .await
                .unwrap_or_else(|_| Err("no handshake and echo within 30 s".to_owned()))
        })
        .buffer_unordered(options.concurrency);
    let mut clients = Vec::with_capacity(options.connections);
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    let failure = loop {
        tokio::select! {
            next = opening.next() => match next {
                Some(Ok(client)) => clients.push(client),
                Some(Err(error)) => break Some(error),
                None => break None,
            },
            () = &mut deadline => break Some(format!("not done after {:?}", options.timeout)),
        }
    };
    drop(opening);
    let opened_in = started.elapsed();
    if let Some(error) = failure {
        let opened = clients.len();
        close_all(clients, options.concurrency).await;
        return Err(format!(
            "idle: {opened} of {} connections open after {opened_in:.2?}, then: {error}",
            options.connections
        ));
    }
    tokio::time::sleep(options.settle).await;
    let after = sample(pid, ticks_per_second)?;
    let after_sched = scheduled_ns(pid);

    let n = clients.len();
    // The same from schedstat's nanoseconds, finer than the 10 ms clock ticks.
    let sched_us_per_conn = match (before_sched, after_sched) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 / 1000.0 / n as f64,
        _ => f64::NAN,
    };
    let rss_delta = after.rss_kib.saturating_sub(before.rss_kib);
    let cpu_delta = after.cpu_us.saturating_sub(before.cpu_us);
    let kib_per_conn = rss_delta as f64 / n as f64;
    let cpu_us_per_conn = cpu_delta as f64 / n as f64;
    println!(
        "{n} connections to {url} open and echoed in {:.2} s (server pid {pid})",
        opened_in.as_secs_f64()
    );
    println!("server RSS before:         {:>10} KiB", before.rss_kib);
    println!("server RSS after:          {:>10} KiB", after.rss_kib);
    println!("server RSS per connection: {kib_per_conn:>10.2} KiB");
    println!("server CPU while opening:  {cpu_delta:>10} µs");
    println!("server CPU per connection: {cpu_us_per_conn:>10.1} µs");

    close_all(clients, options.concurrency).await;
    tokio::time::sleep(options.settle).await;
    let closed = sample(pid, ticks_per_second).ok();
    if let Some(closed) = closed {
        println!("server RSS after closing:  {:>10} KiB", closed.rss_kib);
    }
    println!(
        "RESULT connections={n} rss_before_kib={} rss_after_kib={} kib_per_conn={kib_per_conn:.3} \
         cpu_us={cpu_delta} cpu_us_per_conn={cpu_us_per_conn:.2} \
         sched_us_per_conn={sched_us_per_conn:.2} rss_closed_kib={} open_secs={:.3}",
        before.rss_kib,
        after.rss_kib,
        closed.map_or(0, |closed| closed.rss_kib),
        opened_in.as_secs_f64(),
    );
    Ok(())
}

async fn close_all(clients: Vec<Client>, concurrency: usize) {
    futures_util::stream::iter(clients)
        .map(close_one)
        .buffer_unordered(concurrency)
        .collect::<()>()
        .await;
}

// ---------------------------------------------------------------------------------------------
// chat

/// The text every client sends in every batch: 30 bytes.
const CHAT_TEXT: &str = "hello from the chat benchmark!";

#[derive(Debug)]
struct ChatOptions {
    url: String,
    clients: usize,
    messages: usize,
    batches: usize,
    server_pid: u32,
    timeout: Duration,
    nagle: bool,
    /// `--deflate`: offer permessage-deflate and send compressible texts of `size` bytes.
    deflate: bool,
    size: usize,
}

impl ChatOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut url = None;
        let mut clients = 32;
        let mut messages = 640;
        let mut batches = 20;
        let mut server_pid = None;
        let mut timeout_secs = 300;
        let mut nagle = false;
        let (mut deflate, mut size) = (false, 200);
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--deflate" if value.is_none() => deflate = true,
                "--size" => size = number(&flag, value)?,
                "--url" => url = Some(value.ok_or("--url needs a value")?),
                "--nagle" if value.is_none() => nagle = true,
                "--clients" => clients = number(&flag, value)?,
                "--messages" => messages = number(&flag, value)?,
                "--batches" => batches = number(&flag, value)?,
                "--server-pid" => server_pid = Some(number(&flag, value)?),
                "--timeout-secs" => timeout_secs = number(&flag, value)?,
                _ => return Err(format!("chat: unexpected argument `{flag}`")),
            }
        }
        let url: String = url.ok_or("chat needs --url")?;
        if !(url.starts_with("ws://127.0.0.1:") || url.starts_with("ws://localhost:")) {
            return Err(format!(
                "chat: `{url}` is not a ws://127.0.0.1 URL; this benchmark stays on loopback"
            ));
        }
        if clients == 0 || messages == 0 || batches == 0 {
            return Err("chat: --clients, --messages and --batches must be at least 1".to_owned());
        }
        Ok(Self {
            url,
            clients,
            messages,
            batches,
            server_pid: server_pid.ok_or("chat needs --server-pid")?,
            timeout: Duration::from_secs(timeout_secs),
            nagle,
            deflate,
            size,
        })
    }
}

/// The peak resident set size (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("cannot read /proc/{pid}/status: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// Nanoseconds the live threads of a process have run, summed from
/// `/proc/PID/task/*/schedstat`; finer than the clock ticks of `/proc/PID/stat`, but it misses
/// threads that have exited, so it only serves as a cross-check.
fn scheduled_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// What a client's reader task reports to the coordinator.
#[derive(Debug)]
enum ChatEvent {
    /// Client `client` has received every message of batch `batch`.
    BatchDone { client: usize, batch: usize },
    /// Client `client` failed.
    Failed { client: usize, error: String },
}

/// Waits until each of the `n` clients has reported batch `batch` done; an error when one
/// fails, reports another batch, or nothing comes for 60 s.
async fn wait_for_batch(
    events: &mut mpsc::UnboundedReceiver<ChatEvent>,
    batch: usize,
    n: usize,
) -> Result<(), String> {
    let mut done = 0;
    while done < n {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .map_err(|_| format!("chat: batch {batch}: {done} of {n} clients done after 60 s"))?;
        match event {
            Some(ChatEvent::BatchDone { batch: got, .. }) if got == batch => done += 1,
            Some(ChatEvent::BatchDone { client, batch: got }) => {
                return Err(format!(
                    "chat: client {client} finished batch {got} during batch {batch}"
                ))
            }
            Some(ChatEvent::Failed { client, error }) => {
                return Err(format!("chat: batch {batch}: client {client}: {error}"))
            }
            None => return Err(format!("chat: batch {batch}: every client task ended")),
        }
    }
    Ok(())
}

/// Opens one connection and waits for the server's `ready`. Unless `nagle`, the socket gets
/// TCP_NODELAY, so the client's flushes go out at once, as the servers' do.
async fn open_chat_client(url: &str, nagle: bool) -> Result<Client, String> {
    let mut ws = connect_ws(url, None, !nagle, None).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "ready" => return Ok(ws),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server before `ready`: {frame:?}"))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("expected `ready`, got {other:?}")),
            Some(Err(error)) => return Err(format!("read failed: {error}")),
            None => return Err("connection ended before `ready`".to_owned()),
        }
    }
}

fn chat(options: ChatOptions) -> Result<(), String> {
    raise_nofile_limit();
    let ticks_per_second = clock_ticks_per_second();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let timeout = options.timeout;
    // Spawned, so that the coordinator runs on the runtime's worker with the client tasks
    // rather than on this thread, which `block_on` would use.
    let run = runtime.spawn(async move {
        let run = async move {
            if options.deflate {
                deflate::chat_run(options, ticks_per_second).await
            } else {
                chat_run(options, ticks_per_second).await
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("chat: not done after {timeout:?}")))
    });
    runtime
        .block_on(run)
        .map_err(|error| format!("chat: the coordinator task failed: {error}"))?
}

async fn chat_run(options: ChatOptions, ticks_per_second: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let n = options.clients;
    let url = options.url.as_str();
    let nagle = options.nagle;

    // Open every client and wait for each one's `ready` before anyone sends.
    let opened: Vec<Result<Client, String>> = futures_util::stream::iter(0..n)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(30), open_chat_client(url, nagle))
                .await
                .unwrap_or_else(|_| Err("no handshake and `ready` within 30 s".to_owned()))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let clients = opened
        .into_iter()
        .collect::<Result<Vec<Client>, String>>()
        .map_err(|error| format!("chat: opening {n} clients: {error}"))?;

    // Each client gets a writer task, which sends `messages` texts (all fed, then one flush)
    // whenever the batch number goes up, and a reader task, which counts what arrives and
    // reports each batch once it holds every message of it: `messages` from each of n clients.
    let per_batch_per_client = options.messages * n;
    let (batch_tx, batch_rx) = watch::channel(0_usize);
    let (event_tx, mut events) = mpsc::unbounded_channel::<ChatEvent>();
    let mut tasks = Vec::with_capacity(2 * n);
    let text = Message::text(CHAT_TEXT);
    for (client, ws) in clients.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let mut batch_rx = batch_rx.clone();
        let write_events = event_tx.clone();
        let text = text.clone();
        let messages = options.messages;
        tasks.push(tokio::spawn(async move {
            let outcome = async {
                // `changed` fails once the coordinator drops its sender: time to close.
                while batch_rx.changed().await.is_ok() {
                    for _ in 0..messages {
                        sink.feed(text.clone()).await?;
                    }
                    sink.flush().await?;
                }
                sink.close().await
            }
            .await;
            if let Err(error) = outcome {
                let _ = write_events.send(ChatEvent::Failed {
                    client,
                    error: format!("write failed: {error}"),
                });
            }
        }));
        let read_events = event_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut received = 0_usize;
            let failure = loop {
                match stream.next().await {
                    Some(Ok(Message::Text(got))) if got.as_str() == CHAT_TEXT => {
                        received += 1;
                        if received % per_batch_per_client == 0 {
                            let batch = received / per_batch_per_client;
                            let _ = read_events.send(ChatEvent::BatchDone { client, batch });
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Ok(other)) => break Some(format!("unexpected message {other:?}")),
                    Some(Err(error)) => break Some(format!("read failed: {error}")),
                }
            };
            if let Some(error) = failure {
                let _ = read_events.send(ChatEvent::Failed { client, error });
            }
        }));
    }
    drop(event_tx);

    // Batch 1 warms up; batches 2..=batches+1 are measured.
    let delivered_per_batch = (n * per_batch_per_client) as u64;
    let total_batches = options.batches + 1;
    let mut before = None;
    let mut measured_from = Instant::now();
    let mut batch_secs = Vec::with_capacity(options.batches);
    for batch in 1..=total_batches {
        if batch == 2 {
            before = Some((
                sample(pid, ticks_per_second)?,
                scheduled_ns(pid),
                sample(std::process::id(), ticks_per_second)?,
            ));
            measured_from = Instant::now();
        }
        let started = Instant::now();
        batch_tx
            .send(batch)
            .map_err(|_| "chat: every client task has ended".to_owned())?;
        wait_for_batch(&mut events, batch, n).await?;
        if batch >= 2 {
            batch_secs.push(started.elapsed().as_secs_f64());
        }
    }
    let secs = measured_from.elapsed().as_secs_f64();
    let after = sample(pid, ticks_per_second)?;
    let after_sched = scheduled_ns(pid);
    let after_client = sample(std::process::id(), ticks_per_second)?;
    let hwm_kib = peak_rss_kib(pid)?;
    let (before, before_sched, before_client) = before.ok_or("chat: no measured batch")?;

    let delivered = delivered_per_batch * options.batches as u64;
    let msgs_per_sec = delivered as f64 / secs;
    let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    let cpu_us_per_1k = cpu_us as f64 * 1000.0 / delivered as f64;
    let tick_us = 1_000_000 / ticks_per_second;
    let sched_us_per_1k = match (before_sched, after_sched) {
        (Some(before), Some(after)) => {
            after.saturating_sub(before) as f64 / 1000.0 * 1000.0 / delivered as f64
        }
        _ => f64::NAN,
    };
    let client_cpu_us = after_client.cpu_us.saturating_sub(before_client.cpu_us);
    let client_cpu_pct = client_cpu_us as f64 / 1e4 / secs;
    batch_secs.sort_by(f64::total_cmp);
    let median_ms = batch_secs[batch_secs.len() / 2] * 1e3;
    let min_ms = batch_secs[0] * 1e3;
    let max_ms = batch_secs[batch_secs.len() - 1] * 1e3;

    println!(
        "{n} clients on {url} (server pid {pid}): {} batches measured after 1 warm-up, each \
         {n} x {} sends of {} B and {delivered_per_batch} deliveries",
        options.batches,
        options.messages,
        CHAT_TEXT.len(),
    );
    println!("measured wall time:          {secs:>12.3} s");
    println!("batch time min/median/max:   {min_ms:>8.2} / {median_ms:.2} / {max_ms:.2} ms");
    println!("delivered messages:          {delivered:>12}");
    println!("delivered per second:        {msgs_per_sec:>12.0}");
    println!("server CPU (utime+stime):    {cpu_us:>12} µs (±{tick_us} µs per reading)");
    println!("server CPU per 1,000:        {cpu_us_per_1k:>12.1} µs");
    println!("  cross-check, schedstat:    {sched_us_per_1k:>12.1} µs");
    println!("server peak RSS (VmHWM):     {hwm_kib:>12} KiB");
    println!("client CPU:                  {client_cpu_pct:>12.1} % of one core");
    println!(
        "RESULT clients={n} messages={} batches={} delivered={delivered} secs={secs:.4} \
         msgs_per_sec={msgs_per_sec:.0} cpu_us={cpu_us} cpu_us_per_1k={cpu_us_per_1k:.2} \
         sched_us_per_1k={sched_us_per_1k:.2} hwm_kib={hwm_kib} client_cpu_pct={client_cpu_pct:.1} \
         batch_ms_median={median_ms:.3}",
        options.messages, options.batches,
    );

    // Close politely: dropping the batch sender makes every writer send a close frame; the
    // readers end when the server answers.
    drop(batch_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// echo

#[derive(Debug)]
struct EchoOptions {
    url: String,
    connections: usize,
    size: usize,
    rounds: usize,
    server_pid: u32,
    timeout: Duration,
    /// `--tls-ca PEM`: `wss://`, trusting this certificate.
    tls_ca: Option<std::path::PathBuf>,
}

impl EchoOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut url = None;
        let mut connections = 100;
        let mut size = 20;
        let mut rounds = 1000;
        let mut server_pid = None;
        let mut timeout_secs = 300;
        let mut tls_ca: Option<std::path::PathBuf> = None;
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--url" => url = Some(value.ok_or("--url needs a value")?),
                "--tls-ca" => tls_ca = Some(value.ok_or("--tls-ca needs a file")?.into()),
                "--connections" => connections = number(&flag, value)?,
                "--size" => size = number(&flag, value)?,
                "--rounds" => rounds = number(&flag, value)?,
                "--server-pid" => server_pid = Some(number(&flag, value)?),
                "--timeout-secs" => timeout_secs = number(&flag, value)?,
                _ => return Err(format!("echo: unexpected argument `{flag}`")),
            }
        }
        let url = loopback_url("echo", url, tls_ca.is_some())?;
        if connections == 0 || size == 0 || rounds == 0 {
            return Err("echo: --connections, --size and --rounds must be at least 1".to_owned());
        }
        Ok(Self {
            url,
            connections,
            size,
            rounds,
            server_pid: server_pid.ok_or("echo needs --server-pid")?,
            timeout: Duration::from_secs(timeout_secs),
            tls_ca,
        })
    }
}

/// The URL of a benchmark mode, which must point at the loopback interface: `ws://`, or
/// `wss://` with `tls`.
fn loopback_url(mode: &str, url: Option<String>, tls: bool) -> Result<String, String> {
    let url = url.ok_or_else(|| format!("{mode} needs --url"))?;
    let scheme = if tls { "wss" } else { "ws" };
    if !(url.starts_with(&format!("{scheme}://127.0.0.1:"))
        || url.starts_with(&format!("{scheme}://localhost:")))
    {
        return Err(format!(
            "{mode}: `{url}` is not a {scheme}://127.0.0.1 URL; this benchmark stays on loopback \
             (wss:// goes with --tls-ca)"
        ));
    }
    Ok(url)
}

/// Runs a future on a multi-thread runtime (one worker under `taskset -c 1`) as a spawned task,
/// so that it runs on the worker with the tasks it spawns, bounded by `timeout`.
fn run_spawned<F>(mode: &'static str, timeout: Duration, run: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let run = runtime.spawn(async move {
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("{mode}: not done after {timeout:?}")))
    });
    runtime
        .block_on(run)
        .map_err(|error| format!("{mode}: the coordinator task failed: {error}"))?
}

/// Opens `n` connections with at most 200 handshakes in flight; `open` opens one.
async fn open_many<F, Fut>(mode: &str, n: usize, open: F) -> Result<Vec<Client>, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Client, String>>,
{
    let opened: Vec<Result<Client, String>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let opening = open();
            async move {
                tokio::time::timeout(Duration::from_secs(30), opening)
                    .await
                    .unwrap_or_else(|_| Err("not open within 30 s".to_owned()))
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    opened
        .into_iter()
        .collect::<Result<Vec<Client>, String>>()
        .map_err(|error| format!("{mode}: opening {n} connections: {error}"))
}

fn echo(options: EchoOptions) -> Result<(), String> {
    raise_nofile_limit();
    let ticks_per_second = clock_ticks_per_second();
    let timeout = options.timeout;
    run_spawned("echo", timeout, echo_run(options, ticks_per_second))
}

/// Echo as uWebSockets' load_test drives it: every connection sends one message, waits for it
/// to come back and sends the next, so `connections` messages are in flight. A warm-up of a
/// tenth of the rounds (at least one) comes first; CPU and time cover the measured rounds.
async fn echo_run(options: EchoOptions, ticks_per_second: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let url = options.url.as_str();
    let n = options.connections;
    let config = WebSocketConfig::default();
    let tls = options.tls_ca.as_deref().map(tls_connector).transpose()?;
    let tls = tls.as_ref();
    let clients = open_many("echo", n, || async move {
        connect_ws(url, Some(config), true, tls).await
    })
    .await?;
    let echoed = echo_rounds(clients, options.size, options.rounds, pid, ticks_per_second).await?;
    let EchoFigures {
        secs,
        msgs_per_sec,
        cpu_us,
        cpu_us_per_1k,
        ticks_us_per_1k,
        hwm_kib,
        total,
    } = echoed;
    let rounds = options.rounds;
    println!(
        "{n} connections on {url} (server pid {pid}): {rounds} round trips each of {} B after \
         {} warm-up ones",
        options.size,
        (rounds / 10).max(1)
    );
    println!("measured wall time:          {secs:>12.3} s");
    println!("echoed per second:           {msgs_per_sec:>12.0}");
    println!("server CPU (schedstat):      {cpu_us:>12.0} µs");
    println!("server CPU per 1,000:        {cpu_us_per_1k:>12.1} µs");
    println!("  cross-check, utime+stime:  {ticks_us_per_1k:>12.1} µs");
    println!("server peak RSS (VmHWM):     {hwm_kib:>12} KiB");
    println!(
        "RESULT connections={n} size={} rounds={rounds} messages={total} secs={secs:.4} \
         msgs_per_sec={msgs_per_sec:.0} cpu_us={cpu_us:.0} cpu_us_per_1k={cpu_us_per_1k:.2} \
         ticks_us_per_1k={ticks_us_per_1k:.2} hwm_kib={hwm_kib}",
        options.size
    );
    Ok(())
}

/// What [`echo_rounds`] measured.
struct EchoFigures {
    secs: f64,
    msgs_per_sec: f64,
    cpu_us: f64,
    cpu_us_per_1k: f64,
    ticks_us_per_1k: f64,
    hwm_kib: u64,
    total: f64,
}

/// Runs the echo rounds on `clients` (a warm-up of a tenth of `rounds`, then `rounds`), each
/// connection one message of `size` bytes in flight (text up to 125 B, binary above, as
/// load_test does), then closes them.
async fn echo_rounds(
    clients: Vec<Client>,
    size: usize,
    rounds: usize,
    pid: u32,
    ticks_per_second: u64,
) -> Result<EchoFigures, String> {
    let n = clients.len();
    let message = if size <= 125 {
        Message::text("x".repeat(size))
    } else {
        Message::binary(vec![0x5a_u8; size])
    };
    // Each connection's task runs the rounds of a phase whenever the phase number goes up and
    // reports when they are done.
    let warmup = (rounds / 10).max(1);
    let (phase_tx, phase_rx) = watch::channel(0_usize);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut tasks = Vec::with_capacity(n);
    for mut ws in clients {
        let mut phase_rx = phase_rx.clone();
        let done_tx = done_tx.clone();
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            while phase_rx.changed().await.is_ok() {
                let count = if *phase_rx.borrow_and_update() == 1 {
                    warmup
                } else {
                    rounds
                };
                let outcome = async {
                    for _ in 0..count {
                        ws.send(message.clone())
                            .await
                            .map_err(|error| format!("send failed: {error}"))?;
                        loop {
                            match ws.next().await {
                                Some(Ok(got)) if got == message => break,
                                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                                Some(Ok(other)) => {
                                    return Err(format!("unexpected message {other:?}"))
                                }
                                Some(Err(error)) => return Err(format!("read failed: {error}")),
                                None => return Err("connection ended".to_owned()),
                            }
                        }
                    }
                    Ok(())
                }
                .await;
                let failed = outcome.is_err();
                let _ = done_tx.send(outcome);
                if failed {
                    return;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }));
    }
    drop(done_tx);

    let mut measured = None;
    for phase in 1..=2 {
        let before = (
            sample(pid, ticks_per_second)?,
            scheduled_ns(pid),
            Instant::now(),
        );
        phase_tx
            .send(phase)
            .map_err(|_| "echo: every connection has ended".to_owned())?;
        for _ in 0..n {
            match done_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(format!("echo: {error}")),
                None => return Err("echo: every connection has ended".to_owned()),
            }
        }
        measured = Some(before);
    }
    let (before, before_sched, started) = measured.ok_or("echo: nothing measured")?;
    let secs = started.elapsed().as_secs_f64();
    let after = sample(pid, ticks_per_second)?;
    let after_sched = scheduled_ns(pid);
    let hwm_kib = peak_rss_kib(pid)?;

    let total = (n * rounds) as f64;
    let msgs_per_sec = total / secs;
    // A short run is a few clock ticks of /proc/PID/stat: prefer the nanoseconds of schedstat.
    let ticks_us_per_1k = after.cpu_us.saturating_sub(before.cpu_us) as f64 * 1000.0 / total;
    let sched_us_per_1k = match (before_sched, after_sched) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 / total,
        _ => f64::NAN,
    };
    let cpu_us_per_1k = if sched_us_per_1k.is_nan() {
        ticks_us_per_1k
    } else {
        sched_us_per_1k
    };
    let cpu_us = cpu_us_per_1k * total / 1000.0;
    drop(phase_tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    Ok(EchoFigures {
        secs,
        msgs_per_sec,
        cpu_us,
        cpu_us_per_1k,
        ticks_us_per_1k,
        hwm_kib,
        total,
    })
}

// ---------------------------------------------------------------------------------------------
// broadcast

#[derive(Debug)]
struct BroadcastOptions {
    url: String,
    subscribers: usize,
    rounds: usize,
    server_pid: u32,
    timeout: Duration,
    /// `--deflate`: offer permessage-deflate and publish a compressible text of `size` bytes.
    deflate: bool,
    size: usize,
}

impl BroadcastOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut url = None;
        let mut subscribers = 10_000;
        let mut rounds = 20;
        let mut server_pid = None;
        let mut timeout_secs = 300;
        let (mut deflate, mut size) = (false, 1024);
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--url" => url = Some(value.ok_or("--url needs a value")?),
                "--deflate" if value.is_none() => deflate = true,
                "--size" => size = number(&flag, value)?,
                "--subscribers" => subscribers = number(&flag, value)?,
                "--rounds" => rounds = number(&flag, value)?,
                "--server-pid" => server_pid = Some(number(&flag, value)?),
                "--timeout-secs" => timeout_secs = number(&flag, value)?,
                _ => return Err(format!("broadcast: unexpected argument `{flag}`")),
            }
        }
        let url = loopback_url("broadcast", url, false)?;
        if subscribers == 0 || rounds == 0 {
            return Err("broadcast: --subscribers and --rounds must be at least 1".to_owned());
        }
        Ok(Self {
            url,
            subscribers,
            rounds,
            server_pid: server_pid.ok_or("broadcast needs --server-pid")?,
            timeout: Duration::from_secs(timeout_secs),
            deflate,
            size,
        })
    }
}

fn broadcast(options: BroadcastOptions) -> Result<(), String> {
    let nofile = raise_nofile_limit();
    if (options.subscribers as u64) + 64 > nofile {
        return Err(format!(
            "broadcast: {} connections need more file descriptors than the limit of {nofile}",
            options.subscribers
        ));
    }
    let timeout = options.timeout;
    if options.deflate {
        return run_spawned("broadcast", timeout, deflate::broadcast_run(options));
    }
    run_spawned("broadcast", timeout, broadcast_run(options))
}

/// Waits for a broadcast round's end (every one of the `n` subscribers counted into `received`);
/// an error when a reader fails or the round is not done within 60 s.
async fn wait_for_round(
    rounds_done: &mut mpsc::UnboundedReceiver<Result<(), String>>,
    round: usize,
    received: &std::sync::atomic::AtomicUsize,
    n: usize,
) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(60), rounds_done.recv()).await {
        Ok(Some(Ok(()))) => Ok(()),
        Ok(Some(Err(error))) => Err(format!("broadcast: round {round}: {error}")),
        Ok(None) => Err("broadcast: every reader has ended".to_owned()),
        Err(_) => Err(format!(
            "broadcast: round {round}: {} of {n} delivered after 60 s",
            received.load(std::sync::atomic::Ordering::Acquire)
        )),
    }
}

/// One publish to every subscriber of the chat room: `subscribers` connections join the room
/// (each waits for `ready`), then, one round at a time, the first sends a short text, which the
/// chat room sends back to it and publishes to all the others. A round ends when the last
/// subscriber has it. One warm-up round, then `rounds` measured ones. Server CPU comes from the
/// nanosecond counters of `/proc/PID/task/*/schedstat` (one round is far below the 10 ms clock
/// tick of `/proc/PID/stat`).
async fn broadcast_run(options: BroadcastOptions) -> Result<(), String> {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let pid = options.server_pid;
    let url = options.url.as_str();
    let n = options.subscribers;
    // The client's own buffers do not count; keep them small so the client stays light.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let clients = open_many("broadcast", n, || async move {
        let mut ws = connect_ws(url, Some(config), true, None).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "ready" => return Ok(ws),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => return Err(format!("expected `ready`, got {other:?}")),
                Some(Err(error)) => return Err(format!("read failed: {error}")),
                None => return Err("connection ended before `ready`".to_owned()),
            }
        }
    })
    .await?;

    // Every reader counts the round's text into `received`; the one that completes the round
    // tells the coordinator.
    let received = Arc::new(AtomicUsize::new(0));
    let (round_done, mut rounds_done) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut sinks = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for ws in clients {
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let received = received.clone();
        let round_done = round_done.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Text(text))) if text.starts_with("broadcast ") => {
                        if received.fetch_add(1, Ordering::AcqRel) + 1 == n {
                            let _ = round_done.send(Ok(()));
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Ok(other)) => {
                        let _ = round_done.send(Err(format!("unexpected message {other:?}")));
                        return;
                    }
                    Some(Err(error)) => {
                        let _ = round_done.send(Err(format!("read failed: {error}")));
                        return;
                    }
                }
            }
        }));
    }
    drop(round_done);

    let mut latencies = Vec::with_capacity(options.rounds);
    let mut before = None;
    for round in 0..=options.rounds {
        if round == 1 {
            before =
                Some(scheduled_ns(pid).ok_or("broadcast: cannot read the server's schedstat")?);
        }
        received.store(0, Ordering::Release);
        let started = Instant::now();
        sinks[0]
            .send(Message::text(format!("broadcast {round}")))
            .await
            .map_err(|error| format!("broadcast: send failed: {error}"))?;
        wait_for_round(&mut rounds_done, round, &received, n).await?;
        if round >= 1 {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let after = scheduled_ns(pid).ok_or("broadcast: cannot read the server's schedstat")?;
    let before = before.ok_or("broadcast: nothing measured")?;
    let delivered = (n * options.rounds) as f64;
    let cpu_ns_per_delivered = after.saturating_sub(before) as f64 / delivered;
    latencies.sort_by(f64::total_cmp);
    let median_ms = latencies[latencies.len() / 2];
    let min_ms = latencies[0];
    let max_ms = latencies[latencies.len() - 1];
    println!(
        "{n} subscribers on {url} (server pid {pid}): {} measured publishes after 1 warm-up",
        options.rounds
    );
    println!("time to the last subscriber: {min_ms:.2} / {median_ms:.2} / {max_ms:.2} ms (min/median/max)");
    println!("server CPU per delivered:    {cpu_ns_per_delivered:>12.0} ns");
    println!(
        "RESULT subscribers={n} rounds={} cpu_ns_per_msg={cpu_ns_per_delivered:.1} \
         last_ms_median={median_ms:.3} last_ms_min={min_ms:.3} last_ms_max={max_ms:.3}",
        options.rounds
    );

    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        futures_util::stream::iter(sinks)
            .for_each_concurrent(200, |mut sink| async move {
                let _ = sink.close().await;
            })
            .await;
        for reader in readers {
            let _ = reader.await;
        }
    })
    .await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// make-cert

/// Writes a self-signed certificate for `127.0.0.1` and `localhost` and its key as `cert.pem`
/// and `key.pem` into `dir` (made if missing), for the TLS workloads.
fn make_cert(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(|error| format!("make-cert: {error}"))?;
    for (name, pem) in [
        ("cert.pem", made.cert.pem()),
        ("key.pem", made.signing_key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// streams

#[derive(Debug)]
struct StreamsOptions {
    url: String,
    streams: usize,
    per_connection: usize,
    http1: bool,
    size: usize,
    rounds: usize,
    settle: Duration,
    server_pid: u32,
    timeout: Duration,
}

impl StreamsOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut url = None;
        let mut streams = 1000;
        let mut per_connection = 125;
        let mut http1 = false;
        let mut size = 20;
        let mut rounds = 100;
        let mut settle_ms = 1000;
        let mut server_pid = None;
        let mut timeout_secs = 300;
        for (flag, value) in flags(args) {
            match flag.as_str() {
                "--url" => url = Some(value.ok_or("--url needs a value")?),
                "--streams" => streams = number(&flag, value)?,
                "--per-connection" => per_connection = number(&flag, value)?,
                "--http1" if value.is_none() => http1 = true,
                "--size" => size = number(&flag, value)?,
                "--rounds" => rounds = number(&flag, value)?,
                "--settle-ms" => settle_ms = number(&flag, value)?,
                "--server-pid" => server_pid = Some(number(&flag, value)?),
                "--timeout-secs" => timeout_secs = number(&flag, value)?,
                _ => return Err(format!("streams: unexpected argument `{flag}`")),
            }
        }
        let url = loopback_url("streams", url, false)?;
        if streams == 0 || per_connection == 0 || size == 0 || rounds == 0 {
            return Err(
                "streams: --streams, --per-connection, --size and --rounds must be at least 1"
                    .to_owned(),
            );
        }
        Ok(Self {
            url,
            streams,
            per_connection,
            http1,
            size,
            rounds,
            settle: Duration::from_millis(settle_ms),
            server_pid: server_pid.ok_or("streams needs --server-pid")?,
            timeout: Duration::from_secs(timeout_secs),
        })
    }
}

fn streams(options: StreamsOptions) -> Result<(), String> {
    raise_nofile_limit();
    let ticks_per_second = clock_ticks_per_second();
    let timeout = options.timeout;
    run_spawned("streams", timeout, streams_run(options, ticks_per_second))
}

/// N WebSockets as the streams of cleartext HTTP/2 connections (RFC 8441, prior knowledge),
/// `--per-connection` on each (default 125, under the server's cap of 128 concurrent streams),
/// or with `--http1` as N HTTP/1.1 connections: the server's resident memory and CPU per
/// WebSocket opened (each echoes one message first), then the echo rounds of `echo` on them.
async fn streams_run(options: StreamsOptions, ticks_per_second: u64) -> Result<(), String> {
    let pid = options.server_pid;
    let url = options.url.as_str();
    let n = options.streams;
    let before = sample(pid, ticks_per_second)?;
    let before_sched = scheduled_ns(pid);
    let started = Instant::now();
    let clients = if options.http1 {
        open_many("streams", n, || async move {
            probe_echo(connect_ws(url, Some(WebSocketConfig::default()), true, None).await?).await
        })
        .await?
    } else {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let base = format!("http://{authority}");
        // The server takes at most 128 concurrent streams per connection: as many connections
        // as that needs, each with `per_connection` WebSockets.
        let mut connections = Vec::new();
        for _ in 0..n.div_ceil(options.per_connection) {
            let tcp = TcpStream::connect(authority)
                .await
                .map_err(|error| format!("connect to {authority}: {error}"))?;
            tcp.set_nodelay(true)
                .map_err(|error| format!("TCP_NODELAY: {error}"))?;
            connections.push(h2_client(tcp, &base).await?);
        }
        let http_url = format!("http://{}", &url["ws://".len()..]);
        let (connections, http_url) = (&connections, http_url.as_str());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (next, per_connection) = (&next, options.per_connection);
        open_many("streams", n, || async move {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut client = connections[i / per_connection].clone();
            let (parts, recv, send) = h2_websocket(&mut client, http_url, &[]).await?;
            if parts.status != 200 {
                return Err(format!("the CONNECT got {}", parts.status));
            }
            let ws = WebSocketStream::from_raw_socket(
                Conn::H2(H2Stream::new(send, recv)),
                tokio_tungstenite::tungstenite::protocol::Role::Client,
                Some(WebSocketConfig::default()),
            )
            .await;
            probe_echo(ws).await
        })
        .await?
    };
    let opened_in = started.elapsed();
    tokio::time::sleep(options.settle).await;
    let after = sample(pid, ticks_per_second)?;
    let kib_per_stream = after.rss_kib.saturating_sub(before.rss_kib) as f64 / n as f64;
    // From schedstat's nanoseconds when it can be read, finer than the 10 ms clock ticks.
    let cpu_us_per_stream = match (before_sched, scheduled_ns(pid)) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 / 1000.0 / n as f64,
        _ => after.cpu_us.saturating_sub(before.cpu_us) as f64 / n as f64,
    };
    let connections = if options.http1 {
        n
    } else {
        n.div_ceil(options.per_connection)
    };
    let how = if options.http1 {
        "HTTP/1.1 connections".to_owned()
    } else {
        format!("streams of {connections} HTTP/2 connection(s)")
    };
    println!(
        "{n} WebSockets to {url} as {how}, open and echoed in {:.2} s (server pid {pid})",
        opened_in.as_secs_f64()
    );
    println!("server RSS per WebSocket:    {kib_per_stream:>12.2} KiB");
    println!("server CPU per WebSocket:    {cpu_us_per_stream:>12.1} µs");
    let echoed = echo_rounds(clients, options.size, options.rounds, pid, ticks_per_second).await?;
    println!("echoed per second:           {:>12.0}", echoed.msgs_per_sec);
    println!(
        "server CPU per 1,000:        {:>12.1} µs",
        echoed.cpu_us_per_1k
    );
    println!(
        "RESULT streams={n} connections={connections} http1={} kib_per_stream={kib_per_stream:.3} \
         cpu_us_per_stream={cpu_us_per_stream:.2} size={} rounds={} msgs_per_sec={:.0} \
         cpu_us_per_1k={:.2} hwm_kib={}",
        options.http1,
        options.size,
        options.rounds,
        echoed.msgs_per_sec,
        echoed.cpu_us_per_1k,
        echoed.hwm_kib
    );
    Ok(())
}
