//! The smallest anyws server on async-std: every message comes back to its sender.
//!
//! ```text
//! cargo run -p echo-async-std
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

#[async_std::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = async_std::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("echo server on ws://{}/", listener.local_addr()?);
    anyws::async_std::serve(listener, anyws::async_std::server(Echo)).await
}
