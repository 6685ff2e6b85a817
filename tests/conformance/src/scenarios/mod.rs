//! The scenarios, one `pub async fn(&dyn Harness)` each. Every scenario starts the server(s) it
//! needs, with the options it needs, and stops them when it ends.

/// Defines public scenarios that each start a server with the default options and run the body
/// of the same name in [`shared`] on it.
macro_rules! on_a_default_server {
    ($($(#[doc = $doc:literal])* $name:ident;)*) => {
        $(
            $(#[doc = $doc])*
            pub async fn $name(harness: &dyn $crate::Harness) {
                let f = $crate::client::Fixture::start_default(harness).await;
                $crate::scenarios::shared::$name(&f).await;
            }
        )*
    };
}

pub mod clock;
pub mod deflate;
pub mod hardening;
pub mod heads;
pub mod lifecycle;
pub mod limits;
mod shared;
pub mod sse;
pub mod stats;
pub mod ws;

/// Calls `$m!($harness; module::scenario)` for every scenario of the suite: those that also run
/// over the other transports, then the rest.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_scenario {
    ($m:path; $harness:expr) => {
        $crate::__for_each_transport_scenario!($m; $harness);
        $crate::__for_each_http1_transport_scenario!($m; $harness);
        $m!($harness; ws::publish_nobody);
        $m!($harness; ws::server_survives_every_scenario);
        $m!($harness; clock::clock_stream);
        $m!($harness; clock::clock_resumes_after_last_event_id);
        $m!($harness; clock::clock_rejects_absurd_parameters);
        $m!($harness; clock::clock_stops_when_the_client_aborts);
        $m!($harness; heads::request_head_over_the_limit_gets_431);
        $m!($harness; heads::request_head_limit_follows_the_option);
        $m!($harness; heads::handshake_needs_http_1_1_and_host);
        $m!($harness; stats::stats_count_messages_and_closes);
        $m!($harness; stats::stats_count_refused_upgrades);
        $m!($harness; stats::stats_count_limit_refusals);
    };
}

/// Calls `$m!($harness; module::scenario)` for every WebSocket scenario that applies over every
/// transport ([`Transport`](crate::Transport)): over TLS and over HTTP/2 streams. Left out:
/// the HTTP/1.1 handshake's own checks (in `__for_each_http1_transport_scenario`), the raw
/// request-head tests of [`heads`] (the HTTP/1.1 parser, the same over TLS; over HTTP/2 the
/// heads are hyper's HPACK and its header-list limit), the event streams of [`clock`] and the
/// counters of [`stats`] (plain routes, not WebSockets; `tests/fixture/tests/http2.rs` serves
/// an event stream over HTTP/2), `publish_nobody` (the publish route), and
/// `server_survives_every_scenario` (every body again on one
/// server: the scenarios here already share a TLS setup and an HTTP/2 connection per server).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_transport_scenario {
    ($m:path; $harness:expr) => {
        $m!($harness; ws::peers_route);
        $m!($harness; ws::publish_every_namespace);
        $m!($harness; ws::subprotocol_selected);
        $m!($harness; ws::subprotocol_not_selected);
        $m!($harness; ws::context_and_namespaces);
        $m!($harness; ws::open_order);
        $m!($harness; ws::ping_pong);
        $m!($harness; ws::binary_command);
        $m!($harness; ws::peers_command);
        $m!($harness; ws::wait_for_drain);
        $m!($harness; ws::echo_exact);
        $m!($harness; ws::binary_as_text);
        $m!($harness; ws::ordering);
        $m!($harness; ws::fragmentation);
        $m!($harness; ws::ping_frame);
        $m!($harness; ws::ping_pong_hooks);
        $m!($harness; ws::close_handshake);
        $m!($harness; ws::unmasked);
        $m!($harness; ws::abrupt_disconnect);
        $m!($harness; ws::back_to_back_1mib_messages);
        $m!($harness; limits::panic_closes_1011);
        $m!($harness; limits::invalid_utf8);
        $m!($harness; limits::max_message_size_closes_1009);
        $m!($harness; limits::stalled_reader_is_cut_off);
        $m!($harness; limits::stalled_reader_is_cut_off_fast_publisher);
        $m!($harness; limits::slow_reader_gets_every_publish_whole);
        $m!($harness; limits::concurrent_publishers_keep_their_order);
        $m!($harness; limits::idle_timeout_drops_silent_peers);
        $m!($harness; limits::graceful_shutdown_closes_1001);
        $m!($harness; limits::echo_app);
        $m!($harness; limits::chatroom_app);
        $m!($harness; hardening::dead_peer_is_closed_and_close_hook_runs);
        $m!($harness; hardening::max_connections_gets_503);
        $m!($harness; hardening::max_connections_per_ip_gets_429);
        $m!($harness; hardening::message_rate_closes_1008);
        $m!($harness; hardening::origin_allow_list_gets_403);
        $m!($harness; hardening::invalid_utf8_fails_fast);
        $m!($harness; lifecycle::stalled_peer_leaves_after_its_close);
        $m!($harness; lifecycle::unanswered_close_leaves);
        $m!($harness; lifecycle::shutdown_with_a_stalled_peer);
        $m!($harness; lifecycle::peers_listed_from_open);
    };
}

/// Calls `$m!($harness; module::scenario)` for the scenarios of the HTTP/1.1 handshake, which
/// apply over TLS but not over HTTP/2: RFC 8441 has no `Sec-WebSocket-Key` nor
/// `Sec-WebSocket-Accept`, no `Upgrade` and `Connection` headers, and answers `200`, not
/// `101`. (`tests/fixture/tests/http2.rs` checks the HTTP/2 handshake's refusals.)
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_http1_transport_scenario {
    ($m:path; $harness:expr) => {
        $m!($harness; ws::root_answers);
        $m!($harness; ws::unauthorized);
        $m!($harness; ws::accept_headers);
        $m!($harness; ws::debug_fields);
        $m!($harness; ws::broken_handshakes);
        $m!($harness; limits::handshake_timeout_closes_slow_connections);
    };
}

/// Calls `$m!($harness; module::scenario)` for every scenario of the SSE list ([`sse`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_sse_scenario {
    ($m:path; $harness:expr) => {
        $m!($harness; sse::welcome_and_ids);
        $m!($harness; sse::peers_route);
        $m!($harness; sse::publish_every_namespace);
        $m!($harness; sse::open_order);
        $m!($harness; sse::ping_pong);
        $m!($harness; sse::binary_command);
        $m!($harness; sse::debug_fields);
        $m!($harness; sse::peers_command);
        $m!($harness; sse::wait_for_drain);
        $m!($harness; sse::echo_exact);
        $m!($harness; sse::ordering);
        $m!($harness; sse::websocket_and_sse_together);
        $m!($harness; sse::panic_ends_stream);
        $m!($harness; sse::unauthorized);
        $m!($harness; sse::bad_posts);
        $m!($harness; sse::graceful_shutdown);
        $m!($harness; sse::stalled_reader_is_cut_off);
        $m!($harness; sse::origin_allow_list_gets_403);
        $m!($harness; sse::max_connections_gets_503);
        $m!($harness; sse::message_rate_ends_stream);
        $m!($harness; sse::peers_listed_from_open);
        $m!($harness; heads::sse_request_heads);
        $m!($harness; stats::stats_count_sse_peers);
    };
}

/// Calls `$m!($harness; $mode; scenario)` for every scenario of the permessage-deflate list
/// ([`deflate`]); `$mode` is a [`deflate::Mode`] variant.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_deflate_scenario {
    ($m:path; $harness:expr; $mode:ident) => {
        $m!($harness; $mode; negotiation);
        $m!($harness; $mode; echo);
        $m!($harness; $mode; mixed_peers_in_a_topic);
        $m!($harness; $mode; bad_input);
    };
}
