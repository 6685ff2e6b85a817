//! Every scenario of the suite against `anyws-tokio`, served in the test process on a tokio
//! runtime of its own.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// anyws-tokio, on a multi-threaded tokio runtime shared by the tests of this binary.
struct Tokio;

impl Adapter for Tokio {
    fn name(&self) -> String {
        "anyws-tokio in process".to_owned()
    }

    fn runtime(&self) -> Arc<dyn Runtime> {
        anyws_tokio::runtime()
    }

    fn serve(
        &self,
        listener: std::net::TcpListener,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("start the server's tokio runtime")
        });
        let (stopped, on_stop) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            listener
                .set_nonblocking(true)
                .expect("non-blocking listener");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            if let Err(error) = anyws_tokio::serve(listener, server).fallback(routes).await {
                eprintln!("anyws-tokio: serve failed: {error}");
            }
            let _ = stopped.send(());
        });
        Box::pin(async move {
            let _ = on_stop.await;
        })
    }
}

anyws_conformance::tests!(InProcess(Tokio));
anyws_conformance::sse_tests!(InProcess(Tokio));
anyws_conformance::deflate_tests!(InProcess(Tokio));
