#!/usr/bin/env bash
# Installs what the chat demo's browser test (examples/chat/tests/browser.rs) needs on Debian:
# chromium, node and npm when they are missing, and playwright-core into target/browser.
# No browser is downloaded: playwright-core drives Debian's /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
dir="${CARGO_TARGET_DIR:-target}/browser"
mkdir -p "$dir"
cp examples/chat/tests/browser/package.json "$dir/package.json"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
