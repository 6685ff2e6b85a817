//! The example echoes a real WebSocket client's text and binary messages.

#[path = "../../echo-tokio/tests/support/echo.rs"]
mod support;

#[test]
fn echoes_text_and_binary_messages() {
    support::echoes(env!("CARGO_BIN_EXE_echo-async-std"));
}
