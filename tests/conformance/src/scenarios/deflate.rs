//! permessage-deflate (RFC 7692): the `101` per mode, compressed echoes, compressing and plain
//! peers in one topic, and bad compressed input. Each scenario takes the server's [`Mode`];
//! [`deflate_tests!`](crate::deflate_tests) runs every one in both. The compressing client is
//! [`DeflateWs`], with a codec of its own (flate2), never the server's.

use std::time::Duration;

use crate::client::*;
use crate::deflate_client::*;
use crate::{App, Harness, Options};

const TWO_S: Duration = Duration::from_secs(2);

/// The server's `--deflate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--deflate shared`: no context takeover on either side.
    Shared,
    /// `--deflate dedicated`: context takeover as the client offers it.
    Dedicated,
}

impl Mode {
    /// The server's options with this mode.
    pub fn options(self) -> Options {
        Options::new().deflate(match self {
            Mode::Shared => anyws_core::Deflate::shared(),
            Mode::Dedicated => anyws_core::Deflate::dedicated(),
        })
    }
}

/// What browsers offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// `debug.websocket.extensions` of a conformance-app peer.
async fn debug_extensions(ws: &mut DeflateWs) -> String {
    ws.send_plain(OP_TEXT, b"debug").await;
    let debug: serde_json::Value =
        serde_json::from_slice(&ws.recv().await.payload).expect("debug is JSON");
    debug["websocket"]["extensions"]
        .as_str()
        .unwrap_or_else(|| panic!("no websocket.extensions: {debug}"))
        .to_owned()
}

/// Upgrades offering `offer` and asserts that the `101` holds no extension, that
/// `debug.websocket.extensions` is the request's header, and that a message above the
/// threshold goes both ways uncompressed.
async fn declined(f: &Fixture, offer: &str) {
    let (response, raw) = f
        .raw_upgrade("/", &[&format!("Sec-WebSocket-Extensions: {offer}")])
        .await;
    assert_eq!(response.status, 101, "{offer}: {}", response.status_line);
    assert_eq!(
        response.header("sec-websocket-extensions"),
        None,
        "the offer {offer:?} cannot be honoured"
    );
    let agreed = Agreed {
        name: "permessage-deflate".to_owned(),
        params: Vec::new(),
    };
    let mut ws = DeflateWs {
        raw,
        codec: Codec::new(&agreed, 6),
        agreed,
    };
    ws.welcome().await;
    assert_eq!(debug_extensions(&mut ws).await, offer);
    let text = sample_text(1000);
    ws.send_plain(OP_TEXT, text.as_bytes()).await;
    let echo = ws.recv_text_eq(&text).await;
    assert!(!echo.compressed, "{offer}: RSV1 without the extension");
}

/// The `101` per mode: shared answers with both `*_no_context_takeover`; dedicated keeps the
/// context as offered (and drops only what the client asked to drop);
/// `debug.websocket.extensions` is the answer. An offer the server cannot honour
/// (`server_max_window_bits=8`, an unknown parameter) gets no extension and works
/// uncompressed; of several offers the first that can be honoured wins, and its
/// `server_max_window_bits` holds (the server's messages inflate with that window).
pub async fn negotiation(harness: &dyn Harness, mode: Mode) {
    let f = Fixture::start(harness, mode.options()).await;

    let (mut ws, value) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    match mode {
        Mode::Shared => {
            assert!(ws.agreed.has("server_no_context_takeover"), "{value}");
            assert!(ws.agreed.has("client_no_context_takeover"), "{value}");
        }
        Mode::Dedicated => {
            assert!(!ws.agreed.has("server_no_context_takeover"), "{value}");
            assert!(!ws.agreed.has("client_no_context_takeover"), "{value}");
        }
    }
    ws.welcome().await;
    assert_eq!(debug_extensions(&mut ws).await, value);

    // The client gives up its own context: dedicated keeps the server's.
    let offer = "permessage-deflate; client_no_context_takeover";
    let (mut ws, value) = DeflateWs::connect(&f, "/", offer).await;
    assert!(ws.agreed.has("client_no_context_takeover"), "{value}");
    assert_eq!(
        ws.agreed.has("server_no_context_takeover"),
        mode == Mode::Shared,
        "{value}"
    );
    ws.welcome().await;
    assert_eq!(debug_extensions(&mut ws).await, value);

    declined(&f, "permessage-deflate; server_max_window_bits=8").await;
    declined(&f, "permessage-deflate; foo=1").await;
    declined(&f, "x-webkit-deflate-frame").await;

    // Several offers, the first one unusable: the second (a 1 KiB window) wins.
    let offers = "permessage-deflate; server_max_window_bits=8, \
                  permessage-deflate; server_max_window_bits=10";
    let (mut ws, value) = DeflateWs::connect(&f, "/", offers).await;
    assert_eq!(
        ws.agreed.bits("server_max_window_bits"),
        Some(10),
        "{value}"
    );
    ws.welcome().await;
    assert_eq!(debug_extensions(&mut ws).await, value);
    let text = String::from_utf8(far_repeats(20_000)).expect("ASCII");
    ws.send_compressed(OP_TEXT, text.as_bytes()).await;
    // Only the echo comes back: the publish of it skips the sender.
    let echo = ws.recv_text_eq(&text).await;
    assert!(echo.compressed, "a 20 KB echo is compressed");
}

/// Echo (the `echo` app) of compressed text and binary messages: 200 KiB ones, several in a
/// row, come back compressed and intact; one under the threshold (128 B) comes back with RSV1
/// clear, whether it went compressed or not; a compressed message in three fragments comes
/// back whole. In dedicated mode the server keeps its context: a repeated message comes back
/// far smaller than the first time.
pub async fn echo(harness: &dyn Harness, mode: Mode) {
    let f = Fixture::start(harness, mode.options().app(App::Echo)).await;
    let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;

    let text = sample_text(200 * 1024);
    let binary: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    for round in 0..2 {
        ws.send_compressed(OP_TEXT, text.as_bytes()).await;
        let echo = ws.recv_text_eq(&text).await;
        assert!(
            echo.compressed,
            "round {round}: the text echo has RSV1 clear"
        );
        assert!(echo.wire_len < text.len() / 2, "{} bytes", echo.wire_len);
        ws.send_compressed(OP_BINARY, &binary).await;
        let echo = ws.recv().await;
        assert_eq!(echo.opcode, OP_BINARY);
        assert!(
            echo.payload == binary,
            "round {round}: the binary echo differs"
        );
        assert!(
            echo.compressed,
            "round {round}: the binary echo has RSV1 clear"
        );
    }

    let small = b"under the threshold".as_slice();
    ws.send_compressed(OP_TEXT, small).await;
    let echo = ws.recv().await;
    assert_eq!(echo.payload, small);
    assert!(!echo.compressed, "a 19-byte message came back compressed");
    ws.send_plain(OP_BINARY, small).await;
    let echo = ws.recv().await;
    assert_eq!((echo.opcode, echo.payload.as_slice()), (OP_BINARY, small));
    assert!(!echo.compressed, "a 19-byte message came back compressed");

    let fragmented = sample_text(20_000);
    ws.send_compressed_fragments(OP_TEXT, fragmented.as_bytes(), 3)
        .await;
    let echo = ws.recv_text_eq(&fragmented).await;
    assert!(echo.compressed);

    // A 4000-byte message that does not compress on its own, twice.
    let block = far_repeats(1500);
    let once: Vec<u8> = block.iter().chain(&block[..1000]).copied().collect();
    let mut sizes = Vec::new();
    for _ in 0..2 {
        ws.send_compressed(OP_BINARY, &once).await;
        let echo = ws.recv().await;
        assert!(echo.payload == once && echo.compressed, "{echo:?}");
        sizes.push(echo.wire_len);
    }
    match mode {
        Mode::Shared => assert_eq!(sizes[0], sizes[1], "no context: the same bytes"),
        Mode::Dedicated => assert!(
            sizes[1] * 10 < sizes[0],
            "with context takeover the repeat refers back: {sizes:?}"
        ),
    }
}

/// A compressing peer and a plain one in one topic: a publish above the threshold reaches
/// both with the same text, compressed (RSV1) to the first and plain to the second; one under
/// the threshold reaches both plain; a compressed message published by the compressing peer
/// reaches the plain one as plain text.
pub async fn mixed_peers_in_a_topic(harness: &dyn Harness, mode: Mode) {
    let f = Fixture::start(harness, mode.options()).await;
    let (mut compressing, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    compressing.welcome().await;
    let (mut plain, plain_id) = f.raw_peer("/").await;
    compressing
        .recv_text_eq(&format!("{plain_id} joined!"))
        .await;
    let (mut publisher, publisher_id) = f.connect_peer("/").await;
    let joined = format!("{publisher_id} joined!");
    compressing.recv_text_eq(&joined).await;
    let frame = plain.read_data().await;
    assert_eq!(frame.payload, joined.as_bytes());

    for len in [1000, 100] {
        let text = sample_text(len);
        send_text(&mut publisher, text.clone()).await;
        assert_same_text("the echo", &recv_text(&mut publisher).await, &text);
        let got = compressing.recv_text_eq(&text).await;
        assert_eq!(got.compressed, len >= 128, "RSV1 of a {len}-byte publish");
        let frame = plain.read_data().await;
        assert!(!frame.rsv1, "RSV1 to a peer without the extension");
        assert_eq!(frame.opcode, OP_TEXT);
        assert_same_text(
            "the plain peer's copy",
            &String::from_utf8_lossy(&frame.payload),
            &text,
        );
    }

    let text = sample_text(5000);
    compressing.send_compressed(OP_TEXT, text.as_bytes()).await;
    assert!(compressing.recv_text_eq(&text).await.compressed);
    let frame = plain.read_data().await;
    assert!(!frame.rsv1 && frame.fin && frame.opcode == OP_TEXT);
    assert_same_text(
        "the plain peer's copy",
        &String::from_utf8_lossy(&frame.payload),
        &text,
    );
    assert_same_text(
        "the publisher's copy",
        &recv_text(&mut publisher).await,
        &text,
    );
}

/// Bad input, with `--max-message-size 65536`: 16 MiB of zeros compressed to a few KiB closes
/// 1009 (and a server in a process of its own does not grow by megabytes inflating it); data
/// that does not inflate closes 1007 or 1002; RSV1 without the extension, on a ping, or on a
/// continuation frame closes 1002. After each, a new compressing peer is served.
pub async fn bad_input(harness: &dyn Harness, mode: Mode) {
    let f = Fixture::start(harness, mode.options().max_message_size(65536)).await;

    let served = || async {
        let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
        ws.welcome().await;
        let text = sample_text(3000);
        ws.send_compressed(OP_TEXT, text.as_bytes()).await;
        assert!(ws.recv_text_eq(&text).await.compressed);
    };

    // The bomb.
    let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    ws.welcome().await;
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let bomb = deflate(&mut compress, &vec![0; 16 << 20]);
    assert!(
        bomb.len() < 65536,
        "the bomb fits the limit: {}",
        bomb.len()
    );
    let memory_before = f.peak_rss_kib();
    ws.raw
        .write(&encode_frame_rsv1(true, true, OP_BINARY, &bomb, true))
        .await;
    assert_eq!(ws.raw.expect_close(TWO_S).await, Ending::Close(1009));
    if let (Some(before), Some(after)) = (memory_before, f.peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 8 * 1024,
            "the server grew from {before} KiB to {after} KiB inflating a bomb"
        );
    }
    served().await;

    // Garbage: a block of the reserved type 3.
    let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    ws.welcome().await;
    ws.raw
        .write(&encode_frame_rsv1(true, true, OP_TEXT, &[0xff; 200], true))
        .await;
    let ending = ws.raw.expect_close(TWO_S).await;
    assert!(
        matches!(ending, Ending::Close(1007 | 1002)),
        "garbage: {ending:?}"
    );
    served().await;

    // RSV1 without the extension.
    let (mut raw, _) = f.raw_peer("/").await;
    let compressed = deflate(
        &mut flate2::Compress::new(flate2::Compression::fast(), false),
        &[b'x'; 500],
    );
    raw.write(&encode_frame_rsv1(true, true, OP_TEXT, &compressed, true))
        .await;
    assert_eq!(raw.expect_close(TWO_S).await, Ending::Close(1002));
    served().await;

    // RSV1 on a ping, and on a continuation frame.
    let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    ws.welcome().await;
    ws.raw
        .write(&encode_frame_rsv1(true, true, OP_PING, b"rsv1", true))
        .await;
    assert_eq!(ws.raw.expect_close(TWO_S).await, Ending::Close(1002));
    let (mut ws, _) = DeflateWs::connect(&f, "/", BROWSER_OFFER).await;
    ws.welcome().await;
    let compressed = ws.codec.compress(sample_text(1000).as_bytes());
    let (head, tail) = compressed.split_at(compressed.len() / 2);
    let mut frames = encode_frame_rsv1(false, true, OP_TEXT, head, true);
    frames.extend(encode_frame_rsv1(true, true, OP_CONTINUATION, tail, true));
    ws.raw.write(&frames).await;
    assert_eq!(ws.raw.expect_close(TWO_S).await, Ending::Close(1002));
    served().await;

    let root = f.get("/").await;
    assert_eq!(root.status, 200, "GET /: {}", root.status_line);
}
