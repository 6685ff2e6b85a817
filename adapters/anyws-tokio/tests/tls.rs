//! `serve_tls`: `wss://` with certificates replaced while running, without dropping peers.

use anyws_core::{async_trait, Hooks, Message, Peer};
use anyws_hyper::tls::rustls::pki_types::{CertificateDer, ServerName};
use anyws_hyper::tls::rustls::{ClientConfig, RootCertStore};
use anyws_hyper::tls::{server_config, Certificates};
use futures_util::{SinkExt, StreamExt};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite;

struct Echo;

#[async_trait]
impl Hooks for Echo {
    async fn message(&self, peer: &Peer, message: Message) {
        let _ = peer.send(message);
    }
}

/// A self-signed certificate for `localhost` as PEM files in `dir`, and its DER form.
fn certificate(dir: &PathBuf) -> CertificateDer<'static> {
    std::fs::create_dir_all(dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    made.cert.der().clone()
}

/// A connector that trusts `root` only.
fn trusting(root: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(anyws_hyper::tls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn open(connector: &TlsConnector, addr: std::net::SocketAddr) -> std::io::Result<Wss> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let url = format!("wss://localhost:{}/", addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .map_err(std::io::Error::other)?;
    Ok(ws)
}

async fn echo(ws: &mut Wss, text: &str) {
    ws.send(tungstenite::Message::text(text)).await.unwrap();
    match ws.next().await {
        Some(Ok(tungstenite::Message::Text(got))) => assert_eq!(got.as_str(), text),
        other => panic!("expected the echo of {text}, got {other:?}"),
    }
}

#[tokio::test]
async fn certificates_are_replaced_without_dropping_peers() {
    let base = std::env::temp_dir().join(format!("anyws-tokio-tls-{}", std::process::id()));
    let (first_dir, second_dir) = (base.join("first"), base.join("second"));
    let first = certificate(&first_dir);
    let second = certificate(&second_dir);
    let certificates =
        Certificates::from_pem_files(first_dir.join("cert.pem"), first_dir.join("key.pem"))
            .unwrap();

    let server = anyws_tokio::server(Echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server_config(certificates.clone());
    tokio::spawn(anyws_tokio::serve_tls(listener, tls, server.clone()).into_future());

    let mut before = open(&trusting(&first), addr)
        .await
        .expect("wss:// with the first certificate");
    echo(&mut before, "one").await;
    // Not trusted: the second certificate is not served yet.
    assert!(open(&trusting(&second), addr).await.is_err());

    certificates
        .reload_pem_files(second_dir.join("cert.pem"), second_dir.join("key.pem"))
        .unwrap();
    let mut after = open(&trusting(&second), addr)
        .await
        .expect("wss:// with the second certificate");
    echo(&mut after, "two").await;
    assert!(
        open(&trusting(&first), addr).await.is_err(),
        "the first certificate is gone"
    );
    // The peer that opened before the reload carries on.
    echo(&mut before, "still here").await;
    assert_eq!(server.peers().len(), 2);

    drop((before, after));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(base);
}
