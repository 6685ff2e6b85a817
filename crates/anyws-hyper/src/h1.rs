//! The first request of a connection this crate serves: read here, to tell HTTP/2 from
//! HTTP/1.1 by its preface, and answered here when it is a WebSocket upgrade.
//!
//! A WebSocket upgrade is the one request of its connection: the `101` hands the connection
//! over to the peer. hyper's HTTP/1.1 machinery for it (its dispatcher, read and write
//! buffers of 8–12 KiB each, its header-read timer, the upgrade's oneshot and the request's
//! extensions) is made and dropped for that single exchange, so a complete upgrade head is
//! parsed here with `httparse` (hyper's own parser) and its `101` written here. Anything else,
//! including a head that is incomplete past the head limit, malformed, or not a plain `GET`
//! upgrade, goes to hyper with the bytes read so far, as before.

use crate::io::Prefixed;
use anyws_core::{is_websocket_upgrade, ReasonPhrase};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Method, Response, Uri, Version};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::Poll;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most a read of the first request takes at a time, and the size of each thread's buffer
/// for it.
const FIRST_READ_SIZE: usize = 16 * 1024;

/// The most headers the first request may have to be answered here (hyper takes up to 100).
const MAX_HEADERS: usize = 64;

thread_local! {
    /// Where a read of a first request lands before its bytes are copied out, so that a
    /// connection allocates only what its head takes. Taken out and put back by each read.
    static FIRST_READ: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// What a connection's first bytes are.
// Unboxed on purpose: it lives only in the connection's task, before the peer starts, and
// boxing the parts would cost an allocation per connection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum First<I> {
    /// The HTTP/2 preface: hyper's HTTP/2 server reads the bytes again.
    Http2(Prefixed<I>),
    /// Any HTTP/1.1 request but a complete WebSocket upgrade: hyper reads the bytes again.
    Http1(Prefixed<I>),
    /// A complete WebSocket upgrade request (`GET`, HTTP/1.1, no body), and what the client
    /// sent after its head.
    Upgrade { io: I, parts: Parts, rest: Bytes },
}

/// Reads the first request's head from `io`, until it is complete, is the HTTP/2 preface, or
/// cannot be answered here (`max_head` bytes without its end, a parse error). `None` when the
/// client closed or failed before sending anything.
pub(crate) async fn read_first<I>(mut io: I, max_head: usize) -> Option<First<I>>
where
    I: hyper::rt::Read + Unpin,
{
    let mut buffer = Vec::new();
    // Where the search for the head's end goes on from: a head sent a few bytes at a time is
    // parsed once, when it has ended, rather than after every read.
    let mut searched = 0;
    loop {
        let read = std::future::poll_fn(|cx| {
            FIRST_READ.with(|scratch| {
                let mut chunk = scratch.take();
                if chunk.len() < FIRST_READ_SIZE {
                    chunk.resize(FIRST_READ_SIZE, 0);
                }
                let mut read = hyper::rt::ReadBuf::new(&mut chunk);
                let polled = match Pin::new(&mut io).poll_read(cx, read.unfilled()) {
                    Poll::Ready(Ok(())) => {
                        let filled = read.filled();
                        buffer.extend_from_slice(filled);
                        Poll::Ready(Ok::<_, io::Error>(filled.len()))
                    }
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                };
                scratch.set(chunk);
                polled
            })
        })
        .await;
        match read {
            Ok(0) | Err(_) if buffer.is_empty() => return None,
            // Whatever hyper makes of what came (an error answer, or nothing).
            Ok(0) | Err(_) => return Some(First::Http1(Prefixed::new(buffer, io))),
            Ok(_) => {}
        }
        if buffer.len() < PREFACE.len() && PREFACE.starts_with(&buffer) {
            continue;
        }
        if buffer.starts_with(PREFACE) {
            return Some(First::Http2(Prefixed::new(buffer, io)));
        }
        if !head_ended(&buffer, searched) {
            if buffer.len() > max_head {
                return Some(First::Http1(Prefixed::new(buffer, io)));
            }
            searched = buffer.len();
            continue;
        }
        match parse_upgrade(buffer, max_head) {
            Parsed::Upgrade(parts, rest) => return Some(First::Upgrade { io, parts, rest }),
            Parsed::Partial(partial) if partial.len() <= max_head => buffer = partial,
            Parsed::Partial(other) | Parsed::Other(other) => {
                return Some(First::Http1(Prefixed::new(other, io)))
            }
        }
    }
}

/// Whether `buffer`, searched before from `from` on, now holds the blank line that ends a
/// head (`\n\n` or `\n\r\n`, as `httparse` takes line ends).
fn head_ended(buffer: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(2);
    buffer[from..]
        .iter()
        .enumerate()
        .filter(|&(_, &byte)| byte == b'\n')
        .any(|(at, _)| {
            let after = &buffer[from + at + 1..];
            after.starts_with(b"\n") || after.starts_with(b"\r\n")
        })
}

/// What [`parse_upgrade`] made of a connection's first bytes.
#[allow(clippy::large_enum_variant)] // As `First`.
enum Parsed {
    /// A complete WebSocket upgrade request, and the bytes after its head.
    Upgrade(Parts, Bytes),
    /// The head has not ended yet: the bytes, to read more after.
    Partial(Vec<u8>),
    /// A request for hyper: the bytes, unchanged.
    Other(Vec<u8>),
}

/// Parses `buffer` as the head of a WebSocket upgrade request of at most `max_head` bytes (a
/// longer one goes to hyper, which counts it as it does every head and answers `431`). Its
/// header values and target stay in the buffer, shared: the request is packed into a copy of
/// its own when a peer keeps it (`Request::new`).
fn parse_upgrade(buffer: Vec<u8>, max_head: usize) -> Parsed {
    let bytes = Bytes::from(buffer);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parts = match request.parse(&bytes) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => {
            upgrade_parts(&bytes, &request).map(|parts| (parts, len))
        }
        Ok(httparse::Status::Complete(_)) => None,
        Ok(httparse::Status::Partial) => return Parsed::Partial(Vec::from(bytes)),
        Err(_) => None,
    };
    match parts {
        Some((parts, len)) => Parsed::Upgrade(parts, bytes.slice(len..)),
        None => Parsed::Other(Vec::from(bytes)),
    }
}

/// The parts of `request`, parsed out of `bytes`, when it is a WebSocket upgrade this module
/// answers: `GET`, HTTP/1.1, with `Upgrade: websocket` and no body, and every header and the
/// target valid as `http` takes them.
fn upgrade_parts(bytes: &Bytes, request: &httparse::Request<'_, '_>) -> Option<Parts> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let uri = Uri::from_maybe_shared(bytes.slice_ref(request.path?.as_bytes())).ok()?;
    let mut headers = http::HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(header.value)).ok()?;
        headers.append(name, value);
    }
    if !is_websocket_upgrade(&headers)
        || headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|length| length.as_bytes() != b"0")
    {
        return None;
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some(parts)
}

/// Encodes `response` to a first request as HTTP/1.1: a `101` as it is; any other response
/// with its body, its length, and `Connection: close` (the connection ends after it).
pub(crate) fn encode_response(response: &Response<Bytes>, out: &mut Vec<u8>) {
    let status = response.status();
    let reason = response
        .extensions()
        .get::<ReasonPhrase>()
        .map(ReasonPhrase::as_bytes)
        .or_else(|| status.canonical_reason().map(str::as_bytes))
        .unwrap_or_default();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    let headers = response.headers();
    for (name, value) in headers {
        if status != http::StatusCode::SWITCHING_PROTOCOLS && name == CONNECTION {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        let body = response.body();
        let bodiless = status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        if !bodiless && !headers.contains_key(CONTENT_LENGTH) {
            put_header(out, b"content-length", body.len().to_string().as_bytes());
        }
        put_header(out, b"connection", b"close");
        out.extend_from_slice(b"\r\n");
        if !bodiless {
            out.extend_from_slice(body);
        }
        return;
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn parse(bytes: &[u8]) -> Parsed {
        parse_upgrade(bytes.to_vec(), 16 * 1024)
    }

    #[test]
    fn an_upgrade_is_parsed_with_what_follows_its_head() {
        let mut bytes = UPGRADE.to_vec();
        bytes.extend_from_slice(b"\x81\x80frame");
        let Parsed::Upgrade(parts, rest) = parse(&bytes) else {
            panic!("not an upgrade");
        };
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.uri, "/chat?room=1");
        assert_eq!(parts.headers["host"], "example.com");
        assert_eq!(parts.headers["sec-websocket-version"], "13");
        assert_eq!(parts.headers.len(), 5);
        assert_eq!(&rest[..], b"\x81\x80frame");
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for split in 0..head.len() {
            let ended = head_ended(&head[..split], 0) || head_ended(head, split);
            assert!(ended, "split at {split}");
            assert!(!head_ended(
                &head[..head.len() - 1],
                split.min(head.len() - 1)
            ));
        }
        assert!(head_ended(b"GET / HTTP/1.1\nHost: h\n\n", 0));
        assert!(!head_ended(b"GET / HTTP/1.1\r\nHost: h\r\n", 0));
    }

    #[test]
    fn an_incomplete_head_is_read_on() {
        for end in [1, 20, UPGRADE.len() - 1] {
            let Parsed::Partial(bytes) = parse(&UPGRADE[..end]) else {
                panic!("complete at {end}");
            };
            assert_eq!(bytes, &UPGRADE[..end]);
        }
    }

    #[test]
    fn anything_but_a_plain_upgrade_goes_to_hyper_unchanged() {
        let upgrade = std::str::from_utf8(UPGRADE).unwrap();
        let others = [
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
            upgrade.replace("GET", "POST"),
            upgrade.replace("HTTP/1.1", "HTTP/1.0"),
            upgrade.replace("Upgrade: websocket", "Upgrade: h2c"),
            upgrade.replace(
                "Host: example.com\r\n",
                "Host: example.com\r\nContent-Length: 5\r\n",
            ),
            upgrade.replace(
                "Host: example.com\r\n",
                "Host: example.com\r\nTransfer-Encoding: chunked\r\n",
            ),
            upgrade.replace("Host: example.com", "Host: a\u{7f}b"),
            upgrade.replace("Host:", "Ho st:"),
            "\x16\x03\x01 not HTTP\r\n\r\n".to_owned(),
        ];
        for other in others {
            match parse(other.as_bytes()) {
                Parsed::Other(bytes) => assert_eq!(bytes, other.as_bytes()),
                Parsed::Upgrade(..) => panic!("answered here: {other:?}"),
                Parsed::Partial(_) => panic!("read on: {other:?}"),
            }
        }
        let many = upgrade.replace("Host: example.com\r\n", &"X-A: b\r\n".repeat(MAX_HEADERS));
        assert!(matches!(parse(many.as_bytes()), Parsed::Other(_)));
        let empty_length = upgrade.replace(
            "Host: example.com\r\n",
            "Host: example.com\r\nContent-Length: 0\r\n",
        );
        assert!(matches!(
            parse(empty_length.as_bytes()),
            Parsed::Upgrade(..)
        ));
        let limit = UPGRADE.len();
        assert!(matches!(
            parse_upgrade(UPGRADE.to_vec(), limit),
            Parsed::Upgrade(..)
        ));
        assert!(matches!(
            parse_upgrade(UPGRADE.to_vec(), limit - 1),
            Parsed::Other(_)
        ));
    }

    #[test]
    fn a_101_is_written_as_it_is() {
        let response = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(Bytes::new())
            .unwrap();
        let mut out = Vec::new();
        encode_response(&response, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn a_refusal_has_its_body_length_and_closes() {
        let refusal = anyws_core::Rejection::new(http::StatusCode::FORBIDDEN)
            .header("x-why", "no")
            .header("connection", "keep-alive")
            .body("go away");
        let mut out = Vec::new();
        encode_response(refusal.response(), &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 403 Forbidden\r\nx-why: no\r\ncontent-length: 7\r\n\
              connection: close\r\n\r\ngo away"
        );
        let refusal = anyws_core::Rejection::new(http::StatusCode::FORBIDDEN).reason("Not Today");
        out.clear();
        encode_response(refusal.response(), &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 403 Not Today\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }
}
