//! Every scenario of the suite against `anyws-tokio`, served in the test process on a tokio
//! runtime of its own: over cleartext HTTP/1.1, and the WebSocket scenarios also over TLS and
//! over HTTP/2 (cleartext and TLS).

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use anyws_hyper::tls::rustls::ServerConfig;
use std::future::{Future, IntoFuture};
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
        spawn(anyws_tokio::serve(tokio_listener(listener), server).fallback(routes))
    }

    fn serve_tls(
        &self,
        listener: std::net::TcpListener,
        tls: Arc<ServerConfig>,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        spawn(anyws_tokio::serve_tls(tokio_listener(listener), tls, server).fallback(routes))
    }
}

/// The server's tokio runtime, shared by the tests of this binary.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("start the server's tokio runtime")
    })
}

/// `listener` on the server's runtime.
fn tokio_listener(listener: std::net::TcpListener) -> tokio::net::TcpListener {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let _runtime = runtime().enter();
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

/// Runs `serve` on the server's runtime.
fn spawn<S>(serve: S) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: IntoFuture<Output = std::io::Result<()>> + Send + 'static,
    S::IntoFuture: Send,
{
    anyws_conformance::spawn_serving("anyws-tokio", serve, |task| {
        runtime().spawn(task);
    })
}

anyws_conformance::tests!(InProcess(Tokio));
anyws_conformance::sse_tests!(InProcess(Tokio));
anyws_conformance::deflate_tests!(InProcess(Tokio));
anyws_conformance::transport_tests!(InProcess(Tokio); tls, h2c, h2_tls);
