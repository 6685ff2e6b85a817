#!/usr/bin/env bash
# Runs Autobahn|Testsuite (the standard WebSocket conformance suite) against the fixture's echo app.
# Usage: scripts/autobahn.sh [RUNTIME...]   (default: tokio)
#
# Each runtime is run three times:
#   off        --deflate off: every case but 12.* and 13.* (the 301 cases without compression)
#   shared     --deflate shared: 12.* and 13.* (the 216 permessage-deflate cases)
#   dedicated  --deflate dedicated: 12.* and 13.*
# Cases 1.* to 11.* offer no extension, and a server with compression on answers them exactly as
# one with it off, so the three runs together put all 517 cases to both compression modes.
# The compression cases with the largest messages (12.*.9, 12.*.10 and 12.*.13 to 18, and the same
# of 13.*: 64 and 128 KiB messages, and 32 to 128 KiB ones in 256-byte fragments; nine tenths of
# the time of 12.* and 13.*) run on the runtimes of AUTOBAHN_LARGE (default: tokio; "all" for
# every one). The others run the other 120 of the 216, which cover every payload kind and every
# offer, with messages up to 32 KiB, whole and in fragments: the compression code is the core's,
# the same on every runtime, and what differs per runtime (the upgrade answer, the byte stream) is
# exercised as much by a small message as by a large one. In dedicated mode the large cases run
# with one payload (12.1's and 13.*'s, a JSON text) and every offer: 12.2 to 12.5 send other
# payloads (a bitmap, German text, HTML, a PDF) with the default offer, which shared mode puts
# to the large sizes and both modes to the smaller ones; the per-peer compressor's window and
# context are what dedicated mode adds, and those the offers of 13.* vary.
# AUTOBAHN_FULL=1 runs all 517 cases in shared and in dedicated mode instead; AUTOBAHN_MODES picks
# the modes (default "off shared dedicated"). wstest (Python 2, one core) is the bottleneck, so
# AUTOBAHN_JOBS runs (default 2) go at once, each with its own server and port.
#
# Installs wstest into target/wstest on first use. Reports land in
# target/autobahn/RUNTIME-MODE/index.html; exits 1 unless every case of every run is OK or
# INFORMATIONAL.
set -euo pipefail
cd "$(dirname "$0")/.."
runtimes=("$@"); [ ${#runtimes[@]} -gt 0 ] || runtimes=(tokio)
read -r -a modes <<<"${AUTOBAHN_MODES:-off shared dedicated}"
jobs=${AUTOBAHN_JOBS:-2}
if ! setup_log=$(bash scripts/autobahn/setup.sh target/wstest 2>&1); then
  printf '%s\n' "$setup_log" >&2
  echo "autobahn.sh: installing Autobahn|Testsuite failed" >&2
  exit 1
fi
wstest=$PWD/target/wstest/bin/wstest
cargo build --release -q -p anyws-fixture
mkdir -p target/autobahn
# The compression cases with the largest messages, as exclude patterns.
large=$(for group in 12 13; do for case in 9 10 13 14 15 16 17 18; do printf '"%s.*.%s",' $group $case; done; done)
large="[${large%,}]"
# The same for dedicated mode on the runtimes of AUTOBAHN_LARGE: 12.2 to 12.5's.
payloads=$(for sub in 2 3 4 5; do for case in 9 10 13 14 15 16 17 18; do printf '"12.%s.%s",' $sub $case; done; done)
payloads="[${payloads%,}]"

# One run: a fixture on a free port, the fuzzing client against it, the fixture stopped.
# Writes target/autobahn/NAME.out; exits with fuzz-server.sh's status.
run() {
  local runtime=$1 mode=$2 name="$1-$2" cases='' exclude=''
  if [ "$mode" != off ]; then
    cases='["12.*","13.*"]'
    case " ${AUTOBAHN_LARGE:-tokio} " in
      *" all "* | *" $runtime "*) exclude='[]' ;;
      *) exclude=$large ;;
    esac
    if [ "$mode" = dedicated ] && [ "$exclude" = '[]' ]; then exclude=$payloads; fi
    if [ "${AUTOBAHN_FULL:-0}" = 1 ]; then cases='["*"]' exclude='[]'; fi
  fi
  local port pid status=0 started=$SECONDS
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  PORT=$port HOST=127.0.0.1 target/release/anyws-fixture --runtime "$runtime" --app echo \
    --deflate "$mode" >"target/autobahn/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  CASES=$cases EXCLUDE=$exclude INCLUDE_DEFLATE=0 bash scripts/autobahn/fuzz-server.sh "$wstest" "ws://127.0.0.1:$port" \
    "anyws-$name" "target/autobahn/$name" >"target/autobahn/$name.out" 2>&1 || status=$?
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  echo "($((SECONDS - started)) s)" >>"target/autobahn/$name.out"
  return $status
}

# Prints a finished run's result.
report() {
  echo "== Autobahn|Testsuite against anyws-fixture --runtime ${1%-*} --app echo --deflate ${1##*-}"
  cat "target/autobahn/$1.out"
}

status=0
declare -A running=()
for runtime in "${runtimes[@]}"; do
  for mode in "${modes[@]}"; do
    while [ ${#running[@]} -ge "$jobs" ]; do
      if wait -n -p done_pid; then rc=0; else rc=$?; fi
      [ "$rc" = 0 ] || status=1
      report "${running[$done_pid]}"
      unset "running[$done_pid]"
    done
    run "$runtime" "$mode" &
    running[$!]="$runtime-$mode"
  done
done
for pid in "${!running[@]}"; do
  wait "$pid" || status=1
  report "${running[$pid]}"
done
exit $status
