#!/usr/bin/env bash
# Runs Autobahn|Testsuite (the standard WebSocket conformance suite) against the fixture's echo app.
# Usage: scripts/autobahn.sh [RUNTIME...]   (default: tokio)
# Installs wstest into target/wstest on first use. Reports land in target/autobahn/RUNTIME/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
runtimes=("$@"); [ ${#runtimes[@]} -gt 0 ] || runtimes=(tokio)
if ! setup_log=$(bash scripts/autobahn/setup.sh target/wstest 2>&1); then
  printf '%s\n' "$setup_log" >&2
  echo "autobahn.sh: installing Autobahn|Testsuite failed" >&2
  exit 1
fi
wstest=$PWD/target/wstest/bin/wstest
cargo build --release -q -p anyws-fixture
status=0
for runtime in "${runtimes[@]}"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PORT=$port HOST=127.0.0.1 target/release/anyws-fixture --runtime "$runtime" --app echo \
    >"target/autobahn-$runtime.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "== Autobahn|Testsuite against anyws-fixture --runtime $runtime --app echo"
  bash scripts/autobahn/fuzz-server.sh "$wstest" "ws://127.0.0.1:$port" \
    "anyws-$runtime" "target/autobahn/$runtime" || status=1
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
done
exit $status
