//! A connection's socket shared with the peer's senders, for writes that need no wake-up.

use futures_util::task::AtomicWaker;
use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use crate::peer::{lock, PeerInner};
use crate::registry::Held;
use crate::runtime::Runtime;
use crate::server::Shared;
use crate::Message;

/// A connection's socket, shared between the peer's task and whoever sends to the peer.
///
/// Given to [`PendingPeer::run_on_socket`](crate::PendingPeer::run_on_socket), it lets a
/// message sent or published to a peer that has nothing else to write go to the socket
/// straight away, from the sender's thread, without waking the peer's task: a publish to many
/// subscribers then costs a system call per subscriber and nothing more. Only the bytes of
/// whole frames go this way, and only while the peer's own task is writing nothing; whatever
/// the socket does not take at once is left to the task, in order.
///
/// It is implemented for every shared handle on a non-blocking [`TcpStream`]
/// (`T: AsRef<TcpStream>`, such as `async-io`'s `Async<TcpStream>`); an adapter whose socket
/// is of another kind implements it for a type of its own.
pub trait SharedSocket: Send + Sync + 'static {
    /// Writes what the socket takes now of `bufs`, in order, without waiting: the number of
    /// bytes written, or [`io::ErrorKind::WouldBlock`] when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// [`try_write_vectored`](Self::try_write_vectored) with one buffer, which is how most
    /// writes come (a publish's frames are gathered into one). By default it calls
    /// `try_write_vectored`; a socket implements it when a plain write costs less than a
    /// vectored one (for a TCP socket, `send` rather than `writev`).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }
}

impl<T: AsRef<TcpStream> + Send + Sync + 'static> SharedSocket for T {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.as_ref().write_vectored(bufs)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.as_ref().write(buf)
    }
}

/// While a connection's task runs on a thread (reading, running its hooks), what is sent on
/// that thread to a peer whose socket is shared and idle is queued rather than written, and
/// those peers are handed to their server's [`Flusher`] when the turn ends. Outside a turn (a
/// publish from a task of the application's own) a send to an idle peer writes at once.
///
/// What a turn publishes is held as well (see [`Cork::hold`]), until the turn has handled its
/// messages and before it writes to its own socket, so that a recipient
/// takes everything the turn published to a topic as one item, framed once for all of them,
/// rather than a message at a time: a turn that handles many messages, each published to a
/// room, costs each member of the room one item.
pub(crate) struct Cork(());

struct Corks {
    /// How many turns are under way on this thread (one, unless a hook runs another task).
    depth: Cell<u32>,
    /// The peers to hand to their flusher when the outermost turn ends.
    pending: RefCell<Vec<Arc<PeerInner>>>,
    /// The publishes held to the end of the outermost turn, in order.
    held: RefCell<Vec<Held>>,
    /// Which peers the held publishes may reach.
    holding: Cell<Holding>,
}

/// Which peers the publishes a turn holds may reach, for [`Cork::release_before`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// Nothing is held.
    Nothing,
    /// Every message held skips the peer with this key: a turn's publishes usually come from
    /// its own peer, and what is sent to that peer cannot overtake them.
    AllBut(u64),
    /// Any peer.
    Any,
}

thread_local! {
    static CORKS: Corks = const {
        Corks {
            depth: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
            holding: Cell::new(Holding::Nothing),
        }
    };
}

impl Cork {
    /// Begins a turn on this thread; it ends when the `Cork` is dropped.
    pub(crate) fn new() -> Self {
        // A thread that is going away has no turns: nothing is held back there.
        let _ = CORKS.try_with(|corks| corks.depth.set(corks.depth.get() + 1));
        Self(())
    }

    /// Whether a turn is under way on this thread.
    pub(crate) fn corked() -> bool {
        CORKS
            .try_with(|corks| corks.depth.get() > 0)
            .unwrap_or(false)
    }

    /// Has `peer` written to when this thread's turn ends (only called while
    /// [`Cork::corked`]).
    pub(crate) fn defer(peer: Arc<PeerInner>) {
        let _ = CORKS.try_with(move |corks| corks.pending.borrow_mut().push(peer));
    }

    /// Holds a publish of `message` to `topic` of `shared`'s `namespace` (skipping the peer
    /// with key `except`) until this thread's turn writes to its own socket or ends, after
    /// those held already; gives the message back when no turn is under way. What comes before
    /// it in the turn's order is kept: a send, ping or close to a peer the held messages may
    /// reach delivers them first (see [`Cork::release_before`]), as does a subscribe or
    /// unsubscribe.
    pub(crate) fn hold(
        shared: &Arc<Shared>,
        namespace: Option<&Arc<str>>,
        topic: &str,
        message: Message,
        except: Option<u64>,
    ) -> Option<Message> {
        let mut message = Some(message);
        let _ = CORKS.try_with(|corks| {
            if corks.depth.get() == 0 {
                return;
            }
            let Some(message) = message.take() else {
                return;
            };
            let full = {
                let mut held = corks.held.borrow_mut();
                match held.last_mut() {
                    Some(last) if last.continues(shared, namespace, topic) => {
                        last.add(message, except)
                    }
                    _ => held.push(Held::new(shared, namespace, topic, message, except)),
                }
                held.len() >= HELD_TOPICS || held.last().is_some_and(Held::full)
            };
            corks.holding.set(match (corks.holding.get(), except) {
                (Holding::Nothing, Some(key)) => Holding::AllBut(key),
                (Holding::AllBut(held), Some(key)) if held == key => Holding::AllBut(key),
                _ => Holding::Any,
            });
            if full {
                release(corks);
            }
        });
        message
    }

    /// Delivers the publishes held on this thread now if the peer with `key` may be due any
    /// of them: before a send, ping or close to it, which must not overtake them.
    pub(crate) fn release_before(key: u64) {
        let _ = CORKS.try_with(|corks| match corks.holding.get() {
            Holding::Nothing => {}
            Holding::AllBut(skipped) if skipped == key => {}
            _ => release(corks),
        });
    }

    /// Delivers the publishes held on this thread now: before a subscription changes, so
    /// that they reach the subscribers they were published to, and before the turn writes to
    /// its own socket, so that nothing of the turn is seen before they are delivered.
    pub(crate) fn release_all() {
        let _ = CORKS.try_with(|corks| {
            if corks.holding.get() != Holding::Nothing {
                release(corks);
            }
        });
    }
}

/// The most topics (runs of publishes to one topic) a turn holds before delivering them.
const HELD_TOPICS: usize = 64;

/// Delivers the publishes held on this thread, in order. Sends made while delivering (to
/// the recipients) find nothing held.
fn release(corks: &Corks) {
    corks.holding.set(Holding::Nothing);
    let mut held = std::mem::take(&mut *corks.held.borrow_mut());
    for batch in held.drain(..) {
        batch.deliver();
    }
    // The list's memory is kept for the thread's next turns.
    let mut slot = corks.held.borrow_mut();
    if slot.is_empty() {
        *slot = held;
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        let _ = CORKS.try_with(|corks| {
            if corks.depth.get() == 1 && corks.holding.get() != Holding::Nothing {
                // Delivered while the turn still stands, so that what reaches idle peers is
                // written as the rest of the turn's sends are.
                release(corks);
            }
            let depth = corks.depth.get() - 1;
            corks.depth.set(depth);
            if depth > 0 {
                return;
            }
            let mut pending = corks.pending.borrow_mut();
            // Peers of one server come in runs: one lock of its flusher for each.
            while let Some(first) = pending.last() {
                let shared = first.shared.clone();
                let from = pending
                    .iter()
                    .rposition(|peer| !Arc::ptr_eq(&peer.shared, &shared))
                    .map_or(0, |i| i + 1);
                shared.flusher.take(&shared.runtime, pending.drain(from..));
            }
        });
    }
}

/// The tasks of a server that write to idle peers what turns sent them (see [`Cork`]): one
/// wake-up for all of them, however many, and one write per peer of everything it was sent
/// since, as its own task would have done had each been woken. One task per core the process
/// may use (at most 16), each given up to [`Flusher::CHUNK`] peers at a time in turn, so that a
/// publish to many spreads over a multi-threaded runtime's threads as the peers' own tasks did.
/// Whichever task writes to a peer writes its queue from the front, so its order holds.
pub(crate) struct Flusher {
    shards: Box<[Shard]>,
    /// The shard the next peers go to.
    next: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    state: Arc<FlushState>,
    started: AtomicBool,
}

#[derive(Default)]
struct FlushState {
    pending: Mutex<Vec<Arc<PeerInner>>>,
    waker: AtomicWaker,
    closed: AtomicBool,
}

impl Default for Flusher {
    fn default() -> Self {
        let tasks = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
        Self {
            shards: (0..tasks).map(|_| Shard::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Flusher {
    /// Peers handed to one task at a time.
    const CHUNK: usize = 1024;

    /// Has `peers` written to soon, by the flusher's tasks (each started on first use).
    fn take(&self, runtime: &Arc<dyn Runtime>, peers: impl Iterator<Item = Arc<PeerInner>>) {
        let mut peers = peers.peekable();
        while peers.peek().is_some() {
            let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            self.shards[shard].take(runtime, peers.by_ref().take(Self::CHUNK));
        }
    }
}

impl Shard {
    fn take(&self, runtime: &Arc<dyn Runtime>, peers: impl Iterator<Item = Arc<PeerInner>>) {
        let mut pending = lock(&self.state.pending);
        let was_empty = pending.is_empty();
        pending.extend(peers);
        drop(pending);
        if !self.started.swap(true, Ordering::AcqRel) {
            runtime.spawn(Box::pin(flush(self.state.clone())));
        } else if was_empty {
            self.state.waker.wake();
        }
    }
}

impl Drop for Shard {
    /// The server is gone: its flusher's tasks end.
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
        self.state.waker.wake();
    }
}

/// The flusher's task: each time it is woken, writes to every peer handed to it since.
async fn flush(state: Arc<FlushState>) {
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    std::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        std::mem::swap(&mut *lock(&state.pending), &mut batch);
        if batch.is_empty() {
            return if state.closed.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        for peer in batch.drain(..) {
            peer.outbox
                .flush_deferred(&mut buf, peer.shared.deflate.as_ref());
        }
        // A large message's buffer is not kept.
        if buf.capacity() > 128 * 1024 {
            buf = Vec::new();
        }
        // Other tasks run before the next batch.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}
