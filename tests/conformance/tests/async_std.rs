//! Every scenario of the suite against `anyws-async-std`, served in the test process on
//! async-std's executor. The accept loop is the application's own: each connection goes to
//! `anyws_async_std::serve_connection`, as in an app that embeds anyws on connections it
//! accepted itself. The WebSocket scenarios also run over TLS and over cleartext HTTP/2.

use anyws_conformance::{Adapter, InProcess, Routes};
use anyws_core::{Runtime, Server};
use anyws_hyper::tls::rustls::ServerConfig;
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
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = async_std::net::TcpListener::from(listener);
        spawn(async move {
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
            Ok(())
        })
    }

    /// With TLS, the accept loop is `anyws_async_std::serve_tls`'s.
    fn serve_tls(
        &self,
        listener: std::net::TcpListener,
        tls: Arc<ServerConfig>,
        server: Server,
        routes: Routes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = async_std::net::TcpListener::from(listener);
        spawn(anyws_async_std::serve_tls(listener, tls, server).fallback(routes))
    }
}

/// Runs `serve` on async-std's executor.
fn spawn<S>(serve: S) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: IntoFuture<Output = std::io::Result<()>> + Send + 'static,
    S::IntoFuture: Send,
{
    // Dropping the handle detaches the task.
    anyws_conformance::spawn_serving("anyws-async-std", serve, |task| {
        drop(async_std::task::spawn(task))
    })
}

anyws_conformance::tests!(InProcess(AsyncStd));
anyws_conformance::sse_tests!(InProcess(AsyncStd));
anyws_conformance::deflate_tests!(InProcess(AsyncStd));
anyws_conformance::transport_tests!(InProcess(AsyncStd); tls, h2c);
