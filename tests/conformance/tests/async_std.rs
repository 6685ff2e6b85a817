//! Every scenario of the suite against `anyws-async-std`, served in the test process on
//! async-std's executor.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

/// anyws-async-std, on async-std's executor.
struct AsyncStd;

impl Adapter for AsyncStd {
    fn name(&self) -> String {
        "anyws-async-std in process".to_owned()
    }

    fn runtime(&self) -> Arc<dyn Runtime> {
        anyws_async_std::runtime()
    }

    fn serve(
        &self,
        listener: std::net::TcpListener,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // A runtime-agnostic channel: the suite awaits `on_stop` on its own tokio runtime.
        let (stopped, on_stop) = tokio::sync::oneshot::channel();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = async_std::net::TcpListener::from(listener);
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(async move {
            let serve = anyws_async_std::serve(listener, server).fallback(routes);
            if let Err(error) = serve.into_future().await {
                eprintln!("anyws-async-std: serve failed: {error}");
            }
            let _ = stopped.send(());
        }));
        Box::pin(async move {
            let _ = on_stop.await;
        })
    }
}

anyws_conformance::tests!(InProcess(AsyncStd));
