//! One server-sent event and its wire form.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// One server-sent event: data with an optional event name, id and retry time, or a comment.
///
/// [`Event::encode`] writes it in the `text/event-stream` format: multi-line data becomes one
/// `data:` line per line, so the client's `EventSource` puts the lines back together with `\n`.
///
/// ```
/// use anyws_core::sse::Event;
///
/// let event = Event::data("first line\nsecond line").event("note").id("7");
/// assert_eq!(
///     event.to_bytes(),
///     "id: 7\nevent: note\ndata: first line\ndata: second line\n\n"
/// );
/// assert_eq!(Event::comment("bye").to_bytes(), ": bye\n\n");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<Duration>,
    comment: Option<String>,
}

impl Event {
    /// An event carrying `data`, with the default event name (`message`).
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: Some(data.into()),
            ..Self::default()
        }
    }

    /// A comment line: clients ignore it, proxies see traffic. Multi-line text becomes one
    /// comment line per line.
    pub fn comment(text: impl Into<String>) -> Self {
        Self {
            comment: Some(text.into()),
            ..Self::default()
        }
    }

    /// An event that only tells the client how long to wait before reconnecting.
    pub fn retry_only(retry: Duration) -> Self {
        Self {
            retry: Some(retry),
            ..Self::default()
        }
    }

    /// Sets the event name, which picks the client's listener (`addEventListener(name, …)`).
    /// Line breaks are removed: they cannot be sent.
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(single_line(name.into()));
        self
    }

    /// Sets the event id, which the client sends back as `Last-Event-ID` when it reconnects.
    /// Line breaks and NUL are removed: they cannot be sent.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let mut id = single_line(id.into());
        id.retain(|c| c != '\0');
        self.id = Some(id);
        self
    }

    /// Sets the reconnection time the client should use, sent in whole milliseconds.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The number of bytes [`Event::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let field = |name: &str, value: &Option<String>| {
            value.as_ref().map_or(0, |v| name.len() + 2 + v.len() + 1)
        };
        let lines = |prefix: usize, text: &Option<String>| {
            text.as_ref().map_or(0, |t| {
                let (count, len) =
                    split_lines(t).fold((0, 0), |(n, l), line| (n + 1, l + line.len()));
                count * (prefix + 1) + len
            })
        };
        field("id", &self.id)
            + field("event", &self.event)
            + self
                .retry
                .map_or(0, |r| 7 + r.as_millis().to_string().len() + 1)
            + lines(2, &self.comment)
            + lines(6, &self.data)
            + 1
    }

    /// Appends the event's wire form to `buf`, ending with the blank line that dispatches it.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        if let Some(comment) = &self.comment {
            for line in split_lines(comment) {
                put_line(buf, b": ", line.as_bytes());
            }
        }
        if let Some(retry) = self.retry {
            put_line(buf, b"retry: ", retry.as_millis().to_string().as_bytes());
        }
        if let Some(id) = &self.id {
            put_line(buf, b"id: ", id.as_bytes());
        }
        if let Some(event) = &self.event {
            put_line(buf, b"event: ", event.as_bytes());
        }
        if let Some(data) = &self.data {
            encode_data(buf, data.as_bytes());
        }
        buf.put_u8(b'\n');
    }

    /// The event's wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn put_line(buf: &mut BytesMut, prefix: &[u8], value: &[u8]) {
    buf.put_slice(prefix);
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

/// Writes `data` as `data:` lines, one per line of `data` (split at `\r\n`, `\n` or `\r`).
pub(crate) fn encode_data(buf: &mut BytesMut, data: &[u8]) {
    let mut rest = data;
    loop {
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(end) => {
                put_line(buf, b"data: ", &rest[..end]);
                let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                put_line(buf, b"data: ", rest);
                return;
            }
        }
    }
}

/// The lines of `text`, split at `\r\n`, `\n` or `\r`; an empty text is one empty line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(end) => {
                let skip = if current[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn single_line(mut text: String) -> String {
    text.retain(|c| c != '\n' && c != '\r');
    text
}

/// The `Last-Event-ID` a reconnecting `EventSource` sends: the id of the last event it received.
pub fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(HeaderName::from_static("last-event-id"))
        .and_then(|v| v.to_str().ok())
}

/// Whether `headers` ask for an event stream (`Accept: text/event-stream`), as `EventSource`
/// requests do.
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The response headers of an event stream: `content-type: text/event-stream`,
/// `cache-control: no-cache`, and `x-accel-buffering: no`, which keeps nginx and similar proxies
/// from holding events back in a buffer.
pub fn response_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_in_order() {
        let event = Event::data("a\r\nb\rc\nd")
            .event("ti\nck")
            .id("4\n2")
            .retry(Duration::from_millis(2000));
        let bytes = event.to_bytes();
        assert_eq!(
            bytes,
            "retry: 2000\nid: 42\nevent: tick\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event.encoded_len(), bytes.len());
    }

    #[test]
    fn empty_data_is_one_empty_line() {
        let event = Event::data("");
        assert_eq!(event.to_bytes(), "data: \n\n");
        assert_eq!(event.encoded_len(), 8);
        let trailing = Event::data("x\n");
        assert_eq!(trailing.to_bytes(), "data: x\ndata: \n\n");
        assert_eq!(trailing.encoded_len(), trailing.to_bytes().len());
    }

    #[test]
    fn comments_and_retry_only() {
        let comment = Event::comment("one\ntwo");
        assert_eq!(comment.to_bytes(), ": one\n: two\n\n");
        assert_eq!(comment.encoded_len(), comment.to_bytes().len());
        let retry = Event::retry_only(Duration::from_secs(2));
        assert_eq!(retry.to_bytes(), "retry: 2000\n\n");
        assert_eq!(retry.encoded_len(), retry.to_bytes().len());
    }

    #[test]
    fn accept_and_last_event_id() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_event_stream(&headers));
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/html, Text/Event-Stream;q=0.9"),
        );
        assert!(accepts_event_stream(&headers));
        headers.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(last_event_id(&headers), Some("12"));
    }
}
