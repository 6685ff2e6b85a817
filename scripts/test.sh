#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, each feature alone, unit, doc and integration
# tests (the chat demo's among them in headless Chromium), and Autobahn|Testsuite against the
# servers and the client. Needs only the Rust toolchain on Debian; it installs the rest itself:
# redis-server from Debian, chromium, node and playwright-core for the browser test
# (scripts/browser-setup.sh), the npm packages of the SSE clients into
# tests/conformance/sse-client/node_modules and target/node (with node's `ws` for the
# permessage-deflate interop test), Python's `websockets` into a virtual environment in
# target/python, Autobahn|Testsuite into target/wstest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

# The scale-out tests start their own redis-server (a free port, a temporary directory, no
# persistence); only the program is needed, not a running service.
if ! command -v redis-server >/dev/null 2>&1; then
  step "install redis-server"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

step "format";  cargo fmt --all -- --check
step "clippy";  cargo clippy --workspace --all-targets --all-features -- -D warnings
step "docs";    RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features -q
step "each feature alone"
cargo check -q -p anyws --no-default-features
for feature in tokio smol async-std axum actix hyper redis redis-cluster metrics admin tls "smol tls" "async-std tls"; do
  cargo check -q -p anyws --no-default-features --features "$feature"
done
cargo check -q -p anyws --all-features
# The smol and async-std builds must not pull in a tokio runtime (hyper's tokio "sync" is fine, and
# so is "io-util": h2, hyper's HTTP/2, uses tokio's I/O traits, not its reactor or timers).
for feature in smol async-std "smol redis" "async-std redis" "smol redis-cluster" "async-std redis-cluster" "smol metrics admin" "async-std metrics admin" "smol tls" "async-std tls"; do
  if cargo tree -p anyws --no-default-features --features "$feature" -e features,normal,build -i tokio 2>/dev/null \
      | grep -E 'tokio feature "(rt|rt-multi-thread|net|time)"'; then
    echo "the $feature build pulls in tokio runtime features" >&2
    exit 1
  fi
done
step "fixture"; cargo build --release -p anyws-fixture
step "SSE clients"
# The SSE scenarios drive real clients (crossws's WebSocketSSE, the eventsource package) in node.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
node --version
sse_client=tests/conformance/sse-client
if [ ! -d "$sse_client/node_modules/crossws" ] || [ ! -d "$sse_client/node_modules/eventsource" ]; then
  npm ci --prefix "$sse_client" --no-audit --no-fund
fi
# The EventSource check of /clock (tests/fixture/tests/eventsource.rs) runs the `eventsource`
# package of its own, and the permessage-deflate interop test (tests/fixture/tests/interop.rs)
# node's `ws` and Python's `websockets`, in a virtual environment of its own.
if [ ! -d target/node/node_modules/eventsource ] || [ ! -d target/node/node_modules/ws ]; then
  npm install --prefix target/node --no-audit --no-fund eventsource@3 ws@8 >/dev/null
fi
if ! target/python/bin/python -c 'import websockets' >/dev/null 2>&1; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -m ensurepip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf target/python
  python3 -m venv target/python
  target/python/bin/pip install -q --disable-pip-version-check websockets==17.4
fi
step "browser"; bash scripts/browser-setup.sh
step "tests";   cargo test --workspace --all-features
# Every benchmark workload on every server, tiny, so the benchmark cannot rot; the figures are
# not judged (the full run is `bench/run.sh`, see BENCHMARKS.md).
step "benchmark smoke run"; bash bench/run.sh --smoke
step "autobahn"
# Autobahn|Testsuite's installer needs python3 with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
fi
bash scripts/autobahn.sh tokio smol async-std axum hyper actix
step "autobahn client"
# The fuzzing server against the anyws client on each runtime (about 3 minutes on 2 cores).
bash scripts/autobahn-client.sh tokio smol async-std
printf '\n== all passed (%d s)\n' "$SECONDS"
