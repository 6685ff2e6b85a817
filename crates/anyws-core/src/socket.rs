//! A connection's socket shared with the peer's senders, for writes that need no wake-up.

use futures_util::task::AtomicWaker;
use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use crate::peer::{lock, PeerInner};
use crate::runtime::Runtime;

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
pub(crate) struct Cork(());

struct Corks {
    /// How many turns are under way on this thread (one, unless a hook runs another task).
    depth: Cell<u32>,
    /// The peers to hand to their flusher when the outermost turn ends.
    pending: RefCell<Vec<Arc<PeerInner>>>,
}

thread_local! {
    static CORKS: Corks = const {
        Corks {
            depth: Cell::new(0),
            pending: RefCell::new(Vec::new()),
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
}

impl Drop for Cork {
    fn drop(&mut self) {
        let _ = CORKS.try_with(|corks| {
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
