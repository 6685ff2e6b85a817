//! (c) The SSE POST body: arbitrary bytes, cut into arbitrary chunks (some of which wait, and
//! one of which may abort the body), sent as a streaming (chunked) or a content-length `POST`
//! to a real SSE peer of an in-process server with small limits (1 KiB messages, 8 KiB send
//! queue, a message rate), whose app echoes and publishes. `PeerPost::receive` must answer,
//! the peer's hooks must end once its stream is dropped, nothing is left registered, and the
//! heap stays within a fixed bound whatever the bytes.
#![no_main]

use anyws_core::http::Request as HttpRequest;
use anyws_core::sse::{SseOutcome, PEER_ID_HEADER};
use anyws_core::{Bytes, MessageRate, Request, ServerBuilder};
use anyws_fuzz::{poll_to_end, EchoApp, TaskRuntime};
use futures_core::Stream;
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Counts the bytes live on the heap, and the most at once since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Most heap one run may add on top of what was live before it: the peer's inbox (64 KiB), its
/// send queue (8 KiB), one message (1 KiB), the input and its copies, and the bookkeeping.
const HEAP_BOUND: usize = 1 << 20;

/// The body: `input` cut as `chunks` says. A size of 0 waits, then gives an empty chunk, then
/// counts as 1 (so that the body always ends); 255 aborts the body.
struct Body<'a> {
    input: &'a [u8],
    chunks: &'a [u8],
    turn: usize,
    zeros: u8,
}

impl Stream for Body<'_> {
    type Item = Result<Bytes, &'static str>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.input.is_empty() {
            return Poll::Ready(None);
        }
        let choice = if self.chunks.is_empty() {
            254
        } else {
            self.chunks[self.turn % self.chunks.len()]
        };
        self.turn += 1;
        let zeros = if choice == 0 { self.zeros + 1 } else { 0 };
        self.zeros = zeros % 3;
        match (choice, zeros) {
            (0, 1) => Poll::Pending,
            (0, 2) => Poll::Ready(Some(Ok(Bytes::new()))),
            (255, _) => {
                self.input = &[];
                Poll::Ready(Some(Err("aborted")))
            }
            _ => {
                let n = usize::from(choice).max(1).min(self.input.len());
                let (chunk, rest) = self.input.split_at(n);
                self.input = rest;
                Poll::Ready(Some(Ok(Bytes::copy_from_slice(chunk))))
            }
        }
    }
}

fn request(method: &str, headers: &[(&str, String)]) -> Request {
    let mut request = HttpRequest::builder().method(method).uri("/room");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .header("host", "fuzz")
        .body(())
        .expect("a valid request");
    Request::new(request.into_parts().0, None)
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: bit 0 streaming, bit 1 a message rate, bit 2 the client reads its stream only
    // every 8th turn, bit 3 the client goes away at turn 2 * (byte 0 >> 4); byte 1: how many
    // bytes after it steer the chunk sizes; then the body.
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let split =
        usize::from(rest.first().copied().unwrap_or(0) % 16).min(rest.len().saturating_sub(1));
    let (chunks, input) = rest.get(1..).unwrap_or_default().split_at(split);
    let streaming = flags & 1 != 0;
    let slow = flags & 4 != 0;
    let leave_at = (flags & 8 != 0).then_some(2 * usize::from(flags >> 4));

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let runtime = Arc::new(TaskRuntime::default());
    let server = ServerBuilder::new(EchoApp)
        .sse(true)
        .max_message_size(1024)
        .max_buffered_bytes(8192)
        .message_rate((flags & 2 != 0).then(|| MessageRate::new(1000, 20)))
        .close_timeout(Duration::ZERO)
        .build(runtime.clone());

    let open = request("GET", &[("accept", "text/event-stream".into())]);
    let SseOutcome::Open(response) = poll_to_end(server.sse(open), 100).expect("the open waits")
    else {
        panic!("the SSE open was refused");
    };
    let id = response.headers()[PEER_ID_HEADER]
        .to_str()
        .expect("an id")
        .to_owned();
    let mut events = Some(response.into_body());
    let mut headers = vec![("x-crossws-id", id)];
    if streaming {
        headers.push(("transfer-encoding", "chunked".into()));
    } else {
        headers.push(("content-length", input.len().to_string()));
    }
    let post =
        match poll_to_end(server.sse(request("POST", &headers)), 100).expect("the POST waits") {
            SseOutcome::Post(post) => Some(post),
            SseOutcome::Respond(response) => {
                // Only a declared length over the limit is refused before the body.
                assert_eq!(response.status(), 413);
                assert!(!streaming && input.len() > 1024);
                None
            }
            other => panic!("unexpected outcome {other:?}"),
        };
    let Some(post) = post else {
        drop(events);
        while runtime.poll_tasks() > 0 {}
        assert_eq!(server.peer_count(), 0);
        return;
    };
    let body = Body {
        input,
        chunks,
        turn: 0,
        zeros: 0,
    };
    let mut receive = pin!(post.receive(body));
    let mut cx = Context::from_waker(Waker::noop());

    // The client's side: the POST, the event stream (read unless stalled) and the server's
    // tasks, in turn. Every turn makes progress; the bound only catches a hang.
    let mut status = None;
    for turn in 0..64 + input.len() * 16 {
        if leave_at == Some(turn) {
            events = None;
        }
        runtime.poll_tasks();
        if !slow || turn % 8 == 0 {
            if let Some(stream) = events.as_mut() {
                match Pin::new(stream).poll_next(&mut cx) {
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) => events = None,
                    Poll::Pending => {}
                }
            }
        }
        if let Poll::Ready(response) = receive.as_mut().poll(&mut cx) {
            status = Some(response.status().as_u16());
            break;
        }
    }
    let status = status.expect("the POST was never answered");
    assert!(
        [200, 400, 410, 413, 429].contains(&status),
        "unexpected status {status}"
    );
    // The client goes away: the peer's hooks end and nothing is left.
    drop(events);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = runtime.poll_tasks();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "the peer's hook runner did not end");
    assert_eq!(server.peer_count(), 0);
    assert_eq!(server.connection_count(), 0);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(peak < HEAP_BOUND, "the run used {peak} bytes of heap");
});
