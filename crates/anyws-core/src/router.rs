//! A router: hooks by URL path, with parameters, built on the [`Resolver`].

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

use crate::{Hooks, Request, Resolver};

/// The parameters a [`Router`] matched in the request path, such as `id` in `/rooms/:id`.
///
/// The router stores them in the request's extensions, so they are readable in `upgrade` and,
/// through [`Peer::request`](crate::Peer::request), in every hook: see [`Request::param`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(Arc<str>, String)>);

impl PathParams {
    /// The value of parameter `name`, percent-decoded.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, v.as_str()))
    }
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
    /// Matches the rest of the path, possibly empty.
    CatchAll(Arc<str>),
}

struct Route {
    pattern: String,
    segments: Vec<Segment>,
    hooks: Arc<dyn Hooks>,
}

/// Hooks by URL path, so that many handlers share one server, as routes do in Nitro and H3.
///
/// Patterns are matched segment by segment, in the order they were added:
/// - `/chat` matches that path only;
/// - `/rooms/:id` (or `/rooms/{id}`) matches `/rooms/lobby` with `id` = `lobby`;
/// - `/files/*rest` (or `/files/{*rest}`) matches everything under `/files/`.
///
/// A path no route matches is answered `404 Not Found` without upgrading. Each peer's namespace
/// is still its URL path unless `upgrade` chooses another, so two routes never share one.
///
/// ```
/// use anyws_core::{async_trait, Hooks, Peer, Router, ServerBuilder};
///
/// struct Room;
///
/// #[async_trait]
/// impl Hooks for Room {
///     async fn open(&self, peer: &Peer) {
///         let room = peer.request().param("id").unwrap_or_default();
///         let _ = peer.send(format!("welcome to room {room}"));
///     }
/// }
///
/// struct Lobby;
/// impl Hooks for Lobby {}
///
/// let router = Router::new().route("/rooms/:id", Room).route("/", Lobby);
/// let builder = ServerBuilder::with_resolver(router);
/// # let _ = builder;
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router with no routes: every request gets `404`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends requests whose path matches `pattern` to `hooks`.
    ///
    /// # Panics
    ///
    /// When `pattern` does not start with `/`, or has a catch-all segment that is not the last.
    pub fn route(mut self, pattern: &str, hooks: impl Hooks) -> Self {
        self.routes.push(Route {
            pattern: pattern.to_owned(),
            segments: parse(pattern),
            hooks: Arc::new(hooks),
        });
        self
    }

    /// The hooks for `path` and the parameters matched, if a route matches.
    pub fn at(&self, path: &str) -> Option<(Arc<dyn Hooks>, PathParams)> {
        self.routes.iter().find_map(|route| {
            matches(&route.segments, path).map(|params| (route.hooks.clone(), params))
        })
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| &r.pattern))
            .finish()
    }
}

#[async_trait]
impl Resolver for Router {
    async fn resolve(&self, request: &mut Request) -> Option<Arc<dyn Hooks>> {
        let (hooks, params) = self.at(request.path())?;
        request.extensions_mut().insert(params);
        Some(hooks)
    }
}

fn parse(pattern: &str) -> Vec<Segment> {
    assert!(
        pattern.starts_with('/'),
        "a route pattern starts with `/`: {pattern:?}"
    );
    let parts: Vec<&str> = pattern[1..].split('/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .filter(|(i, part)| !(part.is_empty() && *i == last && last > 0))
        .map(|(i, part)| {
            let name = part
                .strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .map(|p| (p, true))
                .unwrap_or((part, false));
            match name {
                (inner, true) if inner.starts_with('*') => {
                    assert!(
                        i == last,
                        "a catch-all must be the last segment: {pattern:?}"
                    );
                    Segment::CatchAll(inner[1..].into())
                }
                (inner, true) => Segment::Param(inner.into()),
                (p, false) if p.starts_with(':') => Segment::Param(p[1..].into()),
                (p, false) if p.starts_with('*') => {
                    assert!(
                        i == last,
                        "a catch-all must be the last segment: {pattern:?}"
                    );
                    Segment::CatchAll(p[1..].into())
                }
                (p, false) => Segment::Literal(p.to_owned()),
            }
        })
        .collect()
}

fn matches(segments: &[Segment], path: &str) -> Option<PathParams> {
    let path = path.strip_prefix('/')?;
    let mut parts = path.split('/').peekable();
    // A trailing slash is not a segment of its own: `/rooms/a/` matches `/rooms/:id`.
    let mut params = Vec::new();
    for segment in segments {
        match segment {
            Segment::CatchAll(name) => {
                let rest: Vec<&str> = parts.by_ref().collect();
                params.push((name.clone(), decode(&rest.join("/"))));
                return Some(PathParams(params));
            }
            Segment::Literal(literal) => {
                if parts.next()? != literal {
                    return None;
                }
            }
            Segment::Param(name) => {
                let value = parts.next().filter(|v| !v.is_empty())?;
                params.push((name.clone(), decode(value)));
            }
        }
    }
    match (parts.next(), parts.next()) {
        (None, _) | (Some(""), None) => Some(PathParams(params)),
        _ => None,
    }
}

/// Percent-decodes a path segment; invalid escapes and non-UTF-8 results are kept as written.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H;
    impl Hooks for H {}

    fn at(router: &Router, path: &str) -> Option<Vec<(String, String)>> {
        router.at(path).map(|(_, p)| {
            p.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
    }

    #[test]
    fn literal_param_and_catch_all() {
        let r = Router::new()
            .route("/chat", H)
            .route("/rooms/:id", H)
            .route("/users/{user}/inbox", H)
            .route("/files/*rest", H);
        assert_eq!(at(&r, "/chat"), Some(vec![]));
        assert_eq!(at(&r, "/chat/"), Some(vec![]));
        assert_eq!(at(&r, "/chatter"), None);
        assert_eq!(
            at(&r, "/rooms/lobby"),
            Some(vec![("id".into(), "lobby".into())])
        );
        assert_eq!(
            at(&r, "/rooms/caf%C3%A9"),
            Some(vec![("id".into(), "café".into())])
        );
        assert_eq!(at(&r, "/rooms/"), None);
        assert_eq!(at(&r, "/rooms/a/b"), None);
        assert_eq!(
            at(&r, "/users/7/inbox"),
            Some(vec![("user".into(), "7".into())])
        );
        assert_eq!(
            at(&r, "/files/a/b.txt"),
            Some(vec![("rest".into(), "a/b.txt".into())])
        );
        assert_eq!(at(&r, "/nope"), None);
    }

    #[test]
    fn first_match_wins_and_root() {
        let r = Router::new().route("/", H).route("/:any", H);
        assert_eq!(at(&r, "/"), Some(vec![]));
        assert_eq!(at(&r, "/x"), Some(vec![("any".into(), "x".into())]));
        assert_eq!(decode("%zz%41"), "%zzA");
    }
}
