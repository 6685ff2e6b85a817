//! hyper's timer, on the core's runtime seam.

use anyws_core::{AsyncTimer, Runtime};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// hyper's [`Timer`](hyper::rt::Timer) on any anyws [`Runtime`], so hyper's timeouts (such as
/// the handshake timeout) work on every runtime without further glue.
#[derive(Clone, Debug)]
pub struct RuntimeTimer(pub Arc<dyn Runtime>);

impl hyper::rt::Timer for RuntimeTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.0.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(self.0.new_timer(deadline)))
    }

    fn now(&self) -> Instant {
        self.0.now()
    }
}

struct Sleep(Pin<Box<dyn AsyncTimer>>);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Sleep {}

/// Sleeps on `runtime` until `deadline`.
pub(crate) async fn sleep_until(runtime: &dyn Runtime, deadline: Instant) {
    let mut timer = runtime.new_timer(deadline);
    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await
}
