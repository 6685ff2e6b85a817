//! The client on smol: [`connect`], and [`connect_tls`] with the `tls` feature.

use anyws_core::client::Connector;
use anyws_core::{Client, ClientBuilder, ClientError};
use anyws_hyper::{ClientConnector, ClientSecurity};
use smol::net::TcpStream;

/// Connects `client` on smol and runs its hooks in a task of smol's global executor; resolves
/// once the connection is open, or with the reason it could not be opened. `wss://` URLs need
/// the `tls` feature and are checked against the Mozilla root store (see [`connect_tls`] for
/// others).
///
/// ```no_run
/// # struct Bot;
/// # impl anyws_core::Hooks for Bot {}
/// # async fn run() -> Result<(), anyws_core::ClientError> {
/// let client = anyws_smol::connect(anyws_core::ClientBuilder::new("ws://127.0.0.1:3000/", Bot)).await?;
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

/// Opens a client's streams on async-io (smol, and async-std, whose sockets are async-io
/// sockets too): the host resolved and connected over TCP (with `TCP_NODELAY`), then secured
/// with `security` for `wss://`.
pub fn connector(security: ClientSecurity) -> impl Connector {
    ClientConnector::new(
        |host: String, port| async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        },
        security,
    )
}
