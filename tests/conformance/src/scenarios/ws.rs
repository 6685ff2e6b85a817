//! Routes, upgrade, messages and framing: the `conformance` app with the default limits.

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use super::shared;
use crate::client::*;
use crate::Harness;

on_a_default_server! {
    /// `GET /` answers 200.
    root_answers;
    /// `GET /peers` lists exactly the connected peers, by the ids of their welcome lines, and a
    /// cleanly closed peer leaves it.
    peers_route;
    /// `GET /publish` reaches the subscribers of every namespace, once.
    publish_every_namespace;
    /// `GET /publish` to a topic nobody is subscribed to is still 200 and delivers nothing.
    publish_nobody;
    /// `?unauthorized` is refused with exactly the response of the contract, and no peer appears.
    unauthorized;
    /// The `101` carries `x-powered-by: cross-ws` and exactly one `set-cookie`.
    accept_headers;
    /// `supported` is selected when offered, alone or among other names.
    subprotocol_selected;
    /// No other name is ever selected; `debug` still reports the raw header as the protocol.
    subprotocol_not_selected;
    /// The context is `{"test": "1"}`; `/` and `/?foo=bar` share namespace `/`, `/room-b` is its
    /// own; joins, publishes and `peers` stay within a namespace.
    context_and_namespaces;
    /// The welcome line comes first; `<id> joined!` reaches the others but not the joiner.
    open_order;
    /// `ping` answers `pong`.
    ping_pong;
    /// `binary`, as text or as a binary frame, answers a binary `binary message works!`.
    binary_command;
    /// Every field of the `debug` object.
    debug_fields;
    /// `peers` lists the peer's own namespace, itself included.
    peers_command;
    /// `waitForDrain` answers `drained`, after what was queued before it.
    wait_for_drain;
    /// Anything else comes back byte for byte (empty, 64 KiB, 1 MiB), reaches the other peers of
    /// the namespace once, and never comes back to the sender twice.
    echo_exact;
    /// A binary frame with other content comes back as text, and is published as text.
    binary_as_text;
    /// 200 messages sent back to back come back complete and in order.
    ordering;
    /// Fragmented messages, with a ping between fragments and a character cut across frames, are
    /// reassembled before the hook sees them.
    fragmentation;
    /// A ping control frame gets a pong with the same payload.
    ping_frame;
    /// The `ping` and `pong` hooks see every ping and pong frame the peer sends, oldest first
    /// (`ping-log`), and every ping still gets its pong; `ping me` sends the peer a ping.
    ping_pong_hooks;
    /// A close frame with a code and a reason gets a close back within 2 s, with the same code or
    /// 1000, and the peer leaves `/peers`.
    close_handshake;
    /// An unmasked frame is a protocol error: close 1002 or a dropped connection within 2 s, and
    /// the frame is not acted on.
    unmasked;
    /// Broken handshakes get a 4xx and the server keeps running.
    broken_handshakes;
    /// A connection dropped without a close frame leaves `/peers` within 2 s.
    abrupt_disconnect;
}

/// Every scenario that runs on a server with the default options, one after the other on the
/// same server; after each one no peer is left, and at the end `GET /` answers and a new peer
/// works and is the only one listed.
pub async fn server_survives_every_scenario(harness: &dyn Harness) {
    let f = Fixture::start_default(harness).await;
    macro_rules! run_all {
        ($($name:ident),* $(,)?) => {
            $(
                // Boxed: the scenarios' futures, nested in one, would not fit a test thread's
                // stack in a debug build.
                Box::pin(shared::$name(&f)).await;
                let (left, empty) = f.poll_peers(Duration::from_secs(2), |p| p.is_empty()).await;
                assert!(empty, "peers left behind by `{}`: {left:?}", stringify!($name));
            )*
        };
    }
    run_all!(
        unauthorized,
        broken_handshakes,
        unmasked,
        invalid_utf8,
        panic_closes_1011,
        abrupt_disconnect,
        close_handshake,
        fragmentation,
        ping_frame,
        ping_pong_hooks,
        subprotocol_not_selected,
        subprotocol_selected,
        accept_headers,
        ordering,
        echo_exact,
        wait_for_drain,
        binary_as_text,
        binary_command,
        debug_fields,
        context_and_namespaces,
        open_order,
        peers_command,
        publish_every_namespace,
        publish_nobody,
        peers_route,
    );
    shared::root_answers(&f).await;
    let (mut ws, id) = f.connect_peer("/").await;
    sync(&mut ws).await;
    f.assert_peers(&[&id]).await;
    send_text(&mut ws, "peers").await;
    assert_eq!(peer_list(&recv_json(&mut ws).await), [id]);
}

/// 20 messages of 1 MiB sent back to back, with the echoes read concurrently, all come back in
/// order (default limits: a 16 MiB send queue): a peer that reads its replies is never cut off
/// by its own traffic.
pub async fn back_to_back_1mib_messages(harness: &dyn Harness) {
    const COUNT: usize = 20;
    let f = Fixture::start_default(harness).await;
    let (ws, _) = f.connect_peer("/").await;
    let (mut sink, mut stream) = ws.split();
    let message = |i: usize| format!("{i:02}:{}", sample_text(1 << 20));
    let send = async {
        for i in 0..COUNT {
            sink.send(Message::text(message(i))).await.expect("send");
        }
    };
    let receive = async {
        for i in 0..COUNT {
            let next = tokio::time::timeout(TIMEOUT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("echo {i} did not come back"));
            match next {
                Some(Ok(Message::Text(text))) => {
                    assert!(text.as_str() == message(i), "echo {i} differs")
                }
                Some(Ok(other)) => panic!("after {i} echoes: {}", describe(&other)),
                other => panic!("after {i} echoes: {other:?}"),
            }
        }
    };
    tokio::join!(send, receive);
    let mut ws = sink.reunite(stream).expect("reunite");
    sync(&mut ws).await;
}
