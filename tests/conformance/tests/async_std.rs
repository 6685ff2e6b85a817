//! Every scenario of the suite against `anyws-async-std`, served in the test process on
//! async-std's executor. The accept loop is the application's own: each connection goes to
//! `anyws_async_std::serve_connection`, as in an app that embeds anyws on connections it
//! accepted itself.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use std::future::Future;
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
            use futures_util::future::{select, Either};
            loop {
                let accept = std::pin::pin!(listener.accept());
                let stop = std::pin::pin!(server.shutdown_started());
                let stream = match select(accept, stop).await {
                    Either::Left((Ok((stream, _)), _)) => stream,
                    Either::Left((Err(_), _)) => continue,
                    Either::Right(_) => break,
                };
                drop(async_std::task::spawn(anyws_async_std::serve_connection(
                    stream,
                    server.clone(),
                    routes.clone(),
                )));
            }
            server.shutdown().await;
            let _ = stopped.send(());
        }));
        Box::pin(async move {
            let _ = on_stop.await;
        })
    }
}

anyws_conformance::tests!(InProcess(AsyncStd));
anyws_conformance::sse_tests!(InProcess(AsyncStd));
anyws_conformance::deflate_tests!(InProcess(AsyncStd));
