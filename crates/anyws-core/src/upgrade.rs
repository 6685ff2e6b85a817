//! The outcome of the `upgrade` hook, and the checks every handshake goes through.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::request::header_tokens;
use crate::Request;

pub(crate) type Context = Arc<dyn Any + Send + Sync>;

/// The `upgrade` hook accepts the request: the handshake completes with `101 Switching Protocols`.
///
/// ```
/// use anyws_core::Accept;
/// let accept = Accept::new()
///     .header("x-powered-by", "anyws")
///     .namespace("/lobby")
///     .context(42_u32);
/// # let _ = accept;
/// ```
#[derive(Default)]
pub struct Accept {
    pub(crate) headers: HeaderMap,
    pub(crate) protocol: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) context: Option<Context>,
    pub(crate) error: Option<http::Error>,
}

impl Accept {
    /// Accepts with no extra headers, no subprotocol, the URL path as namespace and no context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to the `101` response. Repeated names are all sent, in order.
    ///
    /// A name or value that is not valid HTTP turns the handshake into a `500`.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(e), _) => self.error = Some(e.into()),
            (_, Err(e)) => self.error = Some(e.into()),
        }
        self
    }

    /// Selects a subprotocol. It must be one the client offered in `Sec-WebSocket-Protocol`
    /// (see [`Request::protocols`](crate::Request::protocols)); anything else turns the handshake
    /// into a `500`. None is selected unless this is called.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Puts the peer in `namespace` instead of the default, the URL path. Publishes and
    /// [`Peer::peers`](crate::Peer::peers) stay within a namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Attaches a typed context to the peer, readable in every hook with
    /// [`Peer::context`](crate::Peer::context).
    pub fn context<T: Any + Send + Sync>(mut self, context: T) -> Self {
        self.context = Some(Arc::new(context));
        self
    }
}

impl fmt::Debug for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accept")
            .field("headers", &self.headers)
            .field("protocol", &self.protocol)
            .field("namespace", &self.namespace)
            .field("context", &self.context.is_some())
            .finish()
    }
}

/// The reason phrase of a response's status line, carried in the response's extensions.
///
/// Adapters write it instead of the canonical phrase, so a [`Rejection`] reaches the client
/// exactly as built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonPhrase(Bytes);

impl ReasonPhrase {
    /// The phrase as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The `upgrade` hook refuses the request with a complete HTTP response.
///
/// ```
/// use anyws_core::Rejection;
/// use http::StatusCode;
/// let reject = Rejection::new(StatusCode::UNAUTHORIZED)
///     .reason("Unauthorized")
///     .header("www-authenticate", "Bearer")
///     .body("unauthorized");
/// assert_eq!(reject.response().status(), 401);
/// ```
#[derive(Debug)]
pub struct Rejection {
    response: Response<Bytes>,
}

impl Rejection {
    /// A response with `status`, its canonical reason phrase, no headers and an empty body.
    pub fn new(status: StatusCode) -> Self {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        Self { response }
    }

    /// A `500 Internal Server Error` for an error the hook ran into. The error is not revealed to
    /// the client.
    pub fn internal<E: fmt::Display>(_error: E) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body("Internal Server Error")
    }

    /// Sets the reason phrase of the status line. Phrases with control characters are ignored.
    pub fn reason(mut self, reason: impl Into<Bytes>) -> Self {
        let reason = reason.into();
        if reason
            .iter()
            .all(|&b| b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b) || b >= 0x80)
        {
            self.response.extensions_mut().insert(ReasonPhrase(reason));
        }
        self
    }

    /// Adds a header. Invalid names or values turn the rejection into a `500`.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.response.headers_mut().append(name, value);
                self
            }
            _ => Self::internal("invalid header"),
        }
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        *self.response.body_mut() = body.into();
        self
    }

    /// The response as it will be sent.
    pub fn response(&self) -> &Response<Bytes> {
        &self.response
    }

    /// Takes the response out.
    pub fn into_response(self) -> Response<Bytes> {
        self.response
    }
}

impl From<Response<Bytes>> for Rejection {
    fn from(response: Response<Bytes>) -> Self {
        Self { response }
    }
}

impl From<StatusCode> for Rejection {
    fn from(status: StatusCode) -> Self {
        Self::new(status)
    }
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`). Requests that do not are
/// ordinary HTTP and go to the adapter's fallback.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_tokens(headers, UPGRADE).any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// A refusal of a request the server cannot take: `status`, and `why` as a plain-text body.
///
/// A `431` also asks the HTTP layer to close the connection (`Connection: close`), as hyper does
/// when it refuses a head itself, so that the buffer that held the head is not kept for the
/// next request.
fn refusal(status: StatusCode, why: &'static str) -> Box<Response<Bytes>> {
    let mut r = Rejection::new(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(why)
        .into_response();
    match status {
        StatusCode::UPGRADE_REQUIRED => {
            r.headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    Box::new(r)
}

/// The checks every request that reaches the server goes through (WebSocket upgrades and the
/// SSE transport's requests), before any resolver or hook sees it: a head larger than
/// `max_head_bytes` gets `431`, and a `Host` header that is missing from an HTTP/1.1 request,
/// repeated or not a valid authority gets `400` (RFC 9112 section 3.2, RFC 6455 section
/// 4.2.1). HTTP/2 and later carry the authority in the URI (`:authority`) instead, and HTTP/1.0
/// did not require it, so only HTTP/1.1 must have one.
pub(crate) fn check_request(
    request: &Request,
    max_head_bytes: usize,
) -> Result<(), Box<Response<Bytes>>> {
    if head_size(request) > max_head_bytes {
        return Err(refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    let host_ok = match (hosts.next(), hosts.next()) {
        (Some(host), None) => Authority::try_from(host.as_bytes()).is_ok(),
        (None, _) => request.version() != Version::HTTP_11,
        (Some(_), Some(_)) => false,
    };
    if !host_ok {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "missing, repeated or invalid Host header",
        ));
    }
    Ok(())
}

/// The size of `request`'s head written as HTTP/1.1 with no optional whitespace: the request
/// line `METHOD target HTTP/1.1`, each header as `name:value`, a CRLF after each and the final
/// CRLF. No head that arrived in HTTP/1.x is smaller than this.
pub(crate) fn head_size(request: &Request) -> usize {
    const CRLF: usize = 2;
    const VERSION: usize = "HTTP/1.1".len();
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = request.method().as_str().len() + 1 + target + 1 + VERSION + CRLF;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 1 + value.len() + CRLF)
        .sum();
    line + headers + CRLF
}

/// Checks a WebSocket upgrade request as RFC 6455 section 4.2.1 asks, returning the
/// `Sec-WebSocket-Accept` value (`None` for an HTTP/2 extended `CONNECT`, which has none), or
/// the 4xx response a broken handshake gets.
///
/// An upgrade over HTTP/1.0 gets `400`: `505` would say the major version is not supported,
/// and `426` would need an `Upgrade` the client could follow on this connection, while an
/// HTTP/1.0 server must ignore `Upgrade` altogether (RFC 9110 section 7.8). Over HTTP/2 the
/// request is an extended `CONNECT` (RFC 8441) whose `:protocol` the HTTP layer has checked;
/// it needs `Sec-WebSocket-Version: 13` and no key.
pub(crate) fn check_handshake(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<Option<String>, Box<Response<Bytes>>> {
    if version < Version::HTTP_11 {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrades need HTTP/1.1 or later",
        ));
    }
    if version >= Version::HTTP_2 {
        if method != Method::CONNECT {
            return Err(refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "WebSocket streams over HTTP/2 use an extended CONNECT",
            ));
        }
        if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ));
        }
        return Ok(None);
    }
    if method != Method::GET {
        return Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "WebSocket upgrades must use GET",
        ));
    }
    if !is_websocket_upgrade(headers) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "missing `Upgrade: websocket` header",
        ));
    }
    if !header_tokens(headers, CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "missing `Connection: Upgrade` header",
        ));
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(refusal(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        ));
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_valid_key(key.as_bytes()) => key,
        _ => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "missing or invalid Sec-WebSocket-Key header",
            ))
        }
    };
    Ok(Some(tungstenite::handshake::derive_accept_key(
        key.as_bytes(),
    )))
}

/// A key is the base64 encoding of 16 bytes: 22 base64 characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_rfc_example() {
        let accept = check_handshake(&Method::GET, Version::HTTP_11, &headers(GOOD)).unwrap();
        assert_eq!(accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(is_websocket_upgrade(&headers(GOOD)));
        assert!(!is_websocket_upgrade(&headers(&[("upgrade", "h2c")])));
    }

    #[test]
    fn rejects_broken_handshakes() {
        let without = |name: &str| {
            let list: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != name).collect();
            check_handshake(&Method::GET, Version::HTTP_11, &headers(&list))
                .unwrap_err()
                .status()
        };
        assert_eq!(without("sec-websocket-key"), StatusCode::BAD_REQUEST);
        assert_eq!(
            without("sec-websocket-version"),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(without("connection"), StatusCode::BAD_REQUEST);
        assert_eq!(without("upgrade"), StatusCode::BAD_REQUEST);
        let post = check_handshake(&Method::POST, Version::HTTP_11, &headers(GOOD)).unwrap_err();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let mut bad_key = headers(GOOD);
        bad_key.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert!(check_handshake(&Method::GET, Version::HTTP_11, &bad_key).is_err());
    }

    #[test]
    fn upgrades_need_http_1_1_or_later() {
        let status = |version| {
            check_handshake(&Method::GET, version, &headers(GOOD))
                .err()
                .map(|r| r.status())
        };
        assert_eq!(status(Version::HTTP_09), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(Version::HTTP_10), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(Version::HTTP_11), None);
        // Over HTTP/2, an extended CONNECT with version 13 and no key (RFC 8441).
        assert_eq!(
            status(Version::HTTP_2),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        let h2 = |list: &[(&'static str, &'static str)]| {
            check_handshake(&Method::CONNECT, Version::HTTP_2, &headers(list))
        };
        assert_eq!(h2(&[("sec-websocket-version", "13")]).unwrap(), None);
        let refused = h2(&[]).unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(h2(&[("sec-websocket-version", "8")]).is_err());
    }

    fn request(version: Version, list: &[(&'static str, &'static str)]) -> Request {
        let mut builder = http::Request::get("/chat?room=1").version(version);
        for (name, value) in list {
            builder = builder.header(*name, *value);
        }
        Request::new(builder.body(()).unwrap().into_parts().0, None)
    }

    #[test]
    fn host_is_required_in_http_1_1_only() {
        let status = |version, list| {
            check_request(&request(version, list), usize::MAX)
                .err()
                .map(|r| r.status())
        };
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(status(Version::HTTP_11, &[]), bad);
        assert_eq!(
            status(Version::HTTP_11, &[("host", "example.com:80")]),
            None
        );
        assert_eq!(status(Version::HTTP_11, &[("host", "[::1]:3000")]), None);
        assert_eq!(status(Version::HTTP_11, &[("host", "")]), bad);
        assert_eq!(status(Version::HTTP_11, &[("host", "a b")]), bad);
        assert_eq!(
            status(Version::HTTP_11, &[("host", "a"), ("host", "a")]),
            bad
        );
        // HTTP/1.0 did not require it; HTTP/2 carries `:authority` in the URI instead.
        assert_eq!(status(Version::HTTP_10, &[]), None);
        assert_eq!(status(Version::HTTP_2, &[]), None);
        assert_eq!(
            status(Version::HTTP_2, &[("host", "a"), ("host", "b")]),
            bad
        );
    }

    #[test]
    fn head_size_counts_the_head_without_optional_whitespace() {
        let r = request(Version::HTTP_11, &[("host", "h:1"), ("x-a", "12345")]);
        let wire = "GET /chat?room=1 HTTP/1.1\r\nhost:h:1\r\nx-a:12345\r\n\r\n";
        assert_eq!(head_size(&r), wire.len());
        let limit = |bytes| check_request(&r, bytes).err().map(|r| r.status());
        assert_eq!(limit(wire.len()), None);
        let refused = check_request(&r, wire.len() - 1).unwrap_err();
        assert_eq!(
            refused.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(refused.headers()[CONNECTION], "close");
        // An absolute-form target counts in full.
        let (parts, ()) = http::Request::get("http://h:1/a")
            .body(())
            .unwrap()
            .into_parts();
        let absolute = Request::new(parts, None);
        assert_eq!(
            head_size(&absolute),
            "GET http://h:1/a HTTP/1.1\r\n\r\n".len()
        );
    }

    #[test]
    fn rejection_keeps_everything() {
        let r = Rejection::new(StatusCode::UNAUTHORIZED)
            .reason("Nope")
            .header("x-a", "1")
            .header("x-a", "2")
            .body("no")
            .into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.extensions().get::<ReasonPhrase>().unwrap().as_bytes(),
            b"Nope"
        );
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.body().as_ref(), b"no");
        let bad = Rejection::new(StatusCode::OK).header("bad name", "x");
        assert_eq!(bad.response().status(), 500);
    }
}
