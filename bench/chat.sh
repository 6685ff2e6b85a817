#!/usr/bin/env bash
# Chat room on one core: the anyws fixture (--app chatroom) against a direct tokio-tungstenite
# chat room (per-peer unbounded queue, writer drains the queue and flushes once).
#
#   bench/chat.sh [CLIENTS] [BATCHES]      # defaults 32 and 20
#
# Each server runs pinned to CPU 0 (`taskset -c 0`, so its tokio multi-thread runtime has one
# worker), the load client pinned to CPU 1. The client opens CLIENTS connections to 127.0.0.1,
# waits for `ready` on each, then runs one warm-up batch and BATCHES measured ones: in a batch
# every client sends 640 texts of 30 B (all fed, then one flush) and the batch ends when every
# client has received all CLIENTS x 640 of them (its own included), i.e. CLIENTS^2 x 640
# deliveries. The table gives delivered messages per second, the server's CPU (utime+stime from
# /proc/PID/stat) per 1,000 delivered, its peak RSS (VmHWM), and anyws's figures divided by the
# control's. All sockets, client and server, use TCP_NODELAY (anyws's adapter sets it; the
# control sets it to match). Every step is bounded by `timeout` or a watchdog; all traffic stays
# on 127.0.0.1. Other load on the two CPUs skews the figures: the load average is printed.
set -euo pipefail

clients=${1:-32}
batches=${2:-20}
messages=640
if ! [[ $clients =~ ^[1-9][0-9]*$ && $batches =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/chat.sh [CLIENTS] [BATCHES]" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

timeout 1200 cargo build --release -p anyws-fixture -p anyws-bench
release=${CARGO_TARGET_DIR:-$root/target}/release
fixture=$release/anyws-fixture
bench=$release/anyws-bench

if (($(nproc) >= 2)); then
    server_cpu=0 client_cpu=1
else
    echo "chat.sh: one CPU only; server and client share CPU 0" >&2
    server_cpu=0 client_cpu=0
fi

read -r port_low _ </proc/sys/net/ipv4/ip_local_port_range

workdir=$(mktemp -d)
server_pid=
watchdog_pid=
# watchdog PID: kills PID after 15 minutes unless sent SIGTERM first, in which case it also
# ends its own `sleep`, so nothing outlives the script or holds its output open.
watchdog() {
    local target=$1 sleeper=
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep 900 &
    sleeper=$!
    if wait "$sleeper"; then
        kill -KILL "$target" 2>/dev/null || true
    fi
}
stop_server() {
    if [[ -n $watchdog_pid ]]; then
        kill -TERM "$watchdog_pid" 2>/dev/null || true
        wait "$watchdog_pid" 2>/dev/null || true
        watchdog_pid=
    fi
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local waited
        for ((waited = 0; waited < 50; waited++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
cleanup() {
    stop_server
    rm -rf "$workdir"
}
trap cleanup EXIT

# A port below the ephemeral range that nothing listens on.
free_port() {
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % (port_low > 21000 ? port_low - 20000 : 1000)))
        if [[ -z $(ss -Htln "sport = :$port" 2>/dev/null) ]]; then
            echo "$port"
            return 0
        fi
    done
    echo "chat.sh: no free port found" >&2
    return 1
}

# run_one NAME COMMAND...: serves COMMAND on a free port (PORT in its environment, the port
# also substituted for the word @PORT@ in its arguments), runs the chat client against it and
# stops it. Leaves the client's RESULT line in $workdir/NAME.result.
run_one() {
    local name=$1
    shift
    local port log args=() arg waited
    port=$(free_port)
    log=$workdir/$name.log
    for arg in "$@"; do
        args+=("${arg//@PORT@/$port}")
    done

    # `exec` keeps $! the server's own pid (taskset execs it too), which the client reads.
    (PORT=$port exec taskset -c "$server_cpu" "${args[@]}" >"$log" 2>&1) &
    server_pid=$!
    # Whatever happens to this script, the server does not outlive 15 minutes.
    watchdog "$server_pid" </dev/null >/dev/null 2>&1 &
    watchdog_pid=$!
    for ((waited = 0; waited < 100; waited++)); do
        grep -q "listening on" "$log" && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "chat.sh: $name exited at start:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    # The fixture falls back to [::1] when 127.0.0.1:PORT is taken; insist on 127.0.0.1.
    if ! grep -q "listening on 127.0.0.1:$port" "$log"; then
        echo "chat.sh: $name is not listening on 127.0.0.1:$port within 10 s:" >&2
        cat "$log" >&2
        exit 1
    fi

    echo
    echo "== $name (pid $server_pid, port $port, load average $(cut -d' ' -f1-3 /proc/loadavg)):" \
        "$(grep "listening on" "$log" | head -n 1)"
    local status=0
    timeout 600 taskset -c "$client_cpu" "$bench" chat --url "ws://127.0.0.1:$port/" \
        --clients "$clients" --messages "$messages" --batches "$batches" \
        --server-pid "$server_pid" --timeout-secs 540 \
        | tee "$workdir/$name.out" || status=$?
    stop_server

    if ((status != 0)); then
        echo "chat.sh: the chat client failed against $name (exit $status); server log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    grep '^RESULT ' "$workdir/$name.out" >"$workdir/$name.result"
}

# field NAME KEY: one value from NAME's RESULT line.
field() {
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$workdir/$1.result"
}

run_one anyws "$fixture" --app chatroom
run_one control "$bench" control-server --app chatroom --port @PORT@

echo
echo "Chat room, $clients clients x $messages messages of 30 B, $batches measured batches" \
    "(+1 warm-up), server on CPU $server_cpu, client on CPU $client_cpu"
printf '%-52s %12s %14s %12s %12s %10s %10s\n' server "msgs/s" "CPU µs/1,000" \
    "(schedstat)" "peak RSS" "client CPU" "batch ms"
for name in anyws control; do
    case $name in
    anyws) label="anyws-fixture --app chatroom" ;;
    control) label="tokio-tungstenite, per-peer queue, batched writer" ;;
    esac
    printf '%-52s %12s %14s %12s %8s KiB %9s%% %10s\n' "$label" "$(field "$name" msgs_per_sec)" \
        "$(field "$name" cpu_us_per_1k)" "$(field "$name" sched_us_per_1k)" \
        "$(field "$name" hwm_kib)" "$(field "$name" client_cpu_pct)" \
        "$(field "$name" batch_ms_median)"
done
awk -v ac="$(field anyws cpu_us_per_1k)" -v cc="$(field control cpu_us_per_1k)" \
    -v am="$(field anyws msgs_per_sec)" -v cm="$(field control msgs_per_sec)" 'BEGIN {
    printf "%-52s %12s %14s\n", "ratio anyws / control",
        (cm > 0 ? sprintf("%.2fx", am / cm) : "n/a"), (cc > 0 ? sprintf("%.2fx", ac / cc) : "n/a") }'
echo "(CPU from /proc/PID/stat in clock ticks; schedstat is a finer cross-check from live threads." \
    "batch ms is the median batch. A client near 100% CPU caps msgs/s.)"
