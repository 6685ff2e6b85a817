#!/usr/bin/env bash
# Relay between two instances through Redis: two anyws-fixture processes (--app chatroom
# --redis URL) share a redis-server; anyws-relay-bench publishes on instance A and measures
# arrival at a subscriber on A (same-instance delivery, the control) and at one on B (relayed),
# for the same messages in the same run.
#
#   bench/relay.sh [RUNTIME] [MESSAGES] [SAMPLES]    # defaults tokio, 100000 and 2000
#   bench/relay.sh rooms [RUNTIME] [MESSAGES]        # defaults tokio and 20000
#
# RATE=N sends the throughput run at N messages per second and prints its p50/p99 latency per
# subscriber too (a line `RATE ...`); CLUSTER=1 relays through a 3-node Redis Cluster (three
# redis-server nodes with --cluster-enabled yes, made with redis-cli --cluster create) with
# --redis-cluster instead of one redis-server. For example, the cross-instance latency at
# 10,000 publishes per second, single Redis and cluster:
#
#   RATE=10000 bench/relay.sh tokio 50000 200; RATE=10000 CLUSTER=1 bench/relay.sh tokio 50000 200
#
# `rooms` runs bench/rooms.py instead: 2, 3 and 4 instances with disjoint rooms, relay CPU per
# instance and relays received per instance with one channel against interest routing, in one
# run (the ratio is the figure).
#
# redis-server and both fixture processes run pinned to CPU 0 (`taskset -c 0`), the client to
# CPU 1. redis-server runs from a temporary directory on a free port with persistence off. The
# table gives latency p50/p99/max (one message at a time) and messages per second (back to
# back, 30-byte texts), and what the relay adds. Every step is bounded by `timeout`; all traffic
# stays on 127.0.0.1. Other load on the two CPUs skews the figures: the load average is printed.
set -euo pipefail

if [[ ${1:-} == rooms ]]; then
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if ! command -v redis-server >/dev/null; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    (cd "$root" && timeout 1200 cargo build --release -p anyws-fixture)
    exec timeout 900 python3 "$root/bench/rooms.py" --runtime "${2:-tokio}" --messages "${3:-20000}"
fi

runtime=${1:-tokio}
messages=${2:-100000}
samples=${3:-2000}
if ! [[ $messages =~ ^[1-9][0-9]*$ && $samples =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/relay.sh [RUNTIME] [MESSAGES] [SAMPLES]" >&2
    exit 2
fi
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
timeout 1200 cargo build --release -p anyws-fixture -p anyws-bench
release=${CARGO_TARGET_DIR:-$root/target}/release

if (($(nproc) >= 2)); then
    server_cpu=0 client_cpu=1
else
    server_cpu=0 client_cpu=0
fi

workdir=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$workdir"
}
trap cleanup EXIT

read -r port_low _ </proc/sys/net/ipv4/ip_local_port_range
free_port() {
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % (port_low > 21000 ? port_low - 20000 : 1000)))
        if [[ -z $(ss -Htln "sport = :$port" 2>/dev/null) ]]; then
            echo "$port"
            return 0
        fi
    done
    echo "relay.sh: no free port found" >&2
    return 1
}

# wait_for LOG TEXT: up to 10 s for TEXT in LOG.
wait_for() {
    local waited
    for ((waited = 0; waited < 100; waited++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "relay.sh: no \"$2\" in $1 within 10 s:" >&2
    cat "$1" >&2
    exit 1
}

if [[ ${CLUSTER:-} == 1 ]]; then
    nodes=()
    for node in 1 2 3; do
        # The node's cluster bus listens on its port + 10000, which must be free too.
        for ((tries = 0; tries < 100; tries++)); do
            node_port=$(free_port)
            [[ -z $(ss -Htln "sport = :$((node_port + 10000))" 2>/dev/null) ]] && break
        done
        mkdir -p "$workdir/node$node"
        (exec taskset -c "$server_cpu" timeout 900 redis-server --port "$node_port" \
            --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir/node$node" \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 1000 >"$workdir/node$node.log" 2>&1) &
        pids+=($!)
        wait_for "$workdir/node$node.log" "Ready to accept connections"
        nodes+=("127.0.0.1:$node_port")
    done
    timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        >"$workdir/create.log" 2>&1 || { cat "$workdir/create.log" >&2; exit 1; }
    for ((waited = 0; waited < 100; waited++)); do
        ok=1
        for node in "${nodes[@]}"; do
            redis-cli -h 127.0.0.1 -p "${node#*:}" cluster info | grep -q cluster_state:ok || ok=0
        done
        ((ok)) && break
        sleep 0.1
    done
    backplane=(--redis-cluster "$(printf 'redis://%s,' "${nodes[@]}")")
    broker="a 3-node Redis Cluster"
else
    redis_port=$(free_port)
    (exec taskset -c "$server_cpu" timeout 900 redis-server --port "$redis_port" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$workdir" >"$workdir/redis.log" 2>&1) &
    pids+=($!)
    wait_for "$workdir/redis.log" "Ready to accept connections"
    backplane=(--redis "redis://127.0.0.1:$redis_port")
    broker="one redis-server"
fi
rate=()
if [[ -n ${RATE:-} ]]; then
    rate=(--rate "$RATE")
fi

ports=()
for name in a b; do
    port=$(free_port)
    ports+=("$port")
    (PORT=$port exec taskset -c "$server_cpu" timeout 900 "$release/anyws-fixture" \
        --runtime "$runtime" --app chatroom "${backplane[@]}" \
        >"$workdir/$name.log" 2>&1) &
    pids+=($!)
    wait_for "$workdir/$name.log" "listening on 127.0.0.1:$port"
done

echo "== relay on $runtime through $broker: $messages messages${RATE:+ at $RATE/s}," \
    "$samples latency samples, 30-byte texts;" \
    "redis and both instances on CPU $server_cpu, client on CPU $client_cpu" \
    "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
timeout 600 taskset -c "$client_cpu" "$release/anyws-relay-bench" \
    --a "ws://127.0.0.1:${ports[0]}/" --b "ws://127.0.0.1:${ports[1]}/" \
    --messages "$messages" --samples "$samples" --timeout-secs 540 "${rate[@]}"
for name in a b; do
    if grep -q "anyws:" "$workdir/$name.log"; then
        echo "instance $name reported:" && grep "anyws:" "$workdir/$name.log" | head -n 5
    fi
done
