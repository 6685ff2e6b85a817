//! A chat room inside an actix-web app: ordinary actix routes next to a WebSocket route whose
//! handler hands actix's request and payload to anyws.
//!
//! ```text
//! cargo run -p actix-chat
//! ```
//!
//! Then connect two WebSocket clients to `ws://127.0.0.1:3000/ws` (`PORT` changes the port);
//! `GET /` answers with a line of text and `GET /online` with the number of peers.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyws::{async_trait, CloseInfo, Hooks, Message, Peer, Server, ServerBuilder};

/// One room: every message goes to every peer, the sender included.
struct Chat;

#[async_trait]
impl Hooks for Chat {
    async fn open(&self, peer: &Peer) {
        peer.subscribe("chat");
        peer.publish("chat", format!("{} joined", short(peer)));
    }

    async fn message(&self, peer: &Peer, message: Message) {
        let Ok(text) = message.text() else { return };
        let line = format!("{}: {text}", short(peer));
        let _ = peer.send(line.as_str());
        peer.publish("chat", line);
    }

    async fn close(&self, peer: &Peer, _info: CloseInfo) {
        peer.publish("chat", format!("{} left", short(peer)));
    }
}

fn short(peer: &Peer) -> String {
    peer.id().to_string()[..8].to_owned()
}

async fn ws(
    server: web::Data<Server>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    anyws::actix::upgrade(&server, &request, payload).await
}

async fn online(server: web::Data<Server>) -> HttpResponse {
    HttpResponse::Ok().body(server.peer_count().to_string())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(std::io::Error::other)?,
        Err(_) => 3000,
    };
    let server = ServerBuilder::new(Chat).build(anyws::actix::runtime());
    println!("actix chat on ws://127.0.0.1:{port}/ws");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(server.clone()))
            .route("/", web::get().to(|| async { "anyws inside actix-web" }))
            .route("/online", web::get().to(online))
            .route("/ws", web::get().to(ws))
    })
    // Drop a connection as soon as its peer is gone, and send small frames without delay.
    .client_disconnect_timeout(std::time::Duration::ZERO)
    .on_connect(|connection, _| {
        if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = stream.set_nodelay(true);
        }
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
