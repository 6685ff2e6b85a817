//! The guide under `docs/` and the README, compiled: every Rust block in them is a doctest of
//! this crate, so `cargo test --doc -p anyws-docs` fails when the docs and the code part ways.
//! The crate itself is empty.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;

#[cfg(doctest)]
#[doc = include_str!("guide.md")]
struct Guide;

#[cfg(doctest)]
#[doc = include_str!("sse.md")]
struct Sse;

#[cfg(doctest)]
#[doc = include_str!("scale-out.md")]
struct ScaleOut;

#[cfg(doctest)]
#[doc = include_str!("observability.md")]
struct Observability;

#[cfg(doctest)]
#[doc = include_str!("compression.md")]
struct Compression;

#[cfg(doctest)]
#[doc = include_str!("client.md")]
struct Client;

#[cfg(doctest)]
#[doc = include_str!("tls.md")]
struct Tls;
