//! What the runtime adapters' client connectors share: securing a `wss://` stream.
//!
//! Each adapter opens the TCP stream with its runtime; [`ClientSecurity::secure`] then runs
//! the TLS handshake over it with [`TlsStream`](crate::tls::TlsStream) (runtime-free) when the
//! URL is `wss://`
//! (feature `tls`), and hands it on as the core's [`ClientIo`].
//!
//! ```
//! # async fn run(tcp: impl anyws_core::client::ClientIo) -> std::io::Result<()> {
//! use anyws_core::client::Target;
//! use anyws_hyper::ClientSecurity;
//!
//! let target = Target::new("127.0.0.1", 80, false);
//! let io = ClientSecurity::default().secure(&target, tcp).await?;
//! # let _ = io; Ok(()) }
//! ```

use anyws_core::client::{ClientIo, ConnectFuture, Connector, Target};
use std::future::Future;
use std::io;

/// How a client connector secures `wss://` streams: with the TLS settings given (feature
/// `tls`), by default rustls with the Mozilla root store of `webpki-roots`. Without the `tls`
/// feature a `wss://` URL fails to connect with an error that says so.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    #[cfg(feature = "tls")]
    config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ClientSecurity {
    /// TLS with `config` instead of the default, for example to trust a private certificate
    /// authority or to present a client certificate.
    #[cfg(feature = "tls")]
    pub fn with_config(config: impl Into<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        Self {
            config: Some(config.into()),
        }
    }

    /// `io` as it is for a `ws://` target; for `wss://`, after a TLS handshake with
    /// `target.host` as the server name.
    pub async fn secure<S: ClientIo>(
        &self,
        target: &Target,
        io: S,
    ) -> io::Result<Box<dyn ClientIo>> {
        if !target.secure {
            return Ok(Box::new(io));
        }
        #[cfg(feature = "tls")]
        {
            let config = match &self.config {
                Some(config) => config.clone(),
                None => crate::tls::default_client_config(),
            };
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = crate::tls::TlsStream::connect(io, config, name).await?;
            Ok(Box::new(stream))
        }
        #[cfg(not(feature = "tls"))]
        {
            drop(io);
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "wss:// needs the `tls` feature",
            ))
        }
    }
}

/// A [`Connector`] made of a function that opens a TCP stream to a host and port with some
/// runtime, and the [`ClientSecurity`] for `wss://`: what each runtime adapter's `connect`
/// uses.
#[derive(Clone, Debug)]
pub struct ClientConnector<F> {
    open: F,
    security: ClientSecurity,
}

impl<F> ClientConnector<F> {
    /// A connector that opens streams with `open(host, port)` and secures them with
    /// `security`.
    pub fn new(open: F, security: ClientSecurity) -> Self {
        Self { open, security }
    }
}

impl<F, Fut, S> Connector for ClientConnector<F>
where
    F: Fn(String, u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: ClientIo,
{
    fn connect(&self, target: &Target) -> ConnectFuture {
        let (target, security) = (target.clone(), self.security.clone());
        let opening = (self.open)(target.host.clone(), target.port);
        Box::pin(async move { security.secure(&target, opening.await?).await })
    }
}
