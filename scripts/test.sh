#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, each feature alone, unit, doc and integration
# tests (the chat demo's among them in headless Chromium), and Autobahn|Testsuite. Needs only the
# Rust toolchain on Debian; it installs the rest itself (chromium, node and playwright-core for the
# browser test through scripts/browser-setup.sh, Autobahn|Testsuite into target/wstest).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n== %s\n' "$*"; }

step "format";  cargo fmt --all -- --check
step "clippy";  cargo clippy --workspace --all-targets --all-features -- -D warnings
step "docs";    RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features -q
step "each feature alone"
cargo check -q -p anyws --no-default-features
for feature in tokio smol async-std axum actix hyper; do
  cargo check -q -p anyws --no-default-features --features "$feature"
done
cargo check -q -p anyws --all-features
# The smol and async-std builds must not pull in a tokio runtime (hyper's tokio "sync" is fine).
for feature in smol async-std; do
  if cargo tree -p anyws --no-default-features --features "$feature" -e features,normal,build -i tokio 2>/dev/null \
      | grep -E 'tokio feature "(rt|rt-multi-thread|net|time|io-util)"'; then
    echo "the $feature build pulls in tokio runtime features" >&2
    exit 1
  fi
done
step "fixture"; cargo build --release -p anyws-fixture
step "browser"; bash scripts/browser-setup.sh
step "tests";   cargo test --workspace --all-features
step "autobahn"
# Autobahn|Testsuite's installer needs python3 with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
fi
bash scripts/autobahn.sh tokio smol async-std axum hyper actix
