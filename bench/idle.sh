#!/usr/bin/env bash
# Idle connection cost: the anyws fixture (--app echo) against a direct tokio-tungstenite echo
# server with default buffers and with small buffers (read 4096 B, write 0).
#
#   bench/idle.sh [CONNECTIONS]      # default 10000
#
# Each server runs pinned to CPU 0 (`taskset -c 0`, so its tokio multi-thread runtime has one
# worker), the load client pinned to CPU 1. For each server the client reads its RSS and CPU,
# opens CONNECTIONS WebSocket connections to 127.0.0.1 (200 handshakes in flight), echoes one
# message on each, waits a second, reads RSS and CPU again and closes them all. The table gives
# KiB and server CPU µs per connection, and anyws's cost as a multiple of each control's.
# Every step is bounded by `timeout`; all traffic stays on 127.0.0.1.
set -euo pipefail

connections=${1:-10000}
if ! [[ $connections =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/idle.sh [CONNECTIONS]" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

timeout 1200 cargo build --release -p anyws-fixture -p anyws-bench
release=${CARGO_TARGET_DIR:-$root/target}/release
fixture=$release/anyws-fixture
bench=$release/anyws-bench

# 10,000 sockets need more than the usual 1024 descriptors, in the servers and in the client.
# Raise the soft limit to 65536 or the hard limit, whichever is lower; the children inherit it.
wanted=65536
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < wanted)); then
    wanted=$hard
fi
ulimit -n "$wanted"
if ((connections + 64 > wanted)); then
    echo "idle.sh: $connections connections need more than the open-file limit of $wanted" \
        "(hard limit $hard, which root cannot raise here either); lower CONNECTIONS" >&2
    exit 1
fi

# All the client's sockets go to one server address, so each needs its own ephemeral port.
read -r port_low port_high </proc/sys/net/ipv4/ip_local_port_range
if ((connections > port_high - port_low + 1)); then
    echo "idle.sh: $connections connections exceed the $((port_high - port_low + 1)) ephemeral" \
        "ports in net.ipv4.ip_local_port_range ($port_low-$port_high)" >&2
    exit 1
fi

if (($(nproc) >= 2)); then
    server_cpu=0 client_cpu=1
else
    echo "idle.sh: one CPU only; server and client share CPU 0" >&2
    server_cpu=0 client_cpu=0
fi

workdir=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
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
    echo "idle.sh: no free port found" >&2
    return 1
}

# run_one NAME COMMAND...: serves COMMAND on a free port (PORT in its environment, the port
# also substituted for the word @PORT@ in its arguments), runs the idle client against it and
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

    PORT=$port taskset -c "$server_cpu" "${args[@]}" >"$log" 2>&1 &
    server_pid=$!
    for ((waited = 0; waited < 100; waited++)); do
        grep -q "listening on" "$log" && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "idle.sh: $name exited at start:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if ! grep -q "listening on" "$log"; then
        echo "idle.sh: $name did not start listening within 10 s:" >&2
        cat "$log" >&2
        exit 1
    fi

    echo
    echo "== $name (pid $server_pid, port $port): $(grep "listening on" "$log" | head -n 1)"
    local status=0
    timeout 600 taskset -c "$client_cpu" "$bench" idle --url "ws://127.0.0.1:$port/" \
        --connections "$connections" --server-pid "$server_pid" \
        | tee "$workdir/$name.out" || status=$?

    kill -TERM "$server_pid" 2>/dev/null || true
    for ((waited = 0; waited < 50; waited++)); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=

    if ((status != 0)); then
        echo "idle.sh: the idle client failed against $name (exit $status); server log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    grep '^RESULT ' "$workdir/$name.out" >"$workdir/$name.result"
}

# field NAME KEY: one value from NAME's RESULT line.
field() {
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$workdir/$1.result"
}

run_one anyws "$fixture" --app echo
run_one control-default "$bench" control-server --port @PORT@
run_one control-small "$bench" control-server --port @PORT@ --small-buffers

anyws_kib=$(field anyws kib_per_conn)
anyws_cpu=$(field anyws cpu_us_per_conn)
echo
echo "Idle connection cost, $connections connections, server on CPU $server_cpu, client on CPU $client_cpu"
echo "(ratio = anyws's cost divided by that server's)"
printf '%-36s %12s %12s %9s %12s %10s %10s\n' server "RSS before" "RSS after" KiB/conn \
    "CPU µs/conn" "KiB ratio" "CPU ratio"
for name in anyws control-default control-small; do
    case $name in
    anyws) label="anyws-fixture --app echo" ;;
    control-default) label="tokio-tungstenite (default buffers)" ;;
    control-small) label="tokio-tungstenite (small buffers)" ;;
    esac
    kib=$(field "$name" kib_per_conn)
    cpu=$(field "$name" cpu_us_per_conn)
    if [[ $name == anyws ]]; then
        ratios=$(printf '%10s %10s' - -)
    else
        ratios=$(awk -v ak="$anyws_kib" -v ac="$anyws_cpu" -v k="$kib" -v c="$cpu" 'BEGIN {
            printf "%10s %10s", (k > 0 ? sprintf("%.2fx", ak / k) : "n/a"),
                                (c > 0 ? sprintf("%.2fx", ac / c) : "n/a") }')
    fi
    printf '%-36s %8s KiB %8s KiB %9.2f %11.1f %s\n' "$label" "$(field "$name" rss_before_kib)" \
        "$(field "$name" rss_after_kib)" "$kib" "$cpu" "$ratios"
done
