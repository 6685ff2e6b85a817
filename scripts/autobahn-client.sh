#!/usr/bin/env bash
# Runs Autobahn|Testsuite in client mode: its fuzzing server (wstest -m fuzzingserver) against
# the anyws client, `anyws-fixture autobahn-client`, which echoes every message of every case.
# Usage: scripts/autobahn-client.sh [RUNTIME...]   (default: tokio smol async-std)
#
# Each runtime's client gets a fuzzing server of its own (wstest is Python 2 on one core, the
# bottleneck), AUTOBAHN_JOBS (default 2) at once. Every runtime runs the 517 cases but the
# compression cases with the largest messages (12.*.9, 12.*.10, 12.*.13 to 18 and the same of
# 13.*: 64 and 128 KiB messages, whole and in 256-byte fragments), which take four fifths of the
# time of a full run. Of those, the runtimes of AUTOBAHN_LARGE (default: tokio; "all" for every
# one) run the ones of 12.1 and 13.1 (text messages; the default offer, and context takeover as
# offered); AUTOBAHN_FULL=1 runs all 517 on every runtime. The compression code is the core's,
# the same on every runtime; what differs per runtime (the connector, the byte stream) is
# exercised as much by a small message as by a large one.
#
# Installs wstest into target/wstest on first use. Reports land in
# target/autobahn/client-RUNTIME/index.html; exits 1 unless every case of every run is OK or
# INFORMATIONAL (behaviour and close behaviour both).
set -euo pipefail
cd "$(dirname "$0")/.."
runtimes=("$@"); [ ${#runtimes[@]} -gt 0 ] || runtimes=(tokio smol async-std)
jobs=${AUTOBAHN_JOBS:-2}
if ! setup_log=$(bash scripts/autobahn/setup.sh target/wstest 2>&1); then
  printf '%s\n' "$setup_log" >&2
  echo "autobahn-client.sh: installing Autobahn|Testsuite failed" >&2
  exit 1
fi
wstest=$PWD/target/wstest/bin/wstest
cargo build --release -q -p anyws-fixture
mkdir -p target/autobahn

# Exclude patterns (regular expressions, as the fuzzing server reads them) for the large
# compression cases; with $1 = "some", all but those of 12.1 and 13.1.
large() {
  local list='' group sub case
  for group in 12 13; do
    for sub in 1 2 3 4 5 6 7; do
      [ "$group" = 12 ] && [ "$sub" -gt 5 ] && continue
      [ "$1" = some ] && [ "$sub" = 1 ] && continue
      for case in 9 10 13 14 15 16 17 18; do list+="\"$group.$sub.$case\","; done
    done
  done
  echo "[${list%,}]"
}

# One run: a fuzzing server on a free port, the client against it, the server stopped.
# Writes target/autobahn/client-RUNTIME.out; fails unless every case passed.
run() {
  local runtime=$1 name="client-$1" exclude='[]' started=$SECONDS
  if [ "${AUTOBAHN_FULL:-0}" != 1 ]; then
    case " ${AUTOBAHN_LARGE:-tokio} " in
      *" all "* | *" $runtime "*) exclude=$(large some) ;;
      *) exclude=$(large all) ;;
    esac
  fi
  local out=$PWD/target/autobahn/$name work port pid status=0
  rm -rf "$out"; mkdir -p "$out"
  work=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/spec.json" <<EOS
{"url": "ws://127.0.0.1:$port", "outdir": "$out", "cases": ["*"], "exclude-cases": $exclude,
 "exclude-agent-cases": {}}
EOS
  (cd "$work" && exec "$wstest" -m fuzzingserver --webport 0 -s spec.json) >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  {
    target/release/anyws-fixture autobahn-client --runtime "$runtime" \
      --url "ws://127.0.0.1:$port" --agent "anyws-$runtime" || status=$?
    if [ $status = 0 ]; then
      python3 scripts/autobahn/summary.py "$out/index.json" "anyws-$runtime" || status=$?
    fi
  } >"target/autobahn/$name.out" 2>&1
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  rm -rf "$work"
  echo "($((SECONDS - started)) s)" >>"target/autobahn/$name.out"
  return $status
}

report() {
  echo "== Autobahn|Testsuite fuzzing server against anyws-fixture autobahn-client --runtime $1"
  cat "target/autobahn/client-$1.out"
}

status=0
declare -A running=()
for runtime in "${runtimes[@]}"; do
  while [ ${#running[@]} -ge "$jobs" ]; do
    if wait -n -p done_pid; then rc=0; else rc=$?; fi
    [ "$rc" = 0 ] || status=1
    report "${running[$done_pid]}"
    unset "running[$done_pid]"
  done
  run "$runtime" &
  running[$!]=$runtime
done
for pid in "${!running[@]}"; do
  wait "$pid" || status=1
  report "${running[$pid]}"
done
exit $status
