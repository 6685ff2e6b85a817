//! Scale-out through a Redis Cluster: [`RedisClusterBackplane`] relays through sharded pub/sub
//! (`SPUBLISH` and `SSUBSCRIBE`, Redis 7 and later), so the relays of each topic go through the
//! node that owns its channel's slot, and the pub/sub load is spread over the cluster instead of
//! being copied to every node as classic `PUBLISH` is.
//!
//! ```no_run
//! use anyws_core::{Hooks, ServerBuilder};
//! use anyws_redis::cluster::RedisClusterBackplane;
//!
//! struct App;
//! impl Hooks for App {}
//!
//! # fn main() -> Result<(), anyws_redis::Error> {
//! let backplane = RedisClusterBackplane::new([
//!     "redis://10.0.0.1:6379",
//!     "redis://10.0.0.2:6379",
//!     "redis://10.0.0.3:6379",
//! ])?;
//! # let runtime: std::sync::Arc<dyn anyws_core::Runtime> = unimplemented!();
//! let server = ServerBuilder::new(App).backplane(backplane).build(runtime);
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! Routing is always by interest (as [`Routing::Interest`](crate::Routing::Interest)): each topic
//! has its own sharded channel, `<channel>:t:<topic>`, and an instance subscribes to it only
//! while one of its peers is subscribed to the topic. The envelope is the same as with one
//! Redis server ([`envelope`]).
//!
//! One cluster connection per instance (RESP3, one multiplexed connection per node) sends the
//! relays and holds the subscriptions. The `redis` crate follows the cluster's topology: after a
//! `MOVED` answer or a lost node it reloads the slot map, reconnects, and subscribes each
//! channel again on the node that now owns its slot.
//!
//! # Delivery semantics
//!
//! As with one Redis server: at most once, errors to the backplane error callback, local
//! delivery first and independent of Redis. In addition:
//!
//! - **Order.** The relays of one instance for one topic reach each other instance in publish
//!   order while the slot stays on one node; a failover or a slot move may lose relays in flight
//!   but does not reorder the ones delivered.
//! - **A slot that is down** (its master lost and no replica promoted yet) stops only the topics
//!   whose channels hash to it: their relays are dropped and reported, and the subscriptions to
//!   them are tried again every [`retry_interval`](RedisClusterBackplane::retry_interval) until
//!   the slot is served again. Every other topic goes on. Run the cluster with
//!   `cluster-require-full-coverage no` so that the other nodes keep serving while a slot is
//!   down.
//!
//! # Runtimes
//!
//! As [`RedisBackplane`](crate::RedisBackplane): tokio's reactor inside a tokio runtime with the
//! `tokio` feature, async-io otherwise (smol, async-std and any other runtime).
//!
//! # Limits and defaults
//!
//! - Relays in flight to the cluster at once: at most 4,096; more wait in the server's queue
//!   ([`Limits::max_backplane_queue_bytes`](anyws_core::Limits::max_backplane_queue_bytes)).
//! - [`connect_timeout`](RedisClusterBackplane::connect_timeout) 2 s,
//!   [`response_timeout`](RedisClusterBackplane::response_timeout) 2 s,
//!   [`retry_interval`](RedisClusterBackplane::retry_interval) 1 s, reconnect backoff
//!   50 ms to 1 s.

use crate::{bounded, instance_channel, next_outbound, Outbound, Waited};
use crate::{control_channel, envelope, redis_error, timed_out, topic_channel, Backoff};
use anyws_core::{async_trait, Backplane, BackplaneError, BackplaneLink, InterestVersion};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, IntoConnectionInfo, PushInfo, PushKind, Value};
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Relays in flight to the cluster at once, at most.
const IN_FLIGHT: usize = 4096;

/// The Redis Cluster [`Backplane`]; give it to
/// [`ServerBuilder::backplane`](anyws_core::ServerBuilder::backplane). See the
/// [module docs](self).
///
/// Building one does not connect: the server's backplane task does, and keeps trying for as
/// long as the server runs.
#[derive(Clone)]
pub struct RedisClusterBackplane {
    nodes: Vec<ConnectionInfo>,
    channel: String,
    min_reconnect_delay: Duration,
    max_reconnect_delay: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    retry_interval: Duration,
}

impl fmt::Debug for RedisClusterBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        f.debug_struct("RedisClusterBackplane")
            .field("nodes", &nodes)
            .field("channel", &self.channel)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retry_interval", &self.retry_interval)
            .finish_non_exhaustive()
    }
}

impl RedisClusterBackplane {
    /// A backplane through the Redis Cluster that `urls` lead to: one or more of its nodes, such
    /// as `redis://10.0.0.1:6379`; the others are found from them. Fails only when a URL cannot
    /// be parsed, or when there is none.
    pub fn new<I>(urls: I) -> Result<Self, crate::Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes = urls
            .into_iter()
            .map(|url| url.as_ref().into_connection_info())
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::Error::Url)?;
        if nodes.is_empty() {
            return Err(crate::Error::Url(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster needs at least one node URL",
            ))));
        }
        Ok(Self {
            nodes,
            channel: "anyws".to_owned(),
            min_reconnect_delay: Duration::from_millis(50),
            max_reconnect_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
        })
    }

    /// The prefix of the sharded channels (`<channel>:t:<topic>`). Default: `anyws`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// How long connecting to the cluster may take, and connecting to one node. Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a node may take to answer a relay or a subscription. Default: 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How often subscriptions that failed (their slot was down) are tried again. Default: 1 s.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    fn client(
        &self,
        pushes: futures_channel::mpsc::UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        ClusterClientBuilder::new(self.nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
    }

    /// Connects, retrying with a backoff until it works or the server shuts down.
    async fn connect(
        &self,
        link: &BackplaneLink,
    ) -> Option<(
        ClusterConnection,
        futures_channel::mpsc::UnboundedReceiver<PushInfo>,
    )> {
        let mut backoff = Backoff::new(self.min_reconnect_delay, self.max_reconnect_delay);
        let mut report_failure = true;
        loop {
            let (sender, receiver) = futures_channel::mpsc::unbounded();
            let error = match self.client(sender) {
                Err(error) => redis_error("cluster client", error),
                Ok(client) => {
                    let connecting = client.get_async_connection();
                    match bounded(link, self.connect_timeout * 2, connecting).await {
                        Waited::Closed => return None,
                        Waited::Done(Ok(connection)) => return Some((connection, receiver)),
                        Waited::Done(Err(error)) => redis_error("connect to the cluster", error),
                        Waited::TimedOut => {
                            timed_out("connecting to the cluster", self.connect_timeout * 2)
                        }
                    }
                }
            };
            if std::mem::take(&mut report_failure) {
                link.report(error);
            }
            if !link.sleep(backoff.next()).await {
                return None;
            }
        }
    }
}

#[async_trait]
impl Backplane for RedisClusterBackplane {
    async fn run(&self, link: BackplaneLink) {
        let Some((connection, pushes)) = self.connect(&link).await else {
            return;
        };
        let send = self.send(&link, connection.clone());
        let receive = self.receive(&link, connection, pushes);
        futures_util::future::join(send, receive).await;
        link.set_connected(false);
    }

    fn routes_by_interest(&self) -> bool {
        true
    }
}

type Sending = Pin<Box<dyn Future<Output = (Arc<str>, redis::RedisResult<()>)> + Send>>;

impl RedisClusterBackplane {
    /// Sends each relay with `SPUBLISH` to the node of its topic's slot, many in flight at once,
    /// so that a slot that is down holds up only its own relays.
    async fn send(&self, link: &BackplaneLink, connection: ClusterConnection) {
        let mut in_flight: FuturesUnordered<Sending> = FuturesUnordered::new();
        let mut report_failure = true;
        let mut envelope = Vec::new();
        let mut channel = Vec::new();
        let mut queue_done = false;
        loop {
            enum Next {
                Out(Outbound),
                Sent(Arc<str>, redis::RedisResult<()>),
                QueueDone,
                Done,
            }
            let next = {
                let mut relay = pin!(next_outbound(link));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(Some((topic, result))) = in_flight.poll_next_unpin(cx) {
                        return Poll::Ready(Next::Sent(topic, result));
                    }
                    if queue_done {
                        if in_flight.is_empty() {
                            return Poll::Ready(Next::Done);
                        }
                    } else if in_flight.len() < IN_FLIGHT {
                        if let Poll::Ready(relay) = relay.as_mut().poll(cx) {
                            return Poll::Ready(relay.map_or(Next::QueueDone, Next::Out));
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match next {
                Next::Done => return,
                Next::QueueDone => queue_done = true,
                Next::Out(outbound) => {
                    envelope.clear();
                    let topic = match outbound {
                        Outbound::Control(control) => {
                            envelope::encode_control(&control, &mut envelope);
                            let name = match control.to {
                                Some(to) => instance_channel(&self.channel, to),
                                None => control_channel(&self.channel),
                            };
                            channel.clear();
                            channel.extend_from_slice(name.as_bytes());
                            Arc::from("(control)")
                        }
                        Outbound::Relay(relay) => {
                            if let Err(error) = envelope::encode(&relay, &mut envelope) {
                                link.report(BackplaneError::link(format!(
                                    "a publish to `{}` was not relayed: {error}",
                                    relay.topic
                                )));
                                continue;
                            }
                            topic_channel(&self.channel, &relay.topic, &mut channel);
                            relay.topic
                        }
                    };
                    let mut command = redis::cmd("SPUBLISH");
                    command.arg(&channel[..]).arg(&envelope[..]);
                    let mut connection = connection.clone();
                    let mut sending: Sending = Box::pin(async move {
                        let result = command.query_async::<()>(&mut connection).await;
                        (topic, result)
                    });
                    // Poll it once now, so that it is queued on the connection in publish order.
                    let waker = futures_util::task::noop_waker();
                    let mut cx = std::task::Context::from_waker(&waker);
                    match sending.as_mut().poll(&mut cx) {
                        Poll::Ready((topic, result)) => {
                            self.sent(link, &topic, result, &mut report_failure)
                        }
                        Poll::Pending => in_flight.push(sending),
                    }
                }
                Next::Sent(topic, result) => self.sent(link, &topic, result, &mut report_failure),
            }
        }
    }

    fn sent(
        &self,
        link: &BackplaneLink,
        topic: &str,
        result: redis::RedisResult<()>,
        report_failure: &mut bool,
    ) {
        match result {
            Ok(()) => *report_failure = true,
            Err(error) => {
                if std::mem::take(report_failure) {
                    link.report(redis_error(
                        &format!("SPUBLISH to the slot of topic `{topic}`"),
                        error,
                    ));
                }
            }
        }
    }

    /// Follows this instance's interest with `SSUBSCRIBE`/`SUNSUBSCRIBE` (one command per
    /// channel, since each may live on another node) and delivers what arrives.
    ///
    /// The cluster connection subscribes again by itself when it reconnects to a node, but not
    /// when the node is still down then; so after a lost connection every subscription is tried
    /// again here every `retry_interval` until it works (`SSUBSCRIBE` on a channel the
    /// connection already holds changes nothing), beside, never in the way of, new changes.
    async fn receive(
        &self,
        link: &BackplaneLink,
        connection: ClusterConnection,
        mut pushes: futures_channel::mpsc::UnboundedReceiver<PushInfo>,
    ) {
        // The control channel, then everything this instance is interested in now.
        let snapshot = link.interest_snapshot();
        let controls: Vec<Arc<str>> = vec![
            control_channel(&self.channel).into(),
            instance_channel(&self.channel, link.instance_id()).into(),
        ];
        // What this instance should be subscribed to, and those of it to try again.
        let mut subscribed: HashSet<Arc<str>> = snapshot.subscribe.iter().cloned().collect();
        let mut failed: HashSet<Arc<str>> = HashSet::new();
        let first = self.change(
            connection.clone(),
            snapshot.subscribe,
            Vec::new(),
            Some(snapshot.version),
            controls,
        );
        let mut change: Option<Change> = Some(first);
        let mut retrying: Option<Change> = None;
        let mut connected = false;
        let mut report_failure = true;
        let mut interest_changed: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        let runtime = link.runtime();
        let mut timer = runtime.new_timer(runtime.now() + self.retry_interval);
        let mut closed = pin!(link.closed());
        enum Event {
            Closed,
            Push(Option<PushInfo>),
            Changed(Option<InterestVersion>, Failures),
            InterestChanged,
            Tick,
        }
        loop {
            let event = std::future::poll_fn(|cx| {
                if closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Closed);
                }
                if let Poll::Ready(push) = pushes.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Push(push));
                }
                if let Some(pending) = retrying.as_mut() {
                    if let Poll::Ready((version, failures)) = pending.as_mut().poll(cx) {
                        retrying = None;
                        return Poll::Ready(Event::Changed(version, failures));
                    }
                }
                if let Some(pending) = change.as_mut() {
                    if let Poll::Ready((version, failures)) = pending.as_mut().poll(cx) {
                        change = None;
                        return Poll::Ready(Event::Changed(version, failures));
                    }
                } else {
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
                Event::Closed | Event::Push(None) => return,
                Event::Push(Some(push)) if push.kind == PushKind::Disconnection => {
                    // A node connection was lost: its subscriptions may be too.
                    failed.extend(subscribed.iter().cloned());
                }
                Event::Push(Some(push)) => self.push(link, push),
                Event::Changed(version, failures) => {
                    let mut first_error = None;
                    for (topic, subscribe, error) in failures {
                        // Only what is still wanted is tried again.
                        if subscribe && subscribed.contains(&topic) {
                            failed.insert(topic);
                        }
                        first_error.get_or_insert(error);
                    }
                    match first_error {
                        None => report_failure = true,
                        Some(error) => {
                            if std::mem::take(&mut report_failure) {
                                link.report(redis_error(
                                    "SSUBSCRIBE (tried again until its slot is served)",
                                    error,
                                ));
                            }
                        }
                    }
                    if let Some(version) = version {
                        // In effect everywhere it can be; the topics of a slot that is down are
                        // tried again until it is back.
                        link.interest_applied(version);
                        if !connected {
                            connected = true;
                            link.set_connected(true);
                        }
                    }
                }
                Event::InterestChanged => {
                    let changes = link.take_interest_changes();
                    for topic in &changes.unsubscribe {
                        subscribed.remove(topic);
                        failed.remove(topic);
                    }
                    subscribed.extend(changes.subscribe.iter().cloned());
                    change = Some(self.change(
                        connection.clone(),
                        changes.subscribe,
                        changes.unsubscribe,
                        Some(changes.version),
                        Vec::new(),
                    ));
                }
                Event::Tick => {
                    timer.as_mut().reset(runtime.now() + self.retry_interval);
                    if retrying.is_none() && !failed.is_empty() {
                        let retry: Vec<Arc<str>> = failed
                            .drain()
                            .filter(|topic| subscribed.contains(topic))
                            .collect();
                        retrying = Some(self.change(
                            connection.clone(),
                            retry,
                            Vec::new(),
                            None,
                            Vec::new(),
                        ));
                    }
                }
            }
        }
    }

    /// Delivers a sharded message; everything else (subscription confirmations, the control
    /// channel, disconnections, which the cluster connection handles) is skipped.
    fn push(&self, link: &BackplaneLink, push: PushInfo) {
        if push.kind != PushKind::SMessage {
            return;
        }
        let [channel, payload] = &push.data[..] else {
            return;
        };
        let (Value::BulkString(channel), Value::BulkString(payload)) = (channel, payload) else {
            return;
        };
        let prefix = self.channel.as_bytes();
        let Some(kind) = channel.strip_prefix(prefix).and_then(|rest| rest.get(..3)) else {
            return;
        };
        if kind != b":t:" {
            let own = instance_channel(&self.channel, link.instance_id());
            if channel[..] == *control_channel(&self.channel).as_bytes()
                || channel[..] == *own.as_bytes()
            {
                match envelope::decode_control(payload) {
                    Ok(control) => link.deliver_control(control),
                    Err(error) => link.report(BackplaneError::Malformed(format!(
                        "{error} (a control message on Redis sharded channel `{}`)",
                        String::from_utf8_lossy(channel)
                    ))),
                }
            }
            return;
        }
        match envelope::decode(payload) {
            Ok(relay) => link.deliver(relay),
            Err(error) => link.report(BackplaneError::Malformed(format!(
                "{error} (on Redis sharded channel `{}`)",
                String::from_utf8_lossy(channel)
            ))),
        }
    }

    /// Subscribes to the channels of `subscribe` (and to `controls`, the control channels) and
    /// unsubscribes from those of `unsubscribe`, concurrently; resolves to `version` (to
    /// confirm; `None` for a retry) and the changes that failed.
    fn change(
        &self,
        connection: ClusterConnection,
        subscribe: Vec<Arc<str>>,
        unsubscribe: Vec<Arc<str>>,
        version: Option<InterestVersion>,
        controls: Vec<Arc<str>>,
    ) -> Change {
        let prefix = self.channel.clone();
        Box::pin(async move {
            let mut commands = FuturesUnordered::new();
            let controls = controls.into_iter().map(|control| (control, true, true));
            let topics = subscribe
                .into_iter()
                .map(|topic| (topic, true, false))
                .chain(unsubscribe.into_iter().map(|topic| (topic, false, false)))
                .chain(controls);
            for (topic, subscribing, is_control) in topics {
                let mut connection = connection.clone();
                let mut channel = Vec::new();
                if is_control {
                    channel.extend_from_slice(topic.as_bytes());
                } else {
                    topic_channel(&prefix, &topic, &mut channel);
                }
                commands.push(async move {
                    let result = if subscribing {
                        connection.ssubscribe(&channel[..]).await
                    } else {
                        connection.sunsubscribe(&channel[..]).await
                    };
                    (topic, subscribing, is_control, result)
                });
            }
            let mut failures = Vec::new();
            while let Some((topic, subscribing, is_control, result)) = commands.next().await {
                if let Err(error) = result {
                    if !is_control {
                        failures.push((topic, subscribing, error));
                    }
                }
            }
            (version, failures)
        })
    }
}

/// The topics whose subscription (`true`) or unsubscription failed, and why.
type Failures = Vec<(Arc<str>, bool, redis::RedisError)>;

type Change = Pin<Box<dyn Future<Output = (Option<InterestVersion>, Failures)> + Send>>;
