//! The lifecycle guarantees of "`/peers` must stay accurate": a peer is listed from the moment
//! its client sees the `101`, and a peer the server closes leaves within 3 seconds whatever its
//! client does (stops reading, never answers the close, stops in the middle of a frame), also
//! during a graceful shutdown.

use futures_util::future::join_all;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::client::*;
use crate::{Harness, Options};

/// How long a peer the server closed may stay listed: the contract's 3 seconds.
const LEAVE: Duration = Duration::from_secs(3);

/// `max_buffered_bytes(1 MiB)`: a client that reads its welcome line and then never reads
/// again, while another peer publishes 64 KiB messages to it, is closed, and leaves `/peers`
/// within 3 s although not even its close frame can be written. The publisher sends 200
/// messages (12.5 MiB, far more than the stalled peer's queue and socket buffers hold), so the
/// server decided to close it before the last one; from then on, the clock runs.
pub async fn stalled_peer_leaves_after_its_close(harness: &dyn Harness) {
    const COUNT: usize = 200;
    const SIZE: usize = 64 * 1024;
    let f = Fixture::start(harness, Options::new().max_buffered_bytes(1 << 20)).await;
    let (stalled, stalled_id) = f.stalled_peer("/").await;
    let (mut publisher, publisher_id) = f.connect_peer("/").await;
    let payload = "p".repeat(SIZE);
    for i in 0..COUNT {
        send_text(&mut publisher, payload.clone()).await;
        let echo = recv_text(&mut publisher).await;
        assert!(echo.len() == SIZE, "publisher: echo {i} differs");
    }
    let decided_by = Instant::now();
    f.assert_leaves(&stalled_id, LEAVE).await;
    eprintln!(
        "the stalled peer left {:?} after the last publish",
        decided_by.elapsed()
    );
    f.assert_peers(&[&publisher_id]).await;
    // The server let go of the connection too: what the client still reads ends.
    let mut stalled = stalled;
    read_to_end(&mut stalled.stream, LEAVE).await;
    sync(&mut publisher).await;
}

/// A client that makes the server close it (a frame over `max_message_size`, of which it sends
/// only the header and part of the payload) and then neither reads, answers the close nor sends
/// the rest of the frame: the peer leaves `/peers` and the connection is closed within 3 s. So
/// does a client that sends a close of its own and never reads the answer.
pub async fn unanswered_close_leaves(harness: &dyn Harness) {
    let f = Fixture::start(harness, Options::new().max_message_size(1024)).await;
    let (mut half, half_id) = f.raw_peer("/").await;
    let (mut closer, closer_id) = f.raw_peer("/").await;
    let (mut other, other_id) = f.connect_peer("/").await;

    // A masked text frame that declares 2,000 bytes; 100 of them are sent.
    let frame = encode_frame(true, OP_TEXT, &[b'x'; 2000], true);
    half.write(&frame[..frame.len() - 1900]).await;
    closer
        .send_frame(true, OP_CLOSE, &close_payload(1000, "bye"), true)
        .await;
    let sent = Instant::now();
    tokio::join!(
        f.assert_leaves(&half_id, LEAVE),
        f.assert_leaves(&closer_id, LEAVE)
    );
    // Neither client read anything; now both find their connection ended.
    tokio::join!(
        read_to_end(&mut half.stream, LEAVE.saturating_sub(sent.elapsed())),
        read_to_end(&mut closer.stream, LEAVE.saturating_sub(sent.elapsed())),
    );
    f.assert_peers(&[&other_id]).await;
    sync(&mut other).await;
}

/// A graceful shutdown with a stalled peer whose socket is full and whose queue still holds
/// data (8 MiB published to it) ends within its deadline; the peer that reads gets its 1001.
pub async fn shutdown_with_a_stalled_peer(harness: &dyn Harness) {
    let mut f = Fixture::start_default(harness).await;
    let (_stalled, _) = f.stalled_peer("/").await;
    let (mut publisher, _) = f.connect_peer("/").await;
    let payload = "s".repeat(64 * 1024);
    for _ in 0..128 {
        send_text(&mut publisher, payload.clone()).await;
        assert_eq!(recv_text(&mut publisher).await.len(), payload.len());
    }
    let started = Instant::now();
    let (stopped, ending) = tokio::join!(
        f.shut_down(Duration::from_secs(2)),
        expect_close(&mut publisher, Duration::from_secs(2)),
    );
    assert_eq!(ending, Ending::Close(1001), "the publisher");
    assert_stopped(stopped, started);
}

/// Many clients, each asking `GET /peers` as soon as its `101` arrives (before it reads
/// anything, on a connection opened beforehand), all at once and in several rounds: every one
/// finds itself listed.
pub async fn peers_listed_from_open(harness: &dyn Harness) {
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 30;
    let f = Fixture::start_default(harness).await;
    for round in 0..ROUNDS {
        let clients = (0..CLIENTS).map(|_| async {
            let mut probe = f.open_stream().await;
            let mut ws = f.connect("/").await;
            let get = format!(
                "GET /peers HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                f.addr()
            );
            probe.write_all(get.as_bytes()).await.expect("write");
            let response = read_response(&mut probe, &mut Vec::new()).await;
            assert_eq!(response.status, 200, "GET /peers: {}", response.status_line);
            let listed =
                peer_list(&serde_json::from_slice(&response.body).expect("/peers is JSON"));
            let (id, _) = welcome(&mut ws).await;
            (ws, id, listed)
        });
        let opened = join_all(clients).await;
        for (_, id, listed) in &opened {
            assert!(
                listed.iter().any(|p| is_id(p, id)),
                "round {round}: peer {id} was not listed by a GET /peers sent after its open: \
                 {listed:?}"
            );
        }
        drop(opened);
        f.poll_peers(TIMEOUT, |peers| peers.is_empty()).await;
    }
}

/// Reads and drops whatever arrives until the server closes the connection (EOF or reset);
/// panics when it is still open after `timeout`.
async fn read_to_end(stream: &mut (impl AsyncRead + Unpin), timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for more than {timeout:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}
