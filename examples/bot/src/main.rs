//! A bot: a WebSocket client with the same hooks as a server. It greets the room, answers `ping`
//! with `pong`, prints everything else, and reconnects (with backoff) when the server goes away.
//!
//! ```text
//! cargo run -p chat                # the chat demo to talk to, in another terminal
//! cargo run -p bot -- ws://127.0.0.1:3000/_ws   # its room, as the page joins it
//! ```

use anyws::{async_trait, Backoff, ClientBuilder, Hooks, Message, Peer};

struct Bot;

#[async_trait]
impl Hooks for Bot {
    async fn open(&self, peer: &Peer) {
        let _ = peer.send("hello from the bot");
    }

    async fn message(&self, peer: &Peer, message: Message) {
        match message.text() {
            Ok("ping") => drop(peer.send("pong")),
            Ok(text) => println!("{text}"),
            Err(_) => println!("({} bytes of binary)", message.len()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), anyws::ClientError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("ws://127.0.0.1:3000/_ws".into());
    let client = ClientBuilder::new(url, Bot).reconnect(Backoff::new());
    anyws::tokio::connect(client).await?.closed().await;
    Ok(())
}
