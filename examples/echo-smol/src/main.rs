//! The smallest anyws server on smol: every message comes back to its sender.
//!
//! ```text
//! cargo run -p echo-smol
//! ```
//!
//! then connect any WebSocket client to `ws://127.0.0.1:3000/`. `PORT` changes the port.

use anyws::{async_trait, Hooks, Message, Peer};

struct Echo;

#[async_trait]
impl Hooks for Echo {
    async fn message(&self, peer: &Peer, message: Message) {
        let _ = peer.send(message);
    }
}

fn main() -> std::io::Result<()> {
    smol::block_on(async {
        let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
        let listener = smol::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
        println!("echo server on ws://{}/", listener.local_addr()?);
        anyws::smol::serve(listener, anyws::smol::server(Echo)).await
    })
}
