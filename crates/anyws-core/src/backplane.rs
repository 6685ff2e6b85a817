//! Scale-out: a backplane relays pub/sub between server instances.
//!
//! A server built with [`ServerBuilder::backplane`](crate::ServerBuilder::backplane) hands every
//! publish, after delivering it to its own subscribers, to a bounded queue. A task on the
//! server's [`Runtime`] runs the backplane driver ([`Backplane::run`]), which takes the relays
//! from that queue ([`BackplaneLink::next_relay`]), sends them to the other instances, and hands
//! what the other instances sent to [`BackplaneLink::deliver`], which reaches the local
//! subscribers only (a relay is never relayed again).
//!
//! # Delivery semantics
//!
//! - Local delivery never depends on the backplane: it happens first, whatever state the
//!   backplane is in.
//! - Delivery across instances is at most once. When the queue is full, the relay is dropped and
//!   [`BackplaneError::QueueFull`] goes to the error callback (once per run of drops); what a
//!   driver cannot send while its broker is unreachable is dropped too.
//! - Every relay carries the [`InstanceId`] of the server that published it; a relay that comes
//!   back to its own instance is ignored, so no subscriber gets a publish twice.
//! - Errors go to the callback set with
//!   [`ServerBuilder::on_backplane_error`](crate::ServerBuilder::on_backplane_error), never to
//!   the caller of `publish`.
//! - [`Server::shutdown`](crate::Server::shutdown) closes the queue: the driver sends what is
//!   still queued, sees [`BackplaneLink::next_relay`] return `None` and
//!   [`BackplaneLink::closed`] resolve, and returns. A driver still running
//!   [`Limits::close_timeout`](crate::Limits::close_timeout) later is dropped, which closes its
//!   connections.

use event_listener::Event;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::{Message, Runtime};

/// Relays publishes between server instances; see the [module docs](self) for the semantics.
///
/// A driver implements one method, [`run`](Backplane::run), which the server calls once, in a
/// task of its own, when it is built. The trait knows no runtime: a driver that needs timers
/// uses [`BackplaneLink::sleep`], which runs on the server's [`Runtime`].
///
/// ```
/// use anyws_core::{async_trait, Backplane, BackplaneLink};
///
/// /// Relays nothing: every relay is taken from the queue and dropped.
/// struct Discard;
///
/// #[async_trait]
/// impl Backplane for Discard {
///     async fn run(&self, link: BackplaneLink) {
///         link.set_connected(true);
///         while let Some(relay) = link.next_relay().await {
///             drop(relay);
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Runs the backplane until the server shuts down: sends each relay of
    /// [`BackplaneLink::next_relay`] to the other instances and passes what they send to
    /// [`BackplaneLink::deliver`]. Return once `next_relay` has returned `None` (or
    /// [`BackplaneLink::closed`] has resolved); a failure is reported with
    /// [`BackplaneLink::report`] and retried, never returned.
    async fn run(&self, link: BackplaneLink);

    /// Whether this driver routes relays by interest: it receives the relays of a topic only
    /// while this instance has subscribers to it, following [`BackplaneLink::interest_changed`]
    /// and confirming each change with [`BackplaneLink::interest_applied`]. Default: `false`, a
    /// driver that receives every relay; [`Server::backplane_synced`](crate::Server::backplane_synced)
    /// then only waits for the connection.
    fn routes_by_interest(&self) -> bool {
        false
    }
}

/// Identifies one server instance among those that share a backplane: a random 128-bit
/// number, new for every [`Server`](crate::Server).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(u128);

impl InstanceId {
    pub(crate) fn random() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The id that [`as_u128`](Self::as_u128) returned, as read back from the wire.
    pub fn from_u128(id: u128) -> Self {
        Self(id)
    }
}

impl fmt::Display for InstanceId {
    /// 32 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

/// One publish on its way between instances.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Relay {
    /// The instance that published it.
    pub origin: InstanceId,
    /// The namespace it reaches, or `None` for every namespace (a
    /// [`Server::publish`](crate::Server::publish)).
    pub namespace: Option<Arc<str>>,
    /// The topic.
    pub topic: Arc<str>,
    /// The message, text or binary.
    pub message: Message,
}

impl Relay {
    /// A relay of `message` to the subscribers of `topic` in `namespace` (`None`: in every
    /// namespace), published by `origin`.
    pub fn new(
        origin: InstanceId,
        namespace: Option<Arc<str>>,
        topic: Arc<str>,
        message: Message,
    ) -> Self {
        Self {
            origin,
            namespace,
            topic,
            message,
        }
    }

    /// The bytes this relay holds in the queue: payload, topic and namespace, plus a fixed
    /// 64 bytes for the rest, so that empty messages count too.
    pub fn queued_size(&self) -> usize {
        64 + self.message.len() + self.topic.len() + self.namespace.as_deref().map_or(0, str::len)
    }
}

/// What went wrong in a backplane; it goes to the error callback, never to `publish`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The relay queue was full, so a publish reached the local subscribers but was not
    /// relayed. Reported once for each run of drops: the next relay that fits ends the run.
    #[error("the backplane queue is full ({limit} bytes): publishes are not relayed to other instances until it drains")]
    QueueFull {
        /// [`Limits::max_backplane_queue_bytes`](crate::Limits::max_backplane_queue_bytes).
        limit: usize,
    },
    /// A relay from another instance could not be read; it was dropped.
    #[error("a relay from the backplane was dropped: {0}")]
    Malformed(String),
    /// The connection to the broker failed, or a relay could not be sent; the driver retries.
    #[error("backplane: {0}")]
    Link(Box<dyn std::error::Error + Send + Sync>),
}

impl BackplaneError {
    /// A [`Link`](Self::Link) error from any error type.
    pub fn link(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Link(error.into())
    }
}

/// The callback that receives backplane errors.
pub(crate) type ErrorCallback = Arc<dyn Fn(&BackplaneError) + Send + Sync>;

/// The default error callback: a `warn` event of target `anyws`.
pub(crate) fn print_error(error: &BackplaneError) {
    tracing::warn!(target: "anyws", %error, "backplane error");
}

/// What a backplane delivers relays to: the local subscribers of a server. The server
/// implements it; the backplane sees nothing else of it.
pub(crate) trait Subscribers: Send + Sync {
    /// Delivers `message` to the local subscribers of `topic` in `namespace`, or in every
    /// namespace when it is `None`.
    fn deliver(&self, namespace: Option<&str>, topic: &str, message: Message);

    /// The local peers of `namespace` (every namespace when it is `None`), as
    /// `(namespace, id)`, for another instance's [`Server::cluster_peers`](crate::Server::cluster_peers).
    fn local_peers(&self, namespace: Option<&str>) -> Vec<(String, String)>;
}

/// The server's side of a backplane: the queue of outgoing relays, the instance id, the error
/// callback and the connection state.
pub(crate) struct Outgoing {
    pub(crate) instance: InstanceId,
    queue: Mutex<Queue>,
    limit: usize,
    ready: Event,
    closed: AtomicBool,
    closed_event: Event,
    connected: AtomicBool,
    connected_changed: Event,
    pub(crate) stopped: AtomicBool,
    pub(crate) stopped_event: Event,
    on_error: ErrorCallback,
    /// Relays sent, received and dropped, for [`Server::stats`](crate::Server::stats).
    pub(crate) counted: crate::stats::RelayCounters,
    /// Whether the driver routes by interest ([`Backplane::routes_by_interest`]).
    pub(crate) routes_by_interest: bool,
    interest: Mutex<Interest>,
    /// Notified when a topic's interest changes (for the driver).
    interest_changed: Event,
    /// Notified when the driver confirms a change (for [`Outgoing::wait_synced`]).
    interest_applied: Event,
    /// Control messages to send, oldest first (at most [`MAX_QUEUED_CONTROLS`]).
    controls: Mutex<VecDeque<Control>>,
    controls_ready: Event,
    /// The open peer queries of [`Server::cluster_peers`](crate::Server::cluster_peers), by id:
    /// the answers so far.
    pub(crate) queries: Mutex<HashMap<u64, Vec<ClusterPeer>>>,
    pub(crate) next_query: AtomicU64,
}

/// Control messages waiting for the driver, at most; more are dropped (a query then simply
/// gets fewer answers).
const MAX_QUEUED_CONTROLS: usize = 1024;

/// The topics this instance has subscribers to, counted per namespace (plus holds), and the
/// changes the driver has not taken yet.
#[derive(Default)]
struct Interest {
    /// Topic → namespaces with subscribers to it, plus [`TopicHold`]s.
    topics: HashMap<Arc<str>, usize>,
    /// Topics whose interest changed since the driver last took the changes.
    pending: HashSet<Arc<str>>,
    /// Bumped by every change.
    version: u64,
    /// The last version the driver confirmed.
    applied: u64,
}

#[derive(Default)]
struct Queue {
    relays: VecDeque<Relay>,
    bytes: usize,
    dropping: bool,
}

impl Outgoing {
    pub(crate) fn new(instance: InstanceId, limit: usize, on_error: ErrorCallback) -> Self {
        Self {
            instance,
            queue: Mutex::new(Queue::default()),
            limit,
            ready: Event::new(),
            closed: AtomicBool::new(false),
            closed_event: Event::new(),
            connected: AtomicBool::new(false),
            connected_changed: Event::new(),
            stopped: AtomicBool::new(false),
            stopped_event: Event::new(),
            on_error,
            counted: Default::default(),
            routes_by_interest: false,
            interest: Mutex::new(Interest::default()),
            interest_changed: Event::new(),
            interest_applied: Event::new(),
            controls: Mutex::new(VecDeque::new()),
            controls_ready: Event::new(),
            queries: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
        }
    }

    /// Queues a control message for the driver; dropped when too many wait.
    pub(crate) fn push_control(&self, control: Control) {
        if self.is_closed() {
            return;
        }
        let mut controls = self.controls.lock().unwrap_or_else(PoisonError::into_inner);
        if controls.len() < MAX_QUEUED_CONTROLS {
            controls.push_back(control);
            drop(controls);
            self.controls_ready.notify(1);
        }
    }

    fn try_pop_control(&self) -> Option<Control> {
        self.controls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn interest(&self) -> std::sync::MutexGuard<'_, Interest> {
        self.interest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more namespace (or hold) has an interest in `topic`.
    pub(crate) fn topic_added(&self, topic: &Arc<str>) {
        let mut interest = self.interest();
        let count = interest.topics.entry(topic.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            interest.pending.insert(topic.clone());
            interest.version += 1;
            drop(interest);
            self.interest_changed.notify(usize::MAX);
        }
    }

    /// One namespace (or hold) less has an interest in `topic`.
    pub(crate) fn topic_removed(&self, topic: &str) {
        let mut interest = self.interest();
        let Some((key, count)) = interest.topics.get_key_value(topic) else {
            return;
        };
        if *count > 1 {
            if let Some(count) = interest.topics.get_mut(topic) {
                *count -= 1;
            }
            return;
        }
        let key = key.clone();
        interest.topics.remove(topic);
        interest.pending.insert(key);
        interest.version += 1;
        drop(interest);
        self.interest_changed.notify(usize::MAX);
    }

    /// Resolves once every interest change made before the call is in effect on the backplane:
    /// confirmed by an interest-routing driver, or, for any other driver, once it is connected.
    pub(crate) async fn wait_synced(&self) {
        if !self.routes_by_interest {
            return self.wait_connected().await;
        }
        let version = self.interest().version;
        loop {
            if self.interest().applied >= version || self.is_closed() {
                return;
            }
            let listener = self.interest_applied.listen();
            if self.interest().applied >= version || self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    pub(crate) fn relays_received(&self) -> u64 {
        self.counted.received.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a relay without waiting; a full queue drops it and reports the first drop of a run.
    pub(crate) fn push(&self, relay: Relay) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let size = relay.queued_size();
        let mut queue = self.lock();
        // One relay larger than the limit still goes through an empty queue.
        if queue.bytes + size > self.limit && !queue.relays.is_empty() {
            let first_drop = !std::mem::replace(&mut queue.dropping, true);
            drop(queue);
            self.counted.dropped();
            if first_drop {
                self.report(&BackplaneError::QueueFull { limit: self.limit });
            }
            return;
        }
        queue.dropping = false;
        queue.bytes += size;
        queue.relays.push_back(relay);
        drop(queue);
        self.ready.notify(1);
    }

    fn try_pop(&self) -> Option<Relay> {
        let mut queue = self.lock();
        let relay = queue.relays.pop_front()?;
        queue.bytes -= relay.queued_size();
        self.counted.sent();
        Some(relay)
    }

    async fn pop(&self) -> Option<Relay> {
        loop {
            if let Some(relay) = self.try_pop() {
                return Some(relay);
            }
            if self.is_closed() {
                return None;
            }
            let listener = self.ready.listen();
            if let Some(relay) = self.try_pop() {
                return Some(relay);
            }
            if self.is_closed() {
                return None;
            }
            listener.await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the queue: `next_relay` returns what is left, then `None`.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.ready.notify(usize::MAX);
            self.closed_event.notify(usize::MAX);
            self.interest_changed.notify(usize::MAX);
            self.interest_applied.notify(usize::MAX);
            self.controls_ready.notify(usize::MAX);
        }
    }

    pub(crate) async fn wait_closed(&self) {
        wait_for(&self.closed, &self.closed_event).await
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_connected(&self) {
        wait_for(&self.connected, &self.connected_changed).await
    }

    pub(crate) async fn wait_stopped(&self) {
        wait_for(&self.stopped, &self.stopped_event).await
    }

    pub(crate) fn report(&self, error: &BackplaneError) {
        // A panicking callback must not take the publisher (a peer's hook) down with it.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| (self.on_error)(error)));
    }
}

/// Resolves once `flag` is set; `event` is notified whenever it changes.
async fn wait_for(flag: &AtomicBool, event: &Event) {
    loop {
        if flag.load(Ordering::Acquire) {
            return;
        }
        let listener = event.listen();
        if flag.load(Ordering::Acquire) {
            return;
        }
        listener.await;
    }
}

/// A control message between instances: the core's own traffic, not a relay; see
/// [`BackplaneLink::next_control`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Control {
    /// The instance that sent it.
    pub origin: InstanceId,
    /// The instance it is for, or `None` for every instance.
    pub to: Option<InstanceId>,
    /// What it says, in a form only the core reads; a driver carries it as it is.
    pub payload: crate::Bytes,
}

impl Control {
    /// A control message from `origin` to `to` (`None`: every instance), as read back from the
    /// wire.
    pub fn new(origin: InstanceId, to: Option<InstanceId>, payload: crate::Bytes) -> Self {
        Self {
            origin,
            to,
            payload,
        }
    }
}

/// What a [`Control`] payload says, as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum ControlBody {
    /// Who are your peers (of `namespace`, or all)? Answer to query `query`.
    PeersQuery {
        query: u64,
        namespace: Option<String>,
    },
    /// The answer to query `query`: `(namespace, id)` of each peer.
    PeersAnswer {
        query: u64,
        peers: Vec<(String, String)>,
    },
}

/// One peer of an instance on the backplane; see
/// [`Server::cluster_peers`](crate::Server::cluster_peers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct ClusterPeer {
    /// The instance it is connected to.
    pub instance: InstanceId,
    /// Its namespace.
    pub namespace: String,
    /// Its id, as [`Peer::id`](crate::Peer::id) shows it on that instance.
    pub id: String,
}

impl ClusterPeer {
    /// The peer with `id` in `namespace` on `instance`.
    pub fn new(instance: InstanceId, namespace: String, id: String) -> Self {
        Self {
            instance,
            namespace,
            id,
        }
    }
}

/// Asks the other instances for their peers (of `namespace`, or all) and returns the query's
/// id; the answers gather in [`Outgoing::queries`] under it.
pub(crate) fn ask_for_peers(outgoing: &Outgoing, namespace: Option<&str>) -> u64 {
    let query = outgoing.next_query.fetch_add(1, Ordering::Relaxed);
    outgoing
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(query, Vec::new());
    let body = ControlBody::PeersQuery {
        query,
        namespace: namespace.map(str::to_owned),
    };
    if let Ok(payload) = serde_json::to_vec(&body) {
        outgoing.push_control(Control::new(outgoing.instance, None, payload.into()));
    }
    query
}

/// A batch of interest changes for a driver that [routes by interest](Backplane::routes_by_interest);
/// see [`BackplaneLink::take_interest_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterestChanges {
    /// Topics that now have subscribers on this instance: receive their relays.
    pub subscribe: Vec<Arc<str>>,
    /// Topics that no longer have any: stop receiving their relays.
    pub unsubscribe: Vec<Arc<str>>,
    /// Pass it to [`BackplaneLink::interest_applied`] once the changes are in effect.
    pub version: InterestVersion,
}

impl InterestChanges {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// Which interest changes a driver has applied; see [`BackplaneLink::interest_applied`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterestVersion(u64);

/// Keeps this instance's interest in a topic while it lives, as a subscriber would, without
/// one; see [`Server::hold_topic`](crate::Server::hold_topic).
#[must_use = "the interest ends when the hold is dropped"]
pub struct TopicHold {
    pub(crate) outgoing: Option<Arc<Outgoing>>,
    pub(crate) topic: Arc<str>,
}

impl Drop for TopicHold {
    fn drop(&mut self) {
        if let Some(outgoing) = &self.outgoing {
            outgoing.topic_removed(&self.topic);
        }
    }
}

impl fmt::Debug for TopicHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicHold")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// What a backplane has done so far; see [`Server::backplane_stats`](crate::Server::backplane_stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Relays from other instances handed to [`BackplaneLink::deliver`] (a relay that came back
    /// to its own instance is not counted, nor is a driver's control traffic).
    pub relays_received: u64,
}

/// What a [`Backplane`] driver gets to work with: the outgoing relays, local delivery, error
/// reporting, the connection state and timers on the server's runtime.
///
/// It holds the server weakly: once every handle on the server is gone, the queue closes and
/// [`next_relay`](Self::next_relay) returns `None`.
pub struct BackplaneLink {
    pub(crate) outgoing: Arc<Outgoing>,
    pub(crate) server: Weak<dyn Subscribers>,
    pub(crate) runtime: Arc<dyn Runtime>,
}

impl BackplaneLink {
    /// This server's instance id, which the driver sends with each relay.
    pub fn instance_id(&self) -> InstanceId {
        self.outgoing.instance
    }

    /// The next relay to send to the other instances, in publish order. Once the server shuts
    /// down, the relays still queued come out and then `None`.
    pub async fn next_relay(&self) -> Option<Relay> {
        self.outgoing.pop().await
    }

    /// The next relay if one is queued, without waiting; for sending several at once.
    pub fn try_next_relay(&self) -> Option<Relay> {
        self.outgoing.try_pop()
    }

    /// Delivers a relay from another instance to this instance's subscribers (never to other
    /// instances). A relay whose origin is this instance is ignored.
    pub fn deliver(&self, relay: Relay) {
        if relay.origin == self.outgoing.instance {
            return;
        }
        self.outgoing.counted.received();
        if let Some(server) = self.server.upgrade() {
            server.deliver(relay.namespace.as_deref(), &relay.topic, relay.message);
        }
    }

    /// Resolves once this instance's interest has changed since the driver last took it with
    /// [`take_interest_changes`](Self::take_interest_changes) or
    /// [`interest_snapshot`](Self::interest_snapshot) (at once if it has), or the server shuts
    /// down. Only drivers that [route by interest](Backplane::routes_by_interest) need it.
    pub async fn interest_changed(&self) {
        loop {
            if !self.outgoing.interest().pending.is_empty() || self.is_closed() {
                return;
            }
            let listener = self.outgoing.interest_changed.listen();
            if !self.outgoing.interest().pending.is_empty() || self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// The topics whose interest changed since the last call (or the last
    /// [`interest_snapshot`](Self::interest_snapshot)), each once, in no particular order:
    /// to subscribe to, or to unsubscribe from. Changes made in between are batched: a topic
    /// subscribed and unsubscribed again is listed once, in its current state, so a driver may
    /// be asked to unsubscribe from a topic it never subscribed to.
    pub fn take_interest_changes(&self) -> InterestChanges {
        let mut interest = self.outgoing.interest();
        let interest = &mut *interest;
        let mut changes = InterestChanges {
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
            version: InterestVersion(interest.version),
        };
        for topic in interest.pending.drain() {
            if interest.topics.contains_key(&topic) {
                changes.subscribe.push(topic);
            } else {
                changes.unsubscribe.push(topic);
            }
        }
        changes
    }

    /// Every topic this instance has an interest in now, as
    /// [`InterestChanges::subscribe`], for a driver that (re)connects; it also clears the
    /// changes not taken yet.
    pub fn interest_snapshot(&self) -> InterestChanges {
        let mut interest = self.outgoing.interest();
        interest.pending.clear();
        InterestChanges {
            subscribe: interest.topics.keys().cloned().collect(),
            unsubscribe: Vec::new(),
            version: InterestVersion(interest.version),
        }
    }

    /// Confirms that the changes up to `version` are in effect on the broker: subscriptions made
    /// before them now receive the other instances' relays. This wakes
    /// [`Server::backplane_synced`](crate::Server::backplane_synced).
    pub fn interest_applied(&self, version: InterestVersion) {
        let mut interest = self.outgoing.interest();
        if version.0 > interest.applied {
            interest.applied = version.0;
            drop(interest);
            self.outgoing.interest_applied.notify(usize::MAX);
        }
    }

    /// The next control message to send: to every other instance when
    /// [`Control::to`] is `None`, otherwise to that one. `None` once the server shuts down.
    /// Control messages are the core's own traffic between instances (the peer queries of
    /// [`Server::cluster_peers`](crate::Server::cluster_peers)); a driver carries
    /// [`Control::origin`] and [`Control::payload`] as they are, and hands what arrives to
    /// [`deliver_control`](Self::deliver_control). A driver that does not carry them leaves
    /// `cluster_peers` with the local peers only.
    pub async fn next_control(&self) -> Option<Control> {
        loop {
            if let Some(control) = self.outgoing.try_pop_control() {
                return Some(control);
            }
            if self.is_closed() {
                return None;
            }
            let listener = self.outgoing.controls_ready.listen();
            if let Some(control) = self.outgoing.try_pop_control() {
                return Some(control);
            }
            if self.is_closed() {
                return None;
            }
            listener.await;
        }
    }

    /// The next control message if one is queued, without waiting.
    pub fn try_next_control(&self) -> Option<Control> {
        self.outgoing.try_pop_control()
    }

    /// Hands a control message from another instance to the core. One from this instance, or
    /// for another one, is ignored; one that cannot be read is reported as
    /// [`BackplaneError::Malformed`].
    pub fn deliver_control(&self, control: Control) {
        let me = self.outgoing.instance;
        if control.origin == me || control.to.is_some_and(|to| to != me) {
            return;
        }
        match serde_json::from_slice::<ControlBody>(&control.payload) {
            Ok(ControlBody::PeersQuery { query, namespace }) => {
                let Some(server) = self.server.upgrade() else {
                    return;
                };
                let peers = server.local_peers(namespace.as_deref());
                let answer = ControlBody::PeersAnswer { query, peers };
                if let Ok(payload) = serde_json::to_vec(&answer) {
                    self.outgoing.push_control(Control::new(
                        me,
                        Some(control.origin),
                        payload.into(),
                    ));
                }
            }
            Ok(ControlBody::PeersAnswer { query, peers }) => {
                let mut queries = self
                    .outgoing
                    .queries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(answers) = queries.get_mut(&query) {
                    answers.extend(peers.into_iter().map(|(namespace, id)| ClusterPeer {
                        instance: control.origin,
                        namespace,
                        id,
                    }));
                }
            }
            Err(error) => self.report(BackplaneError::Malformed(format!(
                "a control message from instance {}: {error}",
                control.origin
            ))),
        }
    }

    /// Passes `error` to the server's backplane error callback.
    pub fn report(&self, error: BackplaneError) {
        self.outgoing.report(&error);
    }

    /// Records whether the driver is connected and receiving relays from the other instances;
    /// see [`Server::backplane_connected`](crate::Server::backplane_connected).
    pub fn set_connected(&self, connected: bool) {
        if self.outgoing.connected.swap(connected, Ordering::AcqRel) != connected {
            crate::observe::backplane_connected(connected);
            self.outgoing.connected_changed.notify(usize::MAX);
        }
    }

    /// Whether the server is shutting down (or gone): time for the driver to return.
    pub fn is_closed(&self) -> bool {
        self.outgoing.is_closed()
    }

    /// Resolves once the server shuts down (or is gone).
    pub async fn closed(&self) {
        self.outgoing.wait_closed().await
    }

    /// Sleeps for `duration` on the server's runtime, or until the server shuts down; returns
    /// `false` in the second case.
    pub async fn sleep(&self, duration: Duration) -> bool {
        let deadline = self.runtime.now() + duration;
        let timer = crate::runtime::sleep_until(&*self.runtime, deadline);
        let closed = self.closed();
        futures_util::pin_mut!(timer, closed);
        matches!(
            futures_util::future::select(timer, closed).await,
            futures_util::future::Either::Left(_)
        )
    }

    /// The server's runtime.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }
}

impl fmt::Debug for BackplaneLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackplaneLink")
            .field("instance", &self.outgoing.instance)
            .field("closed", &self.is_closed())
            .field("connected", &self.outgoing.is_connected())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn relay(payload: &str) -> Relay {
        Relay::new(
            InstanceId::from_u128(1),
            None,
            "t".into(),
            Message::from_text(payload),
        )
    }

    #[test]
    fn full_queue_drops_and_reports_once_per_run() {
        let reports = Arc::new(AtomicUsize::new(0));
        let counted = reports.clone();
        let limit = 3 * relay("x").queued_size();
        let out = Outgoing::new(
            InstanceId::from_u128(9),
            limit,
            Arc::new(move |e| {
                assert!(matches!(e, BackplaneError::QueueFull { .. }));
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        for i in 0..5 {
            out.push(relay(&i.to_string()));
        }
        assert_eq!(reports.load(Ordering::SeqCst), 1);
        assert_eq!(out.try_pop().unwrap().message.text().unwrap(), "0");
        out.push(relay("5"));
        out.push(relay("6"));
        assert_eq!(reports.load(Ordering::SeqCst), 2);
        let rest: Vec<String> = std::iter::from_fn(|| out.try_pop())
            .map(|r| r.message.text().unwrap().to_owned())
            .collect();
        assert_eq!(rest, ["1", "2", "5"]);
        assert_eq!(out.lock().bytes, 0);
        // What `Server::stats` reports: 4 relays taken by the driver, 3 dropped.
        assert_eq!(out.counted.sent.load(Ordering::Relaxed), 4);
        assert_eq!(out.counted.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn oversized_relay_passes_an_empty_queue() {
        let out = Outgoing::new(
            InstanceId::from_u128(9),
            10,
            Arc::new(|_| panic!("callback panics are contained")),
        );
        out.push(relay("a relay larger than the limit"));
        out.push(relay("dropped"));
        assert!(out.try_pop().is_some());
        assert!(out.try_pop().is_none());
    }

    struct Nobody;
    impl Subscribers for Nobody {
        fn deliver(&self, _: Option<&str>, _: &str, _: Message) {}
        fn local_peers(&self, _: Option<&str>) -> Vec<(String, String)> {
            Vec::new()
        }
    }

    /// A link on `out` with no server behind it; timers are not used.
    fn link(out: Arc<Outgoing>) -> BackplaneLink {
        #[derive(Debug)]
        struct NoRuntime;
        impl Runtime for NoRuntime {
            fn spawn(&self, _: crate::BoxFuture) {}
            fn new_timer(
                &self,
                _: std::time::Instant,
            ) -> std::pin::Pin<Box<dyn crate::AsyncTimer>> {
                unreachable!("no timers in these tests")
            }
        }
        BackplaneLink {
            outgoing: out,
            server: Weak::<Nobody>::new() as Weak<dyn Subscribers>,
            runtime: Arc::new(NoRuntime),
        }
    }

    fn sorted(topics: Vec<Arc<str>>) -> Vec<String> {
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics
    }

    #[test]
    fn interest_is_counted_and_changes_are_batched() {
        let mut out = Outgoing::new(InstanceId::from_u128(9), 1 << 20, Arc::new(|_| {}));
        out.routes_by_interest = true;
        let out = Arc::new(out);
        let link = link(out.clone());
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        // Two namespaces on `a`, one on `b`; `c` comes and goes before the driver looks.
        out.topic_added(&a);
        out.topic_added(&a);
        out.topic_added(&b);
        out.topic_added(&c);
        out.topic_removed("c");
        out.topic_removed("never-added");
        futures_executor::block_on(link.interest_changed());
        let changes = link.take_interest_changes();
        assert_eq!(sorted(changes.subscribe), ["a", "b"]);
        assert_eq!(sorted(changes.unsubscribe), ["c"]);
        assert!(link.take_interest_changes().is_empty());

        // One namespace leaves `a`: still interested, nothing changes.
        out.topic_removed("a");
        assert!(link.take_interest_changes().is_empty());
        out.topic_removed("a");
        let second = link.take_interest_changes();
        assert_eq!(sorted(second.unsubscribe), ["a"]);
        assert!(second.version > changes.version);

        // Waiting for sync: done once the driver confirms the version of the last change.
        out.topic_added(&c);
        let mut synced = Box::pin(out.wait_synced());
        assert!(futures_util::FutureExt::now_or_never(synced.as_mut()).is_none());
        link.interest_applied(second.version);
        assert!(futures_util::FutureExt::now_or_never(synced.as_mut()).is_none());
        let snapshot = link.interest_snapshot();
        assert_eq!(sorted(snapshot.subscribe), ["b", "c"]);
        assert!(
            link.take_interest_changes().is_empty(),
            "the snapshot took them"
        );
        link.interest_applied(snapshot.version);
        assert!(futures_util::FutureExt::now_or_never(synced.as_mut()).is_some());
    }

    #[test]
    fn close_drains_then_ends() {
        let out = Outgoing::new(InstanceId::from_u128(9), 1 << 20, Arc::new(|_| {}));
        out.push(relay("left"));
        out.close();
        out.push(relay("after close"));
        futures_executor::block_on(async {
            assert_eq!(out.pop().await.unwrap().message.text().unwrap(), "left");
            assert!(out.pop().await.is_none());
            out.wait_closed().await;
        });
    }
}

/// The server's side of the seam: a recording driver on a thread-per-task runtime.
#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::{AsyncTimer, BoxFuture, Hooks, ServerBuilder};
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll};
    use std::time::Instant;

    /// Each task on a thread of its own; timers that poll the clock.
    #[derive(Debug)]
    struct Threads;

    #[derive(Debug)]
    struct Timer(Instant);

    impl AsyncTimer for Timer {
        fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
            self.0 = deadline;
        }

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if Instant::now() >= self.0 {
                return Poll::Ready(());
            }
            let waker = cx.waker().clone();
            let left = self.0 - Instant::now();
            std::thread::spawn(move || {
                std::thread::sleep(left);
                waker.wake();
            });
            Poll::Pending
        }
    }

    impl Runtime for Threads {
        fn spawn(&self, future: BoxFuture) {
            std::thread::spawn(move || futures_executor::block_on(future));
        }

        fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
            Box::pin(Timer(deadline))
        }
    }

    /// Sends every relay it is given to a channel, and says when it returns.
    struct Recorder(Mutex<mpsc::Sender<Option<Relay>>>);

    #[async_trait::async_trait]
    impl Backplane for Recorder {
        async fn run(&self, link: BackplaneLink) {
            link.set_connected(true);
            let sender = self.0.lock().unwrap().clone();
            while let Some(relay) = link.next_relay().await {
                let _ = sender.send(Some(relay));
            }
            let _ = sender.send(None);
        }
    }

    struct NoHooks;
    impl Hooks for NoHooks {}

    #[test]
    fn publish_relays_and_shutdown_stops_the_driver() {
        let (sender, relays) = mpsc::channel();
        let server = ServerBuilder::new(NoHooks)
            .backplane(Recorder(Mutex::new(sender)))
            .build(Arc::new(Threads));
        futures_executor::block_on(server.backplane_connected());
        assert!(server.is_backplane_connected());

        server.publish("news", Message::from_binary(vec![1, 2, 3]));
        let relay = relays
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("a relay");
        assert_eq!(relay.origin, server.instance_id());
        assert_eq!(relay.namespace, None);
        assert_eq!(&*relay.topic, "news");
        assert_eq!(relay.message, Message::from_binary(vec![1, 2, 3]));
        let stats = server.stats();
        assert_eq!((stats.relays_sent, stats.relays_dropped), (1, 0));

        futures_executor::block_on(server.shutdown());
        assert!(
            relays
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .is_none(),
            "the driver returned"
        );
        server.publish("news", "after shutdown");
        assert!(
            relays.try_recv().is_err(),
            "nothing is relayed after shutdown"
        );
    }

    #[test]
    fn without_a_backplane_nothing_waits() {
        let server = ServerBuilder::new(NoHooks).build(Arc::new(Threads));
        assert!(!server.is_backplane_connected());
        futures_executor::block_on(server.backplane_connected());
        server.publish("news", "local only");
        futures_executor::block_on(server.shutdown());
    }
}
