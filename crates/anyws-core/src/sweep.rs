//! The idle timeout and automatic pings of every peer of a server, kept by one task rather than
//! a runtime timer per peer.
//!
//! A runtime timer costs each idle peer an allocation and about a hundred bytes (tokio's
//! `Sleep`), and most are moved on at every message. Instead each WebSocket peer publishes
//! when it next needs its task woken (its `deadline`, in milliseconds since the server began),
//! and one task per server, running while the server has peers, looks at every peer once per
//! [`tick`] and wakes those whose deadline passed. Their drivers then do what their deadlines
//! ask (a ping, or the idle timeout), so deadlines are kept to within one tick: at the defaults
//! (a ping after 30 s of silence, the connection dropped after 120), within a second. The
//! close timeout, which only a closing peer needs, still takes a timer of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::server::Shared;
use crate::{Limits, Runtime};

/// A peer's deadline when it has none.
pub(crate) const NEVER: u64 = u64::MAX;

/// The server's deadline keeper.
pub(crate) struct Sweep {
    /// The runtime's clock.
    clock: Arc<dyn Runtime>,
    /// Deadlines count milliseconds from here.
    epoch: Instant,
    /// The task is running (or about to).
    running: AtomicBool,
}

impl Sweep {
    pub(crate) fn new(clock: Arc<dyn Runtime>) -> Self {
        Self {
            epoch: clock.now(),
            clock,
            running: AtomicBool::new(false),
        }
    }

    /// `at` as the sweep counts time: milliseconds since the server began, rounded up (so that
    /// a peer woken at its deadline finds it passed).
    pub(crate) fn millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        let ms = since.as_millis() as u64;
        if since > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    /// The runtime's time now, in [`Sweep::millis`].
    pub(crate) fn now(&self) -> u64 {
        self.millis(self.clock.now())
    }

    /// Starts the task if it is not running: called by a peer that set a deadline.
    pub(crate) fn ensure_running(&self, shared: &Arc<Shared>) {
        if self.running.load(Ordering::Relaxed) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let tick = tick(&shared.limits);
        let weak = Arc::downgrade(shared);
        let runtime = shared.runtime.clone();
        shared.runtime.spawn(Box::pin(async move {
            let mut timer = runtime.new_timer(runtime.now() + tick);
            loop {
                std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
                if !sweep(&weak) {
                    return;
                }
                timer.as_mut().reset(runtime.now() + tick);
            }
        }));
    }
}

/// How often the task looks at the peers: an eighth of the shortest of the idle timeout and
/// the ping interval, between 10 ms and 1 s.
pub(crate) fn tick(limits: &Limits) -> Duration {
    let shortest = [
        limits.idle_timeout,
        crate::connection::ping_interval(limits),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(Duration::from_secs(8));
    (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Wakes every peer whose deadline passed; false when the task should end (the server is gone,
/// or has no peers and another task will start with the next).
fn sweep(weak: &Weak<Shared>) -> bool {
    let Some(shared) = weak.upgrade() else {
        return false;
    };
    let now = shared.sweep.now();
    let mut due = Vec::new();
    {
        let registry = shared.read();
        if registry.count == 0 {
            // Stop, unless a peer joined since: the next one to set a deadline starts a task.
            shared.sweep.running.store(false, Ordering::Release);
            return false;
        }
        for namespace in registry.namespaces.values() {
            for peer in namespace.peers.values() {
                if peer.inner.deadline.load(Ordering::Relaxed) <= now {
                    due.push(peer.clone());
                }
            }
        }
    }
    for peer in due {
        // Not again until the driver sets its next deadline.
        peer.inner.deadline.store(NEVER, Ordering::Relaxed);
        peer.inner.outbox.waker.wake();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Clock;

    impl Runtime for Clock {
        fn spawn(&self, _: crate::BoxFuture) {
            unreachable!()
        }

        fn new_timer(&self, _: Instant) -> std::pin::Pin<Box<dyn crate::AsyncTimer>> {
            unreachable!()
        }
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        let sweep = Sweep::new(Arc::new(Clock));
        let epoch = sweep.epoch;
        assert_eq!(sweep.millis(epoch), 0);
        assert_eq!(sweep.millis(epoch + Duration::from_millis(5)), 5);
        assert_eq!(sweep.millis(epoch + Duration::from_micros(5_001)), 6);
        // Before the epoch counts as now.
        assert_eq!(sweep.millis(epoch - Duration::from_secs(1)), 0);
    }

    #[test]
    fn tick_follows_the_shortest_deadline() {
        let mut limits = Limits::default();
        assert_eq!(tick(&limits), Duration::from_secs(1));
        limits.idle_timeout = Some(Duration::from_millis(400));
        limits.ping_interval = None;
        assert_eq!(tick(&limits), Duration::from_millis(50));
        limits.idle_timeout = Some(Duration::from_millis(20));
        assert_eq!(tick(&limits), Duration::from_millis(10));
        limits.idle_timeout = None;
        assert_eq!(tick(&limits), Duration::from_secs(1));
    }
}
