//! (b) The frame and message path: arbitrary bytes, as the client side of an upgraded
//! connection, fed in arbitrary pieces to `PendingPeer::run` over an in-memory stream, with small
//! limits (message and frame size, send queue, message rate), an app that echoes and publishes,
//! and the fail-fast UTF-8 check. The run must end (the input ends with end of stream) without a
//! panic, whatever the bytes.
#![no_main]

use anyws_core::http::Request as HttpRequest;
use anyws_core::{MessageRate, Request, ServerBuilder};
use anyws_fuzz::{poll_to_end, EchoApp, ManualRuntime, MemoryStream};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn server() -> &'static anyws_core::Server {
    static SERVER: OnceLock<anyws_core::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        ServerBuilder::new(EchoApp)
            .max_message_size(4096)
            .max_frame_size(2048)
            .max_buffered_bytes(8192)
            .message_rate(Some(MessageRate::new(1000, 200)))
            .close_timeout(Duration::ZERO)
            .build(Arc::new(ManualRuntime))
    })
}

fn upgrade_request() -> Request {
    let request = HttpRequest::get("/")
        .header("host", "fuzz")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(())
        .expect("a valid request");
    Request::new(request.into_parts().0, None)
}

fuzz_target!(|data: &[u8]| {
    // The first bytes say how the rest is cut into reads and when writes wait.
    let split = usize::from(data.first().copied().unwrap_or(0) % 16).min(data.len());
    let (chunks, input) = data.split_at(split);
    let handshake =
        poll_to_end(server().handshake(upgrade_request()), 100).expect("the handshake waits");
    let (response, peer) = handshake.into_parts();
    assert_eq!(response.status(), 101);
    let peer = peer.expect("an accepted peer");
    let mut stream = MemoryStream::new(input, chunks);
    let run = peer.run(&mut stream);
    // Every poll makes progress on the input or the output; the bound only catches a hang.
    let bound = 64 + input.len() * 16;
    assert!(
        poll_to_end(run, bound).is_some(),
        "the connection did not end"
    );
    assert_eq!(server().peer_count(), 0);
    assert_eq!(server().connection_count(), 0);
});
