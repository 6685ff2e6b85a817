//! `anyws-relay-bench`: what relaying pub/sub between two server instances through Redis adds,
//! measured against same-instance delivery of the very same messages as the control.
//!
//! ```text
//! anyws-relay-bench --a ws://127.0.0.1:PA/ --b ws://127.0.0.1:PB/ [--samples 2000]
//!                   [--messages 100000] [--size 30] [--timeout-secs 120]
//! ```
//!
//! Both URLs point at `anyws-fixture --app chatroom --redis URL` instances sharing one Redis
//! (`bench/relay.sh` starts them). Three clients join the room: the publisher and a local
//! subscriber on instance A, a remote subscriber on instance B. Every text the publisher sends
//! reaches the local subscriber through A's own pub/sub (the control) and the remote one through
//! Redis and B. Each message carries its sequence number; readers timestamp arrivals.
//!
//! - **Latency**: `--samples` messages one at a time (the next is sent once both subscribers
//!   have the previous one); p50/p99/max from send to arrival, for each subscriber, and the
//!   difference of the percentiles as the latency the relay adds.
//! - **Throughput**: `--messages` messages sent back to back (fed in bursts of 64, one flush
//!   each); messages per second from the first send to the last arrival at each subscriber, and
//!   how many never arrived at the remote one (delivery across instances is at most once).
//!   With `--rate N` they are sent at N per second instead (one every 1/N s, in bursts that
//!   catch up with the schedule), and the p50/p99 latency of each message under that load is
//!   printed too, for each subscriber.
//!
//! The last line starts with `RESULT` and holds the numbers as `key=value` pairs.

use futures_util::{SinkExt, StreamExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sequence numbers from here on are warm-up messages.
const WARM_UP: u64 = 1 << 62;

struct Options {
    a: String,
    b: String,
    samples: usize,
    messages: u64,
    size: usize,
    timeout: Duration,
    /// Messages per second in the throughput run; `None`: back to back.
    rate: Option<u64>,
}

const USAGE: &str = "usage: anyws-relay-bench --a ws://127.0.0.1:PA/ --b ws://127.0.0.1:PB/ \
[--samples 2000] [--messages 100000] [--size 30] [--timeout-secs 120] [--rate MSGS_PER_SEC]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            a: String::new(),
            b: String::new(),
            samples: 2000,
            messages: 100_000,
            size: 30,
            timeout: Duration::from_secs(120),
            rate: None,
        };
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag} expects a whole number, got `{v}`"))
            };
            match flag.as_str() {
                "--a" => options.a = value,
                "--b" => options.b = value,
                "--samples" => options.samples = number(&value)? as usize,
                "--messages" => options.messages = number(&value)?,
                "--rate" => options.rate = Some(number(&value)?.max(1)),
                "--size" => options.size = number(&value)? as usize,
                "--timeout-secs" => options.timeout = Duration::from_secs(number(&value)?),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if options.a.is_empty() || options.b.is_empty() {
            return Err("--a and --b are required".to_owned());
        }
        if options.size < 20 {
            return Err("--size must be at least 20 bytes (the sequence number)".to_owned());
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("anyws-relay-bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("anyws-relay-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = options.timeout;
    match runtime.block_on(async { tokio::time::timeout(timeout, run(options)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("anyws-relay-bench: {message}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("anyws-relay-bench: did not finish within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the chat room at `url` and waits for `ready`.
async fn join(url: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str() == "ready" => Ok(ws),
        other => Err(format!("{url}: expected `ready`, got {other:?}")),
    }
}

/// Reads `ws` and sends the sequence number and arrival time of every text to `arrivals`.
fn read_arrivals(mut ws: Ws, arrivals: mpsc::UnboundedSender<(u64, Instant)>) {
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let now = Instant::now();
            if let Message::Text(text) = message {
                if let Some(seq) = text.get(..20).and_then(|s| s.trim().parse().ok()) {
                    if arrivals.send((seq, now)).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn text(seq: u64, size: usize) -> Message {
    let mut text = format!("{seq:>20}");
    text.extend(std::iter::repeat_n('.', size - 20));
    Message::text(text)
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;

async fn send(sink: &mut Sink, seq: u64, size: usize) -> Result<(), String> {
    sink.send(text(seq, size))
        .await
        .map_err(|e| format!("publish: {e}"))
}

/// Waits for the arrival of `seq`, skipping the others.
async fn arrival(
    arrivals: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    seq: u64,
) -> Result<Instant, String> {
    while let Some((got, at)) = arrivals.recv().await {
        if got == seq {
            return Ok(at);
        }
    }
    Err("a subscriber's connection ended".to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn run(options: Options) -> Result<(), String> {
    let local = join(&options.a).await?;
    let remote = join(&options.b).await?;
    let publisher = join(&options.a).await?;
    let (mut sink, mut echoes) = publisher.split();
    // The publisher's own echoes are read and dropped, so they never hold it back.
    tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    let (local_tx, mut local_rx) = mpsc::unbounded_channel();
    let (remote_tx, mut remote_rx) = mpsc::unbounded_channel();
    read_arrivals(local, local_tx);
    read_arrivals(remote, remote_tx);
    let size = options.size;
    // Warm-up: until a relay arrives (the publishing connection to Redis opens lazily), then
    // 200 more round trips.
    let started = Instant::now();
    let mut warm = WARM_UP;
    loop {
        send(&mut sink, warm, size).await?;
        arrival(&mut local_rx, warm).await?;
        match tokio::time::timeout(Duration::from_millis(200), arrival(&mut remote_rx, warm)).await
        {
            Ok(result) => {
                result?;
                break;
            }
            Err(_) if started.elapsed() < Duration::from_secs(10) => warm += 1,
            Err(_) => return Err("no relay arrived within 10 s: is Redis up?".to_owned()),
        }
    }
    for _ in 0..200 {
        warm += 1;
        send(&mut sink, warm, size).await?;
        arrival(&mut local_rx, warm).await?;
        arrival(&mut remote_rx, warm).await?;
    }

    // Latency, one message at a time.
    let mut local_latency = Vec::with_capacity(options.samples);
    let mut remote_latency = Vec::with_capacity(options.samples);
    for seq in 0..options.samples as u64 {
        let sent = Instant::now();
        send(&mut sink, seq, size).await?;
        local_latency.push(arrival(&mut local_rx, seq).await? - sent);
        remote_latency.push(arrival(&mut remote_rx, seq).await? - sent);
    }
    local_latency.sort();
    remote_latency.sort();

    // Throughput, back to back.
    let first = options.samples as u64;
    let end = first + options.messages;
    let started = Instant::now();
    let sent_at = std::sync::Mutex::new(vec![started; options.messages as usize]);
    let sender = async {
        let mut seq = first;
        while seq < end {
            let mut burst_end = (seq + 64).min(end);
            if let Some(rate) = options.rate {
                // Send what the schedule asks for by now, at least one.
                let due = first + (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if due <= seq {
                    let next =
                        started + Duration::from_secs_f64((seq - first) as f64 / rate as f64);
                    tokio::time::sleep_until(next.into()).await;
                }
                let due = first + (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
                burst_end = due.clamp(seq + 1, end).min(seq + 64);
                let now = Instant::now();
                let mut times = sent_at.lock().unwrap_or_else(|e| e.into_inner());
                for s in seq..burst_end {
                    times[(s - first) as usize] = now;
                }
            }
            for s in seq..burst_end {
                sink.feed(text(s, options.size))
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
            }
            sink.flush().await.map_err(|e| format!("publish: {e}"))?;
            seq = burst_end;
        }
        Ok::<_, String>(Instant::now())
    };
    let count = |mut rx: mpsc::UnboundedReceiver<(u64, Instant)>, quiet: Duration| async move {
        let mut got = 0u64;
        let mut last = None;
        let mut arrivals = Vec::new();
        loop {
            match tokio::time::timeout(quiet, rx.recv()).await {
                Ok(Some((seq, at))) if (first..end).contains(&seq) => {
                    got += 1;
                    last = Some(at);
                    arrivals.push((seq, at));
                    if got == end - first {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (got, last, arrivals)
    };
    let quiet = Duration::from_secs(5);
    let (
        sent_by,
        (local_got, local_last, local_arrivals),
        (remote_got, remote_last, remote_arrivals),
    ) = tokio::join!(sender, count(local_rx, quiet), count(remote_rx, quiet));
    let sent_by = sent_by?;
    if let Some(rate) = options.rate {
        let times = sent_at.lock().unwrap_or_else(|e| e.into_inner());
        let under_load = |arrivals: &[(u64, Instant)]| {
            let mut latency: Vec<Duration> = arrivals
                .iter()
                .map(|(seq, at)| *at - times[(seq - first) as usize])
                .collect();
            latency.sort();
            latency
        };
        let local = under_load(&local_arrivals);
        let remote = under_load(&remote_arrivals);
        let p = |v: &[Duration], q| micros(percentile(v, q));
        println!(
            "at {rate} msgs/s: same instance p50 {:.0} µs p99 {:.0} µs; other instance p50 {:.0} µs \
             p99 {:.0} µs",
            p(&local, 50.0),
            p(&local, 99.0),
            p(&remote, 50.0),
            p(&remote, 99.0)
        );
        println!(
            "RATE rate={rate} local_p50_us={:.0} local_p99_us={:.0} remote_p50_us={:.0} \
             remote_p99_us={:.0}",
            p(&local, 50.0),
            p(&local, 99.0),
            p(&remote, 50.0),
            p(&remote, 99.0)
        );
    }
    let rate = |got: u64, last: Option<Instant>| {
        last.map_or(0.0, |last| got as f64 / (last - started).as_secs_f64())
    };
    let local_rate = rate(local_got, local_last);
    let remote_rate = rate(remote_got, remote_last);
    let send_rate = options.messages as f64 / (sent_by - started).as_secs_f64();

    let p = |v: &[Duration], q| micros(percentile(v, q));
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "delivery", "p50 µs", "p99 µs", "max µs", "msgs/s", "lost"
    );
    for (name, latency, rate, got) in [
        (
            "same instance (control)",
            &local_latency,
            local_rate,
            local_got,
        ),
        (
            "other instance, through Redis",
            &remote_latency,
            remote_rate,
            remote_got,
        ),
    ] {
        println!(
            "{name:<34} {:>10.0} {:>10.0} {:>10.0} {:>12.0} {:>10}",
            p(latency, 50.0),
            p(latency, 99.0),
            p(latency, 100.0),
            rate,
            options.messages - got
        );
    }
    let added50 = p(&remote_latency, 50.0) - p(&local_latency, 50.0);
    let added99 = p(&remote_latency, 99.0) - p(&local_latency, 99.0);
    println!(
        "added by the relay: p50 {added50:+.0} µs, p99 {added99:+.0} µs; relay throughput \
         {:.2}x the control; publisher sent at {send_rate:.0} msgs/s",
        remote_rate / local_rate.max(f64::MIN_POSITIVE)
    );
    println!(
        "RESULT local_p50_us={:.0} local_p99_us={:.0} remote_p50_us={:.0} remote_p99_us={:.0} \
         added_p50_us={added50:.0} added_p99_us={added99:.0} local_msgs_per_sec={local_rate:.0} \
         remote_msgs_per_sec={remote_rate:.0} send_msgs_per_sec={send_rate:.0} \
         remote_lost={} samples={} messages={} size={}",
        p(&local_latency, 50.0),
        p(&local_latency, 99.0),
        p(&remote_latency, 50.0),
        p(&remote_latency, 99.0),
        options.messages - remote_got,
        options.samples,
        options.messages,
        options.size
    );
    if local_got != options.messages {
        return Err(format!(
            "only {local_got} of {} messages reached the local subscriber",
            options.messages
        ));
    }
    Ok(())
}
