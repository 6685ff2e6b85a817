//! An anyws chat room whose counters are scraped by Prometheus: the `metrics` feature reports
//! peers, messages, bytes, closes, refused upgrades and histograms of publish fan-out and
//! handshake time through the `metrics` facade, and `metrics-exporter-prometheus` renders them
//! at `GET /metrics` on the same port as the WebSocket endpoint.
//!
//! ```text
//! cargo run -p metrics-prometheus
//! ```
//!
//! then connect WebSocket clients to `ws://127.0.0.1:3000/` and read
//! `http://127.0.0.1:3000/metrics`. `PORT` changes the port.

use anyws::{async_trait, Hooks, Message, Peer};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Every message goes back to its sender and to the rest of the room.
struct Room;

#[async_trait]
impl Hooks for Room {
    async fn open(&self, peer: &Peer) {
        peer.subscribe("room");
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let _ = peer.send(message.clone());
        peer.publish("room", message);
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // The recorder must be installed before the server counts anything.
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("metrics example on ws://{}/", listener.local_addr()?);
    anyws::tokio::serve(listener, anyws::tokio::server(Room))
        .fallback(move |request: http::Request<_>| {
            let response = match request.uri().path() {
                "/metrics" => http::Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(bytes::Bytes::from(prometheus.render()))),
                _ => http::Response::builder()
                    .status(http::StatusCode::NOT_FOUND)
                    .body(Full::new(bytes::Bytes::from_static(b"not found"))),
            };
            std::future::ready(response.unwrap_or_default())
        })
        .await
}
