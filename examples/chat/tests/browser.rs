//! The chat demo in a real browser: headless Chromium (Debian's `/usr/bin/chromium`), driven by
//! playwright-core from node, against the `chat` binary. Each test runs one scenario of
//! `tests/browser/chat.cjs`, which starts the server on a free port, checks the pages (messages
//! both ways, `#status`, join and leave lines, no console errors; on WebSocket pages, that
//! Chromium negotiated permessage-deflate, as the `101` it received says, and that a line above
//! the compression threshold reaches both pages) and saves a screenshot to
//! `target/browser/chat-<scenario>.png`.
//!
//! `bash scripts/browser-setup.sh` installs what this needs (chromium, node and npm when missing,
//! playwright-core into `target/browser`); `scripts/test.sh` runs it first.
//!
//! ```text
//! bash scripts/browser-setup.sh && cargo test -p chat --test browser
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One browser at a time: the scenarios would otherwise compete for the same few cores.
static BROWSER: Mutex<()> = Mutex::new(());

/// Runs one scenario of `chat.cjs` and fails with its output unless every check held.
fn scenario(name: &str) {
    scenario_with(name, &[]);
}

/// [`scenario`] with extra environment variables for the chat server.
fn scenario_with(name: &str, env: &[(&str, &Path)]) {
    let _one_at_a_time = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // `CARGO_TARGET_TMPDIR` is `<target dir>/tmp`; the setup script installs into
    // `<target dir>/browser`.
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("browser");
    let node_modules = out_dir.join("node_modules");
    let chromium =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    let setup =
        "run `bash scripts/browser-setup.sh` (it installs chromium, node and playwright-core)";
    assert!(
        chromium.exists(),
        "no browser at {}: {setup}",
        chromium.display()
    );
    assert!(
        node_modules.join("playwright-core").is_dir(),
        "playwright-core is not in {}: {setup}",
        node_modules.display()
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat.cjs");
    let output = Command::new("node")
        .arg(&script)
        .arg(name)
        .env("CHAT_BIN", env!("CARGO_BIN_EXE_chat"))
        .env("NODE_MODULES", &node_modules)
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|error| panic!("cannot run node ({error}): {setup}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    print!("{stdout}");
}

#[test]
fn websocket_pages_chat_both_ways_and_see_joins_and_leaves() {
    scenario("websocket");
}

#[test]
fn websocket_page_reconnects_after_the_server_restarts() {
    scenario("restart");
}

// The same over the SSE transport (`?transport=sse`), and both transports in one room.

#[test]
fn sse_pages_chat_both_ways_and_see_joins_and_leaves() {
    scenario("sse");
}

#[test]
fn websocket_page_and_sse_page_see_each_other() {
    scenario("mixed");
}

#[test]
fn sse_page_reconnects_after_the_server_restarts() {
    scenario("sse-restart");
}

/// Over HTTPS with a throwaway certificate: Chromium loads the page over HTTP/2 and opens the
/// WebSocket on that connection (RFC 8441), and the chat works as over HTTP/1.1.
#[test]
fn https_pages_chat_over_http2() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-https");
    std::fs::create_dir_all(&dir).expect("a directory for the certificate");
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key.pem");
    scenario_with("https", &[("TLS_CERT", &cert), ("TLS_KEY", &key)]);
}
