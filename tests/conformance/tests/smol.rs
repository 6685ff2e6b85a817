//! Every scenario of the suite against `anyws-smol`, served in the test process on smol's global
//! executor.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

/// anyws-smol, on smol's global executor.
struct Smol;

impl Adapter for Smol {
    fn name(&self) -> String {
        "anyws-smol in process".to_owned()
    }

    fn runtime(&self) -> Arc<dyn Runtime> {
        anyws_smol::runtime()
    }

    fn serve(
        &self,
        listener: std::net::TcpListener,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // A runtime-agnostic channel: the suite awaits `on_stop` on its own tokio runtime.
        let (stopped, on_stop) = tokio::sync::oneshot::channel();
        smol::spawn(async move {
            let listener = smol::net::TcpListener::try_from(listener).expect("smol listener");
            let serve = anyws_smol::serve(listener, server).fallback(routes);
            if let Err(error) = serve.into_future().await {
                eprintln!("anyws-smol: serve failed: {error}");
            }
            let _ = stopped.send(());
        })
        .detach();
        Box::pin(async move {
            let _ = on_stop.await;
        })
    }
}

anyws_conformance::tests!(InProcess(Smol));
anyws_conformance::sse_tests!(InProcess(Smol));
anyws_conformance::deflate_tests!(InProcess(Smol));
