//! The upgrade request as the hooks see it.

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use http::uri::Scheme;
use http::{Extensions, Method, Uri, Version};
use once_cell::race::OnceBox;
use std::borrow::Cow;
use std::net::SocketAddr;

/// The HTTP request that opened a peer: method, URI, headers, remote address and extensions.
///
/// It has no body. Adapters build it from the framework's request; [`Request::url`] is derived from
/// the `Host` header, path and query, as a browser would see it.
#[derive(Debug)]
pub struct Request {
    head: Head,
    remote_addr: Option<SocketAddr>,
}

/// The request line, headers and extensions of a [`Request`].
#[derive(Debug)]
enum Head {
    /// As the HTTP layer gave them, and the URL.
    Parts { parts: Box<Parts>, url: Box<str> },
    /// Packed by [`Request::pack`], for a request kept as long as its peer lives: a header map
    /// costs about a hundred bytes per header (and an empty one a hundred inline), a `Uri` 88.
    Packed(Packed),
}

/// A request packed into one buffer.
#[derive(Debug)]
struct Packed {
    /// One buffer of its size: the method, the URI, its path, its query (after a byte that
    /// says whether there is one) and the URL, then the headers (each: a sensitivity flag,
    /// then the name and the value); every field after its length as a LEB128 number.
    fields: Box<[u8]>,
    version: Version,
    extensions: Extensions,
    /// The whole request, made on demand: for [`Request::headers`], [`Request::uri`] and
    /// [`Request::parts`].
    unpacked: OnceBox<Parts>,
}

/// The fields at the front of [`Packed::fields`], before the headers.
struct Line<'a> {
    method: &'a str,
    uri: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    url: &'a str,
    headers: &'a [u8],
}

/// The standard methods, to lend out of a packed request.
static METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::CONNECT,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::TRACE,
];

impl Request {
    /// Builds a request from HTTP request parts and the client's address, when known.
    ///
    /// The parts are kept as given until a peer keeps the request for its lifetime: the request
    /// is then packed into one allocation of its size (see [`Peer::request`](crate::Peer::request)),
    /// so that it holds no view into the HTTP layer's read buffer (hyper hands out header values
    /// that share its whole buffer).
    pub fn new(mut parts: Parts, remote_addr: Option<SocketAddr>) -> Self {
        let url = build_url(&parts).into_boxed_str();
        // The scheme mark of a TLS connection's glue is in the URL now.
        parts.extensions.remove::<Scheme>();
        if parts.extensions.is_empty() {
            // An HTTP layer may have stored and taken back values (hyper's upgrade handle): an
            // empty map can still hold its table, for as long as the peer lives.
            parts.extensions = Extensions::new();
        }
        Self {
            head: Head::Parts {
                parts: Box::new(parts),
                url,
            },
            remote_addr,
        }
    }

    /// Packs the headers into one buffer of their size and lets the header map go, for a
    /// request kept as long as its peer lives; [`Request::headers`] unpacks them again when it
    /// is called.
    pub(crate) fn pack(&mut self) {
        let Head::Parts { parts, url } = &mut self.head else {
            return;
        };
        let parts = std::mem::replace(&mut **parts, http::Request::new(()).into_parts().0);
        let uri = target(&parts.uri);
        let (path, query) = (parts.uri.path(), parts.uri.query());
        let line = [parts.method.as_str(), &uri, path, query.unwrap_or(""), url];
        let total = line
            .iter()
            .map(|field| field_len(field.len()))
            .sum::<usize>()
            + 1
            + parts
                .headers
                .iter()
                .map(|(name, value)| 1 + field_len(name.as_str().len()) + field_len(value.len()))
                .sum::<usize>();
        let mut fields = Vec::with_capacity(total);
        for field in &line[..3] {
            put_field(&mut fields, field.as_bytes());
        }
        fields.push(u8::from(query.is_some()));
        for field in &line[3..] {
            put_field(&mut fields, field.as_bytes());
        }
        for (name, value) in &parts.headers {
            fields.push(u8::from(value.is_sensitive()));
            put_field(&mut fields, name.as_str().as_bytes());
            put_field(&mut fields, value.as_bytes());
        }
        self.head = Head::Packed(Packed {
            // Exactly the size it holds, so the buffer is not copied again.
            fields: fields.into_boxed_slice(),
            version: parts.version,
            extensions: parts.extensions,
            unpacked: OnceBox::new(),
        });
    }

    /// The whole request: as given, or unpacked on the first call.
    fn whole(&self) -> &Parts {
        match &self.head {
            Head::Parts { parts, .. } => parts,
            Head::Packed(packed) => packed.unpacked.get_or_init(|| Box::new(packed.unpack())),
        }
    }

    /// The HTTP method (`GET` for a WebSocket upgrade over HTTP/1.1, `CONNECT` over HTTP/2).
    pub fn method(&self) -> &Method {
        match &self.head {
            Head::Parts { parts, .. } => &parts.method,
            Head::Packed(packed) => {
                let method = packed.line().method;
                METHODS
                    .iter()
                    .find(|standard| standard.as_str() == method)
                    .unwrap_or_else(|| &self.whole().method)
            }
        }
    }

    /// The request target as sent, usually a path and query.
    ///
    /// A peer keeps its request packed into one buffer; the first call on a peer's request
    /// makes a whole copy of it, kept as long as the peer. [`Request::path`],
    /// [`Request::query`] and [`Request::url`] read the packed request as it is.
    pub fn uri(&self) -> &Uri {
        &self.whole().uri
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        match &self.head {
            Head::Parts { parts, .. } => parts.version,
            Head::Packed(packed) => packed.version,
        }
    }

    /// The request headers.
    ///
    /// As with [`Request::uri`], the first call on a peer's request makes a whole copy of it.
    pub fn headers(&self) -> &HeaderMap {
        &self.whole().headers
    }

    /// Typed values an adapter, router or middleware attached to the request.
    pub fn extensions(&self) -> &Extensions {
        match &self.head {
            Head::Parts { parts, .. } => &parts.extensions,
            Head::Packed(packed) => &packed.extensions,
        }
    }

    /// Mutable access to the extensions, for routers and middleware.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        match &mut self.head {
            Head::Parts { parts, .. } => &mut parts.extensions,
            Head::Packed(packed) => {
                // The unpacked copy would no longer match.
                packed.unpacked = OnceBox::new();
                &mut packed.extensions
            }
        }
    }

    /// The client's address, when the adapter knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The path of the URL, without the query.
    pub fn path(&self) -> &str {
        match &self.head {
            Head::Parts { parts, .. } => parts.uri.path(),
            Head::Packed(packed) => packed.line().path,
        }
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        match &self.head {
            Head::Parts { parts, .. } => parts.uri.query(),
            Head::Packed(packed) => packed.line().query,
        }
    }

    /// The value of query parameter `name`, percent-decoded (`+` reads as a space), or `None`
    /// when the query does not have it. When it appears more than once, the first one counts;
    /// [`Request::query_pairs`] gives them all.
    ///
    /// ```
    /// # let (parts, ()) = http::Request::get("/chat?name=Ada%20L&room=1").body(()).unwrap().into_parts();
    /// let request = anyws_core::Request::new(parts, None);
    /// assert_eq!(request.query_param("name").as_deref(), Some("Ada L"));
    /// assert_eq!(request.query_param("user"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every `name=value` pair of the query, in order, percent-decoded (`+` reads as a space).
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        form_urlencoded::parse(self.query().unwrap_or("").as_bytes())
    }

    /// The full URL: `http://` (`https://` over TLS) + `Host` header + path and query.
    pub fn url(&self) -> &str {
        match &self.head {
            Head::Parts { url, .. } => url,
            Head::Packed(packed) => packed.line().url,
        }
    }

    /// Path parameter `name`, as matched by a [`Router`](crate::Router) pattern such as
    /// `/rooms/:id`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.extensions().get::<crate::PathParams>()?.get(name)
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in its order.
    pub fn protocols(&self) -> impl Iterator<Item = &str> {
        header_tokens(self.headers(), SEC_WEBSOCKET_PROTOCOL)
    }

    /// The request parts, for adapters that need to hand them on.
    pub fn parts(&self) -> &Parts {
        self.whole()
    }

    /// The request parts, for an adapter that hands a request its transport did not take back
    /// to the application.
    pub fn into_parts(self) -> Parts {
        match self.head {
            Head::Parts { parts, .. } => *parts,
            Head::Packed(packed) => {
                let mut parts = packed.unpack();
                parts.extensions = packed.extensions;
                parts
            }
        }
    }
}

impl Packed {
    /// The whole request, with a header map made from the packed headers; the values stay views
    /// into the buffer.
    fn unpack(&self) -> Parts {
        let line = self.line();
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = Method::from_bytes(line.method.as_bytes()).unwrap_or_default();
        parts.uri = Uri::try_from(line.uri).unwrap_or_default();
        parts.version = self.version;
        parts.extensions = self.extensions.clone();
        let mut rest = line.headers;
        while let Some((&sensitive, tail)) = rest.split_first() {
            rest = tail;
            let (Some(name), Some(value)) = (take_field(&mut rest), take_field(&mut rest)) else {
                break;
            };
            let (Ok(name), Ok(mut value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            else {
                continue;
            };
            value.set_sensitive(sensitive != 0);
            parts.headers.append(name, value);
        }
        parts
    }
}

impl Packed {
    /// The fields before the headers.
    fn line(&self) -> Line<'_> {
        let mut rest = &self.fields[..];
        let (method, uri, path) = (
            take_str(&mut rest),
            take_str(&mut rest),
            take_str(&mut rest),
        );
        let (&has_query, tail) = rest.split_first().unwrap_or((&0, &[]));
        rest = tail;
        let (query, url) = (take_str(&mut rest), take_str(&mut rest));
        Line {
            method,
            uri,
            path,
            query: (has_query != 0).then_some(query),
            url,
            headers: rest,
        }
    }
}

/// Takes a field `Request::pack` wrote from a `&str` off the front of `packed`.
fn take_str<'a>(packed: &mut &'a [u8]) -> &'a str {
    take_field(packed)
        .and_then(|field| std::str::from_utf8(field).ok())
        .unwrap_or("")
}

/// The bytes a field of `n` bytes takes, with its length in front.
fn field_len(n: usize) -> usize {
    leb128_len(n) + n
}

/// The bytes of `n` as a LEB128 number.
fn leb128_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Appends `field` with its length in front as a LEB128 number, as [`take_field`] reads it.
fn put_field(buffer: &mut Vec<u8>, field: &[u8]) {
    let mut n = field.len();
    while n >= 0x80 {
        buffer.push(n as u8 | 0x80);
        n >>= 7;
    }
    buffer.push(n as u8);
    buffer.extend_from_slice(field);
}

/// Takes a field written by [`put_field`] off the front of `packed`.
fn take_field<'a>(packed: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let (&byte, rest) = packed.split_first()?;
        *packed = rest;
        len |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    let (field, rest) = (packed.get(..len)?, packed.get(len..)?);
    *packed = rest;
    Some(field)
}

/// The comma-separated tokens of every value of header `name`, trimmed, empty ones skipped.
pub(crate) fn header_tokens(
    headers: &HeaderMap,
    name: http::header::HeaderName,
) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The request target of `uri` as sent: its path and query as they stand in the `Uri` when it
/// has no scheme or authority (the usual origin form), without formatting a copy.
fn target(uri: &Uri) -> Cow<'_, str> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(target)) if target.as_str().starts_with('/') => {
            Cow::Borrowed(target.as_str())
        }
        _ => Cow::Owned(uri.to_string()),
    }
}

fn build_url(parts: &Parts) -> String {
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // HTTP/2 requests carry their scheme; a TLS connection's glue marks its HTTP/1.1 requests.
    let secure = parts.uri.scheme() == Some(&Scheme::HTTPS)
        || parts.extensions.get::<Scheme>() == Some(&Scheme::HTTPS);
    let scheme = if secure { "https://" } else { "http://" };
    let mut url = String::with_capacity(scheme.len() + host.len() + path.len());
    url.push_str(scheme);
    url.push_str(host);
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request {
        let mut builder = http::Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        let (parts, ()) = builder
            .header(SEC_WEBSOCKET_PROTOCOL, "a, b")
            .header(SEC_WEBSOCKET_PROTOCOL, "c")
            .body(())
            .unwrap()
            .into_parts();
        Request::new(parts, None)
    }

    #[test]
    fn url_from_host_path_and_query() {
        let r = request("/room?x=1", Some("127.0.0.1:9"));
        assert_eq!(r.url(), "http://127.0.0.1:9/room?x=1");
        assert_eq!(r.path(), "/room");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(request("/", None).url(), "http://localhost/");
        let (mut parts, ()) = http::Request::get("/a")
            .header(HOST, "h")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(Scheme::HTTPS);
        assert_eq!(Request::new(parts, None).url(), "https://h/a");
    }

    #[test]
    fn a_request_keeps_every_header_in_order() {
        let r = request("/a?b=c", Some("h:1"));
        let values: Vec<_> = r
            .headers()
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, ["a, b", "c"]);
        assert_eq!(r.headers().len(), 3);
        assert_eq!(r.uri(), "/a?b=c");
        assert_eq!(r.headers()[HOST], "h:1");
    }

    #[test]
    fn packing_keeps_the_request() {
        let mut r = request("/a?b=c", Some("h:1"));
        r.extensions_mut().insert(7u8);
        let mut sensitive = HeaderValue::from_static("secret");
        sensitive.set_sensitive(true);
        let Head::Parts { parts, .. } = &mut r.head else {
            unreachable!()
        };
        parts.headers.append("x-token", sensitive);
        let before = r.headers().clone();
        r.pack();
        assert!(matches!(r.head, Head::Packed(_)), "the map is gone");
        assert_eq!(r.headers(), &before);
        assert!(r.headers()["x-token"].is_sensitive());
        assert_eq!(r.parts().headers, before);
        assert_eq!(r.parts().extensions.get::<u8>(), Some(&7));
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.path(), "/a");
        assert_eq!(r.query(), Some("b=c"));
        assert_eq!(r.uri(), "/a?b=c");
        assert_eq!(r.url(), "http://h:1/a?b=c");
        assert_eq!(r.protocols().collect::<Vec<_>>(), ["a", "b", "c"]);
        r.extensions_mut().insert(8u8);
        assert_eq!(r.parts().extensions.get::<u8>(), Some(&8));
        assert_eq!(r.into_parts().headers, before);
    }

    #[test]
    fn packing_keeps_method_path_and_query() {
        for (method, uri, path, query) in [
            (Method::CONNECT, "https://h:1/x/y", "/x/y", None),
            (Method::GET, "/?", "/", Some("")),
            (
                Method::from_bytes(b"PURGE").unwrap(),
                "/p?q=%20",
                "/p",
                Some("q=%20"),
            ),
        ] {
            let (parts, ()) = http::Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            let mut r = Request::new(parts, None);
            let url = r.url().to_owned();
            r.pack();
            assert_eq!((r.method(), r.path(), r.query()), (&method, path, query));
            assert_eq!(r.url(), url);
            assert_eq!(r.uri(), uri);
            assert_eq!(r.into_parts().method, method);
        }
    }

    #[test]
    fn long_headers_pack_and_unpack() {
        let long = "x".repeat(20_000);
        let (parts, ()) = http::Request::get("/")
            .header("x-long", &long)
            .header("x-empty", "")
            .body(())
            .unwrap()
            .into_parts();
        let mut r = Request::new(parts, None);
        r.pack();
        assert_eq!(r.headers()["x-long"], long.as_str());
        assert_eq!(r.headers()["x-empty"], "");
        assert_eq!(r.headers().len(), 2);
    }

    #[test]
    fn offered_protocols() {
        let r = request("/", None);
        assert_eq!(r.protocols().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
