//! The check every echo example's test runs: start the example on a free port and have a real
//! WebSocket client (tungstenite) get its text and binary messages back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tungstenite::Message;

/// The example's process, killed when the check ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the example `binary` with `PORT=0` and checks that it echoes.
pub(crate) fn echoes(binary: &str) {
    let mut example = Running(
        Command::new(binary)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the example starts"),
    );
    let mut line = String::new();
    let stdout = example.0.stdout.take().expect("stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the example prints its address");
    let url = line
        .trim()
        .strip_prefix("echo server on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let (mut socket, _) = tungstenite::connect(url).expect("a WebSocket client connects");
    for message in [Message::text("hello"), Message::binary(vec![0, 1, 2, 255])] {
        socket.send(message.clone()).expect("sends");
        assert_eq!(socket.read().expect("reads the echo"), message);
    }
    socket.close(None).expect("closes");
}
