use anyws_core::{AsyncTimer, BoxFuture, Runtime};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The tokio implementation of the core's [`Runtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

/// The tokio runtime as the core takes it.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(TokioRuntime)
}

impl Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture) {
        tokio::spawn(future);
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer {
            sleep: tokio::time::sleep_until(deadline.into()),
        })
    }
}

pin_project_lite::pin_project! {
    #[derive(Debug)]
    struct Timer {
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.project().sleep.reset(deadline.into());
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}
