//! The client on tokio: [`connect`], and [`connect_tls`] with the `tls` feature.

use anyws_core::client::Connector;
use anyws_core::{Client, ClientBuilder, ClientError};
use anyws_hyper::{ClientConnector, ClientSecurity, HyperIo};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connects `client` on tokio and runs its hooks in a tokio task; resolves once the
/// connection is open, or with the reason it could not be opened. `wss://` URLs need the `tls`
/// feature and are checked against the Mozilla root store (see [`connect_tls`] for others).
///
/// ```no_run
/// use anyws_core::{async_trait, ClientBuilder, Hooks, Message, Peer};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Hooks for Echo {
///     async fn message(&self, peer: &Peer, message: Message) {
///         let _ = peer.send(message);
///     }
/// }
///
/// # async fn run() -> Result<(), anyws_core::ClientError> {
/// let client = anyws_tokio::connect(ClientBuilder::new("ws://127.0.0.1:3000/", Echo)).await?;
/// client.closed().await;
/// # Ok(()) }
/// ```
pub async fn connect(client: ClientBuilder) -> Result<Client, ClientError> {
    client
        .connect_with(crate::runtime(), connector(ClientSecurity::default()))
        .await
}

/// [`connect`] with the rustls client configuration `tls` for `wss://` URLs, for example one
/// that trusts a private certificate authority.
#[cfg(feature = "tls")]
pub async fn connect_tls(
    client: ClientBuilder,
    tls: impl Into<std::sync::Arc<anyws_hyper::tls::rustls::ClientConfig>>,
) -> Result<Client, ClientError> {
    let security = ClientSecurity::with_config(tls);
    client
        .connect_with(crate::runtime(), connector(security))
        .await
}

/// Opens a client's streams on tokio: the host resolved and connected over TCP (with
/// `TCP_NODELAY`), then secured with `security` for `wss://`.
pub fn connector(security: ClientSecurity) -> impl Connector {
    ClientConnector::new(
        |host: String, port| async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            let _ = stream.set_nodelay(true);
            Ok(HyperIo::new(TokioIo::new(stream)))
        },
        security,
    )
}
