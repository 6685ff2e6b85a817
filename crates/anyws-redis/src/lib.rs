//! Scale-out for anyws: a [`Backplane`] that relays pub/sub between server instances through
//! a Redis server, so that several processes behind a load balancer behave as one server for
//! [`Peer::publish`](anyws_core::Peer::publish) and
//! [`Server::publish`](anyws_core::Server::publish).
//!
//! ```no_run
//! use anyws_core::{async_trait, Hooks, Message, Peer, ServerBuilder};
//! use anyws_redis::RedisBackplane;
//!
//! /// A chat room that spans every instance connected to the same Redis.
//! struct Chat;
//!
//! #[async_trait]
//! impl Hooks for Chat {
//!     async fn open(&self, peer: &Peer) {
//!         peer.subscribe("room");
//!     }
//!
//!     async fn message(&self, peer: &Peer, message: Message) {
//!         peer.publish("room", message);
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = ServerBuilder::new(Chat)
//!         .backplane(RedisBackplane::new("redis://127.0.0.1:6379")?)
//!         .on_backplane_error(|error| eprintln!("relay: {error}"))
//!         .build(anyws_tokio::runtime());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     anyws_tokio::serve(listener, server).await?;
//!     Ok(())
//! }
//! ```
//!
//! With the `anyws` crate, turn on its `redis` feature and use `anyws::redis::RedisBackplane`.
//!
//! # How it works
//!
//! Every instance publishes its relays to one Redis channel (`anyws` unless
//! [`RedisBackplane::channel`] says otherwise) and subscribes to it. Each relay is one
//! [`envelope`]: a compact binary record of the origin instance, the namespace (or "every
//! namespace"), the topic, whether the message is text or binary, and the payload. An instance
//! delivers what it receives to its own subscribers only, and ignores its own relays when they
//! come back. Instances that should not share pub/sub use different channels (or Redis
//! databases, which do not separate pub/sub: use channels).
//!
//! Two connections per instance: a multiplexed one that sends relays, several at once in one
//! pipeline, and a pub/sub one that receives them and is pinged every
//! [`health_check_interval`](RedisBackplane::health_check_interval) so that a connection that
//! died silently is noticed.
//!
//! # Delivery semantics
//!
//! - **At most once.** A relay that cannot be sent (Redis unreachable, a full queue, an
//!   envelope that fails to encode) is dropped and reported to the server's backplane error
//!   callback ([`ServerBuilder::on_backplane_error`](anyws_core::ServerBuilder::on_backplane_error));
//!   nothing is retried, so nothing is delivered twice.
//! - **Order.** The relays of one instance reach each other instance in the order they were
//!   published (one connection, one pipeline, one channel). There is no order between the
//!   publishes of different instances, nor between a local delivery and a relay.
//! - **While Redis is down.** Local pub/sub goes on as before: local delivery never waits for
//!   Redis. Relays published meanwhile are dropped (one error per outage, not one per relay).
//!   Both connections reconnect by themselves with a backoff from
//!   [`min_reconnect_delay`](RedisBackplane::min_reconnect_delay) (50 ms) doubling up to
//!   [`max_reconnect_delay`](RedisBackplane::max_reconnect_delay) (1 s), and resubscribe, so
//!   relaying resumes within about a second of Redis answering again. Relays published on
//!   another instance while this one was reconnecting are lost to it.
//! - **A slow instance.** Redis closes a subscriber whose unread output passes its
//!   `client-output-buffer-limit pubsub` (32 MiB by default); the driver reconnects, and the
//!   relays in between are lost to that instance.
//! - **Errors** never reach `publish`; they go to the error callback.
//!
//! # Runtimes
//!
//! The driver runs in a task on the server's runtime and uses its timers. The Redis
//! connections use tokio's reactor when that task runs inside a tokio runtime and the `tokio`
//! feature is on (the `anyws` facade turns it on with its `tokio`, `axum` and `actix`
//! features), and async-io otherwise, which is the reactor of smol and async-std and works
//! under any runtime. So the same backplane works on anyws-tokio, anyws-smol, anyws-async-std,
//! axum and actix.
//!
//! # Limits and defaults
//!
//! - The relay queue of each server: [`Limits::max_backplane_queue_bytes`], 16 MiB.
//! - Relays sent in one pipeline: at most 256 relays or 1 MiB of envelopes.
//! - Namespaces and topics: at most [`envelope::MAX_NAME_LEN`] (65,535) bytes each.
//! - [`connect_timeout`](RedisBackplane::connect_timeout) 2 s,
//!   [`response_timeout`](RedisBackplane::response_timeout) 2 s,
//!   [`health_check_interval`](RedisBackplane::health_check_interval) 1 s.
//!
//! # Cancel safety
//!
//! Nothing here is called by users after building the server. At shutdown the driver sends the
//! relays still queued, closes its connections and returns; see
//! [`Server::shutdown`](anyws_core::Server::shutdown).
//!
//! [`Limits::max_backplane_queue_bytes`]: anyws_core::Limits::max_backplane_queue_bytes
#![deny(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod envelope;

use anyws_core::{async_trait, Backplane, BackplaneError, BackplaneLink};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::AsyncConnectionConfig;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

pub use redis;

/// Relays in one pipeline, at most.
const BATCH_RELAYS: usize = 256;
/// Envelope bytes in one pipeline, at most (one relay larger than this still goes alone).
const BATCH_BYTES: usize = 1 << 20;

/// A Redis URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
}

/// The Redis [`Backplane`]; give it to
/// [`ServerBuilder::backplane`](anyws_core::ServerBuilder::backplane).
///
/// Building one does not connect: the server's backplane task does, and keeps reconnecting
/// for as long as the server runs.
#[derive(Clone)]
pub struct RedisBackplane {
    client: redis::Client,
    channel: String,
    routing: Routing,
    min_reconnect_delay: Duration,
    max_reconnect_delay: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    health_check_interval: Duration,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("addr", &self.client.get_connection_info().addr())
            .field("channel", &self.channel)
            .field("routing", &self.routing)
            .field("min_reconnect_delay", &self.min_reconnect_delay)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .finish()
    }
}

impl RedisBackplane {
    /// A backplane through the Redis server at `url`, such as `redis://127.0.0.1:6379` or
    /// `redis://user:password@host:6379/0`. Fails only when the URL cannot be parsed.
    pub fn new(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(Error::Url)?;
        Ok(Self::from_client(client))
    }

    /// A backplane through an already configured client.
    pub fn from_client(client: redis::Client) -> Self {
        Self {
            client,
            channel: "anyws".to_owned(),
            routing: Routing::default(),
            min_reconnect_delay: Duration::from_millis(50),
            max_reconnect_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(1),
        }
    }

    /// The Redis channel the instances share, or with [`Routing::Interest`] the prefix of the
    /// channels of each topic (`<channel>:t:<topic>`). Default: `anyws`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// How relays find the instances that deliver them. Default: [`Routing::Interest`]. Every
    /// instance on the same channel must use the same routing.
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// The first wait before reconnecting; each failed attempt doubles it up to
    /// [`max_reconnect_delay`](Self::max_reconnect_delay). Default: 50 ms.
    pub fn min_reconnect_delay(mut self, delay: Duration) -> Self {
        self.min_reconnect_delay = delay;
        self
    }

    /// The longest wait between two attempts to reconnect, and so about the longest relaying
    /// stays off after Redis is back. Default: 1 s.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// How long one attempt to connect (and subscribe) may take. Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer a pipeline of relays or a health-check ping before
    /// the connection counts as lost. Default: 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How often the pub/sub connection is pinged; it counts as lost when a ping gets no
    /// answer within [`response_timeout`](Self::response_timeout). Default: 1 s.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }
}

/// How relays find the instances that deliver them; see [`RedisBackplane::routing`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routing {
    /// One Redis channel per topic (`<channel>:t:<topic>`): an instance subscribes to a topic's
    /// channel only while one of its peers (in any namespace) is subscribed to the topic, so a
    /// relay reaches only the instances that deliver it, and the work of each instance follows
    /// its own rooms, not the whole cluster's publishes.
    #[default]
    Interest,
    /// One Redis channel for every relay: each instance receives every publish of every other
    /// instance, whether it has subscribers to the topic or not. Fewer subscriptions, and the
    /// behaviour of earlier versions.
    OneChannel,
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn run(&self, link: BackplaneLink) {
        let send = self.send(&link);
        let receive = self.receive(&link);
        futures_util::future::join(send, receive).await;
        link.set_connected(false);
    }

    fn routes_by_interest(&self) -> bool {
        self.routing == Routing::Interest
    }
}

/// Writes the Redis channel of `topic` under `prefix` (`<prefix>:t:<topic>`) into `out`.
pub(crate) fn topic_channel(prefix: &str, topic: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(b":t:");
    out.extend_from_slice(topic.as_bytes());
}

/// The control channel under `prefix` (`<prefix>:control`), which every interest-routed
/// instance subscribes to; it carries no relays.
pub(crate) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// The channel of the control messages addressed to `instance` under `prefix`
/// (`<prefix>:i:<instance>`), which that instance subscribes to.
pub(crate) fn instance_channel(prefix: &str, instance: anyws_core::InstanceId) -> String {
    format!("{prefix}:i:{instance}")
}

/// What a driver sends: a relay, or a control message of the core's.
pub(crate) enum Outbound {
    Relay(anyws_core::Relay),
    Control(anyws_core::Control),
}

/// The next relay or control message (control first); `None` once the server shuts down.
pub(crate) async fn next_outbound(link: &BackplaneLink) -> Option<Outbound> {
    let mut relay = pin!(link.next_relay());
    let mut control = pin!(link.next_control());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(Some(control)) = control.as_mut().poll(cx) {
            return Poll::Ready(Some(Outbound::Control(control)));
        }
        relay
            .as_mut()
            .poll(cx)
            .map(|relay| relay.map(Outbound::Relay))
    })
    .await
}

/// The next relay or control message if one is queued, without waiting.
pub(crate) fn try_next_outbound(link: &BackplaneLink) -> Option<Outbound> {
    link.try_next_control()
        .map(Outbound::Control)
        .or_else(|| link.try_next_relay().map(Outbound::Relay))
}

/// Whether `channel` is one of the control channels (`control`, or this instance's `own`).
fn is_control_channel(channel: &str, control: &str, own: &str) -> bool {
    channel == control || channel == own
}

/// Channels subscribed to or unsubscribed from in one command, at most.
const SUBSCRIBE_CHUNK: usize = 512;

/// The wait before the next attempt: doubles from `min` up to `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max).max(self.min);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How a wait with a deadline ended.
enum Waited<T> {
    Done(T),
    TimedOut,
    Closed,
}

/// Runs `future` until it finishes, `timeout` passes, or the server shuts down.
async fn bounded<F: Future>(
    link: &BackplaneLink,
    timeout: Duration,
    future: F,
) -> Waited<F::Output> {
    let runtime = link.runtime();
    let mut timer = runtime.new_timer(runtime.now() + timeout);
    let mut future = pin!(future);
    let mut closed = pin!(link.closed());
    std::future::poll_fn(|cx| {
        if closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Waited::Closed);
        }
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Waited::Done(output));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Waited::TimedOut);
        }
        Poll::Pending
    })
    .await
}

fn timed_out(what: &str, timeout: Duration) -> BackplaneError {
    BackplaneError::link(format!("Redis: {what} timed out after {timeout:?}"))
}

fn redis_error(what: &str, error: redis::RedisError) -> BackplaneError {
    BackplaneError::link(format!("Redis: {what}: {error}"))
}

impl RedisBackplane {
    /// Sends this instance's relays, several at once in one pipeline. While Redis is
    /// unreachable, relays are dropped and reconnecting waits for the backoff.
    async fn send(&self, link: &BackplaneLink) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let mut connection: Option<MultiplexedConnection> = None;
        let mut backoff = Backoff::new(self.min_reconnect_delay, self.max_reconnect_delay);
        let mut retry_at: Option<Instant> = None;
        // One report per outage: set again once a connection works.
        let mut report_failure = true;
        let mut pipeline = redis::Pipeline::with_capacity(BATCH_RELAYS);
        let mut envelope = Vec::new();
        let mut channel = Vec::new();
        while let Some(first) = next_outbound(link).await {
            // Take what else is queued, so that one round trip carries many relays.
            pipeline.clear();
            let mut bytes = 0;
            let mut next = Some(first);
            let mut count = 0;
            while let Some(outbound) = next.take() {
                envelope.clear();
                let relay = match outbound {
                    Outbound::Relay(relay) => relay,
                    Outbound::Control(control) => {
                        envelope::encode_control(&control, &mut envelope);
                        let channel = match control.to {
                            Some(to) => instance_channel(&self.channel, to),
                            None => control_channel(&self.channel),
                        };
                        pipeline
                            .cmd("PUBLISH")
                            .arg(channel)
                            .arg(&envelope[..])
                            .ignore();
                        bytes += envelope.len();
                        count += 1;
                        if count < BATCH_RELAYS && bytes < BATCH_BYTES {
                            next = try_next_outbound(link);
                        }
                        continue;
                    }
                };
                match envelope::encode(&relay, &mut envelope) {
                    Ok(()) => {
                        match self.routing {
                            Routing::Interest => {
                                topic_channel(&self.channel, &relay.topic, &mut channel)
                            }
                            Routing::OneChannel => {
                                channel.clear();
                                channel.extend_from_slice(self.channel.as_bytes());
                            }
                        }
                        pipeline
                            .cmd("PUBLISH")
                            .arg(&channel[..])
                            .arg(&envelope[..])
                            .ignore();
                        bytes += envelope.len();
                        count += 1;
                    }
                    Err(error) => link.report(BackplaneError::link(format!(
                        "a publish to `{}` was not relayed: {error}",
                        relay.topic
                    ))),
                }
                if count < BATCH_RELAYS && bytes < BATCH_BYTES {
                    next = try_next_outbound(link);
                }
            }
            if count == 0 {
                continue;
            }
            if connection.is_none() {
                if retry_at.is_some_and(|at| link.runtime().now() < at) {
                    // Still waiting to reconnect: at most once, so these are dropped.
                    continue;
                }
                let connecting = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                let error = match bounded(link, self.connect_timeout, connecting).await {
                    Waited::Closed => return,
                    Waited::Done(Ok(connected)) => {
                        connection = Some(connected);
                        retry_at = None;
                        backoff.reset();
                        report_failure = true;
                        None
                    }
                    Waited::Done(Err(error)) => Some(redis_error("connect to publish", error)),
                    Waited::TimedOut => {
                        Some(timed_out("connecting to publish", self.connect_timeout))
                    }
                };
                if let Some(error) = error {
                    if std::mem::take(&mut report_failure) {
                        link.report(error);
                    }
                    retry_at = Some(link.runtime().now() + backoff.next());
                    continue;
                }
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            let sent = pipeline.query_async::<()>(conn);
            let error = match bounded(link, self.response_timeout, sent).await {
                Waited::Done(Ok(())) | Waited::Closed => None,
                Waited::Done(Err(error)) => Some(redis_error("publish", error)),
                Waited::TimedOut => Some(timed_out("publishing", self.response_timeout)),
            };
            if let Some(error) = error {
                // The relays of this pipeline may or may not have gone out; none is resent.
                connection = None;
                if std::mem::take(&mut report_failure) {
                    link.report(error);
                }
            }
        }
    }

    /// Receives the other instances' relays, reconnecting and resubscribing whenever the
    /// connection is lost.
    async fn receive(&self, link: &BackplaneLink) {
        let mut backoff = Backoff::new(self.min_reconnect_delay, self.max_reconnect_delay);
        let mut report_failure = true;
        loop {
            let subscribing = async {
                let mut pubsub: PubSub = self.client.get_async_pubsub().await?;
                let snapshot = link.interest_snapshot();
                pubsub.subscribe(control_channel(&self.channel)).await?;
                let own = instance_channel(&self.channel, link.instance_id());
                pubsub.subscribe(own).await?;
                match self.routing {
                    Routing::OneChannel => pubsub.subscribe(&self.channel).await?,
                    Routing::Interest => {
                        for chunk in snapshot.subscribe.chunks(SUBSCRIBE_CHUNK) {
                            pubsub.subscribe(self.channels(chunk)).await?;
                        }
                    }
                }
                link.interest_applied(snapshot.version);
                Ok::<_, redis::RedisError>(pubsub)
            };
            let error = match bounded(link, self.connect_timeout, subscribing).await {
                Waited::Closed => return,
                Waited::TimedOut => timed_out("subscribing", self.connect_timeout),
                Waited::Done(Err(error)) => redis_error("subscribe", error),
                Waited::Done(Ok(pubsub)) => {
                    backoff.reset();
                    report_failure = true;
                    link.set_connected(true);
                    let lost = self.relay_incoming(link, pubsub).await;
                    link.set_connected(false);
                    match lost {
                        None => return,
                        Some(error) => error,
                    }
                }
            };
            if std::mem::take(&mut report_failure) {
                link.report(error);
            }
            if !link.sleep(backoff.next()).await {
                return;
            }
        }
    }

    /// The Redis channels of `topics`.
    fn channels(&self, topics: &[std::sync::Arc<str>]) -> Vec<Vec<u8>> {
        topics
            .iter()
            .map(|topic| {
                let mut channel = Vec::new();
                topic_channel(&self.channel, topic, &mut channel);
                channel
            })
            .collect()
    }

    /// Delivers what arrives on `pubsub` until the connection is lost (the error) or the
    /// server shuts down (`None`). Pings every `health_check_interval`. With
    /// [`Routing::Interest`], follows this instance's interest, one batch of changes at a time.
    async fn relay_incoming(&self, link: &BackplaneLink, pubsub: PubSub) -> Option<BackplaneError> {
        let (sink, mut stream) = pubsub.split();
        let runtime = link.runtime();
        let mut timer = runtime.new_timer(runtime.now() + self.health_check_interval);
        let mut closed = pin!(link.closed());
        type Ping = std::pin::Pin<Box<dyn Future<Output = redis::RedisResult<()>> + Send>>;
        let mut ping: Option<Ping> = None;
        type Change = std::pin::Pin<
            Box<dyn Future<Output = (anyws_core::InterestVersion, redis::RedisResult<()>)> + Send>,
        >;
        let mut change: Option<Change> = None;
        let mut interest_changed: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> =
            None;
        let by_interest = self.routing == Routing::Interest;
        let control = control_channel(&self.channel);
        let own = instance_channel(&self.channel, link.instance_id());
        enum Event {
            Closed,
            Message(Option<redis::Msg>),
            Ping(redis::RedisResult<()>),
            Tick,
            InterestChanged,
            Changed(anyws_core::InterestVersion, redis::RedisResult<()>),
        }
        loop {
            let event = std::future::poll_fn(|cx| {
                if closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Closed);
                }
                if let Poll::Ready(message) = stream.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Message(message));
                }
                if let Some(pending) = ping.as_mut() {
                    if let Poll::Ready(result) = pending.as_mut().poll(cx) {
                        ping = None;
                        return Poll::Ready(Event::Ping(result));
                    }
                }
                if let Some(pending) = change.as_mut() {
                    if let Poll::Ready((version, result)) = pending.as_mut().poll(cx) {
                        change = None;
                        return Poll::Ready(Event::Changed(version, result));
                    }
                } else if by_interest {
                    // One batch at a time: the next waits until this one is confirmed.
                    let waiting =
                        interest_changed.get_or_insert_with(|| Box::pin(link.interest_changed()));
                    if waiting.as_mut().poll(cx).is_ready() {
                        interest_changed = None;
                        return Poll::Ready(Event::InterestChanged);
                    }
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Tick);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Closed => return None,
                Event::InterestChanged => {
                    let changes = link.take_interest_changes();
                    let subscribe = self.channels(&changes.subscribe);
                    let unsubscribe = self.channels(&changes.unsubscribe);
                    let mut sink = sink.clone();
                    change = Some(Box::pin(async move {
                        let result = async {
                            for chunk in unsubscribe.chunks(SUBSCRIBE_CHUNK) {
                                sink.unsubscribe(chunk).await?;
                            }
                            for chunk in subscribe.chunks(SUBSCRIBE_CHUNK) {
                                sink.subscribe(chunk).await?;
                            }
                            Ok(())
                        }
                        .await;
                        (changes.version, result)
                    }));
                }
                Event::Changed(version, Ok(())) => link.interest_applied(version),
                Event::Changed(_, Err(error)) => {
                    return Some(redis_error("subscribe", error));
                }
                Event::Message(None) => {
                    return Some(BackplaneError::link(
                        "Redis: the pub/sub connection was lost; reconnecting",
                    ))
                }
                Event::Message(Some(message))
                    if is_control_channel(message.get_channel_name(), &control, &own) =>
                {
                    match envelope::decode_control(message.get_payload_bytes()) {
                        Ok(control) => link.deliver_control(control),
                        Err(error) => link.report(BackplaneError::Malformed(format!(
                            "{error} (a control message on Redis channel `{}`)",
                            message.get_channel_name()
                        ))),
                    }
                }
                Event::Message(Some(message)) => {
                    match envelope::decode(message.get_payload_bytes()) {
                        Ok(relay) => link.deliver(relay),
                        Err(error) => link.report(BackplaneError::Malformed(format!(
                            "{error} (on Redis channel `{}`)",
                            message.get_channel_name()
                        ))),
                    }
                }
                Event::Ping(Ok(())) => {
                    timer
                        .as_mut()
                        .reset(runtime.now() + self.health_check_interval);
                }
                Event::Ping(Err(error)) => return Some(redis_error("health-check ping", error)),
                Event::Tick => {
                    if ping.is_some() {
                        return Some(timed_out("health-check ping", self.response_timeout));
                    }
                    let mut sink = sink.clone();
                    ping = Some(Box::pin(async move {
                        sink.ping::<redis::Value>().await.map(drop)
                    }));
                    timer.as_mut().reset(runtime.now() + self.response_timeout);
                }
            }
        }
    }
}
