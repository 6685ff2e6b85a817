//! The runtime seam: the little an adapter must provide so the core can run on its executor.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// A boxed, sendable future with no output, as handed to [`Runtime::spawn`].
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the core needs from an async runtime: spawning a task and making a timer.
///
/// Each adapter implements this once (`anyws_tokio::TokioRuntime`, …) and the core receives it as
/// an `Arc<dyn Runtime>`; the core never names a runtime itself.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: BoxFuture);

    /// Makes a timer that fires at `deadline`.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>>;

    /// The current time. Override it to drive the core with a fake clock in tests.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A timer that can be moved to a new deadline without being reallocated.
///
/// It is `Sync` so that it can also serve as hyper's `Sleep`.
pub trait AsyncTimer: Send + Sync + Debug + 'static {
    /// Moves the deadline; a timer that already fired fires again at the new deadline.
    fn reset(self: Pin<&mut Self>, deadline: Instant);

    /// Resolves once the deadline has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Sleeps on a runtime timer until `deadline`.
pub(crate) async fn sleep_until(runtime: &dyn Runtime, deadline: Instant) {
    let mut timer = runtime.new_timer(deadline);
    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await
}
