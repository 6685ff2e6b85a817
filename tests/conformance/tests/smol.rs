//! Every scenario of the suite against `anyws-smol`, served in the test process on smol's global
//! executor: over cleartext HTTP/1.1, and the WebSocket scenarios also over TLS and over
//! cleartext HTTP/2.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use anyws_hyper::tls::rustls::ServerConfig;
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
        spawn(anyws_smol::serve(smol_listener(listener), server).fallback(routes))
    }

    fn serve_tls(
        &self,
        listener: std::net::TcpListener,
        tls: Arc<ServerConfig>,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        spawn(anyws_smol::serve_tls(smol_listener(listener), tls, server).fallback(routes))
    }
}

fn smol_listener(listener: std::net::TcpListener) -> smol::net::TcpListener {
    smol::net::TcpListener::try_from(listener).expect("smol listener")
}

/// Runs `serve` on smol's executor.
fn spawn<S>(serve: S) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: IntoFuture<Output = std::io::Result<()>> + Send + 'static,
    S::IntoFuture: Send,
{
    anyws_conformance::spawn_serving("anyws-smol", serve, |task| smol::spawn(task).detach())
}

anyws_conformance::tests!(InProcess(Smol));
anyws_conformance::sse_tests!(InProcess(Smol));
anyws_conformance::deflate_tests!(InProcess(Smol));
anyws_conformance::transport_tests!(InProcess(Smol); tls, h2c);
