//! The anyws conformance suite: every scenario of the fixture contract (`FIXTURE.md`) for the
//! `ws` and `sse` transports, written once and run against any adapter.
//!
//! An adapter author implements [`Adapter`] (a runtime, and serving a
//! [`Server`](anyws_core::Server) on a listener with [`Routes`] as the fallback) and writes one
//! line in a test file: [`tests!`] turns every scenario into a `#[test]`. The scenarios are in
//! [`scenarios`]; their clients, in [`client`], are real WebSocket clients, raw HTTP and raw
//! frames over loopback, and run on a tokio runtime of their own, whatever runtime the server
//! uses.
//!
//! ```
//! use anyws_conformance::{Adapter, InProcess, Routes};
//! use anyws_core::{Runtime, Server};
//! use std::future::Future;
//! use std::pin::Pin;
//! use std::sync::{Arc, OnceLock};
//!
//! /// anyws-tokio, on a tokio runtime of its own.
//! struct Tokio;
//!
//! impl Adapter for Tokio {
//!     fn name(&self) -> String {
//!         "tokio".to_owned()
//!     }
//!
//!     fn runtime(&self) -> Arc<dyn Runtime> {
//!         anyws_tokio::runtime()
//!     }
//!
//!     fn serve(
//!         &self,
//!         listener: std::net::TcpListener,
//!         server: Server,
//!         routes: Routes,
//!     ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
//!         static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
//!         let runtime = RUNTIME.get_or_init(|| {
//!             tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
//!         });
//!         let (stopped, on_stop) = tokio::sync::oneshot::channel();
//!         runtime.spawn(async move {
//!             listener.set_nonblocking(true).unwrap();
//!             let listener = tokio::net::TcpListener::from_std(listener).unwrap();
//!             let _ = anyws_tokio::serve(listener, server).fallback(routes).await;
//!             let _ = stopped.send(());
//!         });
//!         Box::pin(async move {
//!             let _ = on_stop.await;
//!         })
//!     }
//! }
//!
//! // In a test file, this line makes one #[test] per scenario:
//! // anyws_conformance::tests!(InProcess(Tokio));
//! // Here, run a single scenario by hand:
//! fn ping_pong(h: &dyn anyws_conformance::Harness) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
//!     Box::pin(anyws_conformance::scenarios::ws::ping_pong(h))
//! }
//! anyws_conformance::run(&InProcess(Tokio), ping_pong);
//! ```
//!
//! [`FixtureProcess`] runs the same scenarios against a fixture program instead, the way
//! outside runners do; the `anyws-fixture` tests use it on every runtime.
#![deny(missing_docs)]

pub mod apps;
pub mod client;
pub mod deflate_client;
mod harness;
pub mod redis_server;
pub mod scenarios;
pub mod soak;
pub mod sse_client;
pub mod transport;

pub use harness::{
    spawn_serving, Adapter, App, FixtureProcess, Harness, InProcess, Instance, Options, Routes,
};
pub use transport::{Over, Transport};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A scenario: a check of one behaviour against servers the harness starts.
pub type Scenario = for<'a> fn(&'a dyn Harness) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The longest a scenario may take before it counts as hung.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one scenario against `harness`, on a fresh tokio runtime for the clients. Panics, and so
/// fails the test, when the scenario fails or takes longer than [`SCENARIO_TIMEOUT`].
pub fn run<H: Harness>(harness: &H, scenario: Scenario) {
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the clients' runtime");
    clients.block_on(async {
        if tokio::time::timeout(SCENARIO_TIMEOUT, scenario(harness))
            .await
            .is_err()
        {
            panic!(
                "{}: the scenario did not finish within {SCENARIO_TIMEOUT:?}",
                harness.name()
            );
        }
    });
}

/// Defines one `#[test]` per scenario of the suite, each run against `$harness` (an expression
/// whose type implements [`Harness`], evaluated once per test).
///
/// ```ignore
/// anyws_conformance::tests!(anyws_conformance::InProcess(MyAdapter));
/// ```
#[macro_export]
macro_rules! tests {
    ($harness:expr) => {
        $crate::__for_each_scenario!($crate::__scenario_test; $harness);
    };
}

/// Defines, in a module `sse`, one `#[test]` per scenario of the SSE list
/// ([`scenarios::sse`]), each run against `$harness` with the SSE transport on. Its clients are
/// real node clients ([`sse_client`]): the tests fail, saying how to install them, when node or
/// the npm packages are missing.
///
/// ```ignore
/// anyws_conformance::sse_tests!(anyws_conformance::InProcess(MyAdapter));
/// ```
#[macro_export]
macro_rules! sse_tests {
    ($harness:expr) => {
        mod sse {
            #[allow(unused_imports)]
            use super::*;
            $crate::__for_each_sse_scenario!($crate::__scenario_test; $harness);
        }
    };
}

/// Defines, in modules `deflate::shared` and `deflate::dedicated`, one `#[test]` per scenario
/// of the permessage-deflate list ([`scenarios::deflate`]), each run against `$harness` with
/// the server in that mode (`--deflate shared` or `--deflate dedicated`).
///
/// ```ignore
/// anyws_conformance::deflate_tests!(anyws_conformance::InProcess(MyAdapter));
/// ```
#[macro_export]
macro_rules! deflate_tests {
    ($harness:expr) => {
        mod deflate {
            mod shared {
                #[allow(unused_imports)]
                use super::super::*;
                $crate::__for_each_deflate_scenario!($crate::__deflate_scenario_test; $harness; Shared);
            }
            mod dedicated {
                #[allow(unused_imports)]
                use super::super::*;
                $crate::__for_each_deflate_scenario!($crate::__deflate_scenario_test; $harness; Dedicated);
            }
        }
    };
}

/// Defines, in a module per transport named, one `#[test]` per WebSocket scenario that applies
/// over it, each run against `$harness` wrapped in [`Over`]: `tls` over [`Transport::Tls`]
/// (`wss://`, with a throwaway certificate), `h2c` over [`Transport::H2c`] (each WebSocket a
/// stream of one cleartext HTTP/2 connection per server, RFC 8441), `h2_tls` over
/// [`Transport::H2Tls`] (the same over TLS with ALPN `h2`). The TLS ones need
/// [`Adapter::serve_tls`] (or a fixture that takes `--tls-cert`).
///
/// ```ignore
/// anyws_conformance::transport_tests!(anyws_conformance::InProcess(MyAdapter); tls, h2c);
/// ```
#[macro_export]
macro_rules! transport_tests {
    ($harness:expr; $($transport:ident),+ $(,)?) => {
        $($crate::__transport_tests!($transport; $harness);)+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __transport_tests {
    (tls; $harness:expr) => {
        mod tls {
            #[allow(unused_imports)]
            use super::*;
            $crate::__for_each_transport_scenario!($crate::__scenario_test; $crate::Over::new($crate::Transport::Tls, $harness));
            $crate::__for_each_http1_transport_scenario!($crate::__scenario_test; $crate::Over::new($crate::Transport::Tls, $harness));
        }
    };
    (h2c; $harness:expr) => {
        mod h2c {
            #[allow(unused_imports)]
            use super::*;
            $crate::__for_each_transport_scenario!($crate::__scenario_test; $crate::Over::new($crate::Transport::H2c, $harness));
        }
    };
    (h2_tls; $harness:expr) => {
        mod h2_tls {
            #[allow(unused_imports)]
            use super::*;
            $crate::__for_each_transport_scenario!($crate::__scenario_test; $crate::Over::new($crate::Transport::H2Tls, $harness));
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __deflate_scenario_test {
    ($harness:expr; $mode:ident; $name:ident) => {
        $crate::__test!(
            $name;
            $harness;
            $crate::scenarios::deflate::$name,
            $crate::scenarios::deflate::Mode::$mode
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_test {
    ($harness:expr; $module:ident :: $name:ident) => {
        $crate::__test!($name; $harness; $crate::scenarios::$module::$name);
    };
}

/// Defines `#[test] fn $name` that runs `$scenario(harness, $args...)` against `$harness`.
#[doc(hidden)]
#[macro_export]
macro_rules! __test {
    ($name:ident; $harness:expr; $scenario:path $(, $arg:expr)*) => {
        #[test]
        fn $name() {
            fn scenario(
                harness: &dyn $crate::Harness,
            ) -> ::std::pin::Pin<
                ::std::boxed::Box<
                    dyn ::std::future::Future<Output = ()> + ::std::marker::Send + '_,
                >,
            > {
                ::std::boxed::Box::pin($scenario(harness $(, $arg)*))
            }
            $crate::run(&$harness, scenario);
        }
    };
}

#[cfg(test)]
mod tests {
    /// Fails to compile unless the scenario is a [`Scenario`](crate::Scenario) (its future is
    /// `Send`, as `tests!` needs).
    macro_rules! is_a_scenario {
        ($harness:expr; $module:ident :: $name:ident) => {
            let _: crate::Scenario = |harness| Box::pin(crate::scenarios::$module::$name(harness));
        };
    }

    macro_rules! is_a_deflate_scenario {
        ($harness:expr; $mode:ident; $name:ident) => {
            let _: crate::Scenario = |harness| {
                Box::pin(crate::scenarios::deflate::$name(
                    harness,
                    crate::scenarios::deflate::Mode::$mode,
                ))
            };
        };
    }

    #[test]
    fn every_scenario_is_listed_and_send() {
        crate::__for_each_scenario!(is_a_scenario; ());
        crate::__for_each_sse_scenario!(is_a_scenario; ());
        crate::__for_each_transport_scenario!(is_a_scenario; ());
        crate::__for_each_http1_transport_scenario!(is_a_scenario; ());
        crate::__for_each_deflate_scenario!(is_a_deflate_scenario; (); Shared);
        crate::__for_each_deflate_scenario!(is_a_deflate_scenario; (); Dedicated);
    }
}
