#!/usr/bin/env bash
# The benchmark: every workload of the performance issue, against anyws on each runtime and the
# controls, in one invocation, with every figure also given as a ratio against the controls.
#
#   bench/run.sh            # the full run (a few minutes)
#   bench/run.sh --smoke    # the same workloads, tiny: checks that everything runs (seconds)
#   bench/run.sh --only 'anyws-tokio tt' --workloads 'chat32 idle'   # a subset
#   ANYWS_FIXTURE=/path/to/anyws-fixture bench/run.sh ...   # another build of the fixture as
#       the anyws servers, e.g. to compare a change with the build before it, run by run
#
# Servers (all on 127.0.0.1, pinned to CPU 0 with `taskset -c 0`; the load client, the
# `anyws-bench` binary, pinned to CPU 1):
#   anyws-tokio, anyws-smol, anyws-async-std   target/release/anyws-fixture --runtime R --app A
#   tt    the control: a direct tokio-tungstenite server with batched writes
#         (`anyws-bench control-server --app A`, tungstenite's default config)
#   bun   the control: Bun's native WebSocket server with its pub/sub (bench/bun-server.js, the
#         same two apps); the npm package `bun` is installed into target/bun. Without npm, or
#         when the install fails, the runner says so and leaves Bun out.
#
# Workloads (full / --smoke):
#   chat32     32 clients in one chat room (`--app chatroom`), each sends 640 texts of 30 B per
#              batch, the batch ends when all 32x640x32 deliveries arrived; 20 batches / 2.
#              Delivered msgs/s, server CPU µs per 1,000 delivered, peak RSS.
#   chat8      the same with 8 clients; 100 batches / 2.
#   idle       10,000 / 200 connections to `--app echo`, one echo each: server RSS growth per
#              connection (KiB) and server CPU per connection opened (µs).
#   echo20     100 / 10 connections each echoing 20-byte texts one at a time (as uWebSockets'
#              load_test), 2,000 / 20 round trips each: msgs/s and server CPU µs per 1,000.
#   echo16k    200 / 10 connections echoing 16 KiB binaries, 100 / 5 round trips each.
#   broadcast  10,000 / 300 chat-room subscribers; one of them sends a text, which the room
#              publishes to all (a publish to every subscriber): 20 / 3 rounds, server CPU ns per
#              delivered message (from /proc/PID/task/*/schedstat) and the median time until
#              the last subscriber has it.
#
# permessage-deflate workloads (RFC 7692). The load client speaks the extension itself
# (`anyws-bench MODE --deflate`): it offers `permessage-deflate; client_max_window_bits`, as
# browsers do, sends compressible JSON texts compressed, and inflates and checks every message.
# Each anyws server runs twice, with the fixture's `--deflate` in two settings, and Bun with and
# without `perMessageDeflate`; tt is left out (tungstenite has no permessage-deflate). Every
# figure is also given against the row named as the control:
#   idle-deflate    10,000 / 200 connections to `--app echo`, each echoing one 256 B text:
#                   KiB and CPU per connection with `--deflate shared` against `--deflate off`
#                   (the same clients, whose offer is then declined).
#   dedicated       1,000 / 50 connections, as idle-deflate: `--deflate dedicated` (each peer
#                   keeps a compressor and a decompressor with context) against `off`.
#   chat-deflate    32 clients in one chat room, each sends 100 texts of 200 B per batch, 10 / 2
#                   batches: server CPU per 1,000 delivered with `--deflate shared` against
#                   `off`, and against Bun with `perMessageDeflate: true`.
#   broadcast-deflate  10,000 / 300 subscribers; one publish of a 1 KiB text to all, 20 / 3
#                   rounds: server CPU per delivered with `--deflate shared` (compressed once per
#                   publish) against `--deflate shared-per-recipient` (every subscriber compresses
#                   it itself) and `off`. DEFLATE_BROADCAST_BYTES=N publishes N bytes instead.
#
# TLS and HTTP/2 workloads. The servers serve TLS with a throwaway self-signed certificate
# (`anyws-bench make-cert`), the fixture with `--tls-cert/--tls-key`, Bun with
# `Bun.serve({tls})`; the load client trusts it (`--tls-ca`). tt is left out (the control server
# has no TLS). Every figure is also given against the runs named in its parentheses:
#   wss-echo20   echo20 over wss:// (100 / 10 connections x 20 B, 2,000 / 20 round trips each):
#                server CPU per message against Bun with TLS, and against the same server's
#                plain echo20 when that workload ran too.
#   wss-echo16k  echo16k over wss:// (200 / 10 connections x 16 KiB, 100 / 5 round trips).
#   tls-connect  2,000 / 100 connections to `--app echo`, one echo each, as idle: server CPU per
#                connection opened (the TLS handshake and the upgrade; from schedstat's
#                nanoseconds, as echo's, not the clock ticks of idle) and KiB per connection,
#                over TLS and plain on each server, against its own plain run and Bun's TLS.
#   h2-streams   1,000 / 50 WebSockets to `--app echo` as RFC 8441 streams of one cleartext HTTP/2
#                connection (the server runs with `--max-concurrent-streams` as many),
#                against the same 1,000 / 50 as HTTP/1.1 connections: server KiB and CPU per
#                WebSocket opened, then echo (20 B, 100 / 5 round trips each): msgs/s and CPU per
#                1,000. anyws only (neither control serves WebSockets over HTTP/2).
#
# Every server runs under a watchdog and every client under `timeout`; nothing outlives the
# script. The figures are noisy on a shared machine (the load average is printed with each
# run); compare the ratios, which come from the same invocation. Exits non-zero when a run
# fails (a server that does not start, a client error), so the smoke run catches rot; it does
# not judge the figures.
set -euo pipefail

usage="usage: bench/run.sh [--smoke] [--only 'SERVER...'] [--workloads 'WORKLOAD...']"
smoke=false
all_servers="anyws-tokio anyws-smol anyws-async-std tt bun"
all_workloads="chat32 chat8 idle echo20 echo16k broadcast idle-deflate dedicated chat-deflate broadcast-deflate wss-echo20 wss-echo16k tls-connect h2-streams"
servers=$all_servers
workloads=$all_workloads
while (($#)); do
    case $1 in
    --smoke) smoke=true ;;
    --only) servers=${2:?$usage}; shift ;;
    --workloads) workloads=${2:?$usage}; shift ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
for name in $servers; do
    [[ " $all_servers " == *" $name "* ]] || { echo "run.sh: unknown server $name" >&2; exit 2; }
done
for name in $workloads; do
    [[ " $all_workloads " == *" $name "* ]] || { echo "run.sh: unknown workload $name" >&2; exit 2; }
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

if $smoke; then
    chat32_batches=2 chat8_batches=2 idle_connections=200 idle_settle_ms=200
    echo20_connections=10 echo20_rounds=20 echo16k_connections=10 echo16k_rounds=5
    broadcast_subscribers=300 broadcast_rounds=3
    dedicated_connections=50 chat_deflate_batches=2
    tls_connections=100 h2_streams=50 h2_rounds=5
else
    chat32_batches=20 chat8_batches=100 idle_connections=10000 idle_settle_ms=1000
    echo20_connections=100 echo20_rounds=2000 echo16k_connections=200 echo16k_rounds=100
    broadcast_subscribers=10000 broadcast_rounds=20
    dedicated_connections=1000 chat_deflate_batches=10
    tls_connections=2000 h2_streams=1000 h2_rounds=100
fi
deflate_broadcast_bytes=${DEFLATE_BROADCAST_BYTES:-1024}

echo "== building anyws-fixture and anyws-bench (release)"
timeout 1800 cargo build --release -q -p anyws-fixture -p anyws-bench
fixture=${ANYWS_FIXTURE:-$target/release/anyws-fixture}
bench=$target/release/anyws-bench

# Bun: installed with npm into target/bun once; a failure leaves Bun out of the run.
bun=
if [[ " $servers " == *" bun "* ]]; then
    bun=$target/bun/node_modules/.bin/bun
    if ! "$bun" --version >/dev/null 2>&1; then
        if command -v npm >/dev/null 2>&1; then
            echo "== installing Bun (npm package bun) into $target/bun"
            mkdir -p "$target/bun"
            timeout 600 npm install --prefix "$target/bun" --no-audit --no-fund --silent bun@1 \
                >"$target/bun/install.log" 2>&1 || true
        fi
    fi
    if "$bun" --version >/dev/null 2>&1; then
        echo "== Bun $("$bun" --version)"
    else
        if command -v npm >/dev/null 2>&1; then
            echo "run.sh: Bun could not be installed (see $target/bun/install.log);" \
                "the Bun control is left out of this run" >&2
        else
            echo "run.sh: npm is not installed, so Bun cannot be; the Bun control is left out" \
                "of this run" >&2
        fi
        bun=
        servers=${servers/bun/}
    fi
fi

# 10,000 connections need more than the usual 1024 descriptors, in the servers and the client.
wanted=65536
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < wanted)); then
    wanted=$hard
fi
ulimit -n "$wanted"
for count in "$idle_connections" "$broadcast_subscribers"; do
    if ((count + 64 > wanted)); then
        echo "run.sh: $count connections need more than the open-file limit of $wanted" >&2
        exit 1
    fi
done

if (($(nproc) >= 2)); then
    server_cpu=0 client_cpu=1
else
    echo "run.sh: one CPU only; server and client share CPU 0" >&2
    server_cpu=0 client_cpu=0
fi
read -r port_low _ </proc/sys/net/ipv4/ip_local_port_range

workdir=$(mktemp -d)
# The throwaway certificate of the TLS workloads.
"$bench" make-cert --dir "$workdir/tls"
tls_files="--tls-cert $workdir/tls/cert.pem --tls-key $workdir/tls/key.pem"
server_pid=
watchdog_pid=
failures=()
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
    echo "run.sh: no free port found" >&2
    return 1
}

# server_command SERVER APP: the command line that serves APP (echo|chatroom) as SERVER; the
# word @PORT@ stands for the port. A SERVER of the compression workloads carries its setting
# after a `+`: anyws-tokio+shared runs the fixture with `--deflate shared`, bun+deflate runs Bun
# with `perMessageDeflate`, bun+off without.
# A setting of the TLS and HTTP/2 workloads: `tls` serves TLS, `plain`, `h2` and `http1` do not.
server_command() {
    local name=${1%%+*} setting= flags=
    [[ $1 == *+* ]] && setting=${1#*+}
    case $setting in
    tls) flags=" $tls_files" ;;
    h2) flags=" --max-concurrent-streams $h2_streams" ;;
    plain | http1) ;;
    deflate) [[ $name == bun ]] && flags=" --deflate" ;;
    # Bun takes no value: any `--deflate` on its command line turns compression on.
    off) [[ $name == bun ]] || flags=" --deflate off" ;;
    ?*) flags=" --deflate $setting" ;;
    esac
    case $name in
    anyws-*) echo "$fixture --runtime ${name#anyws-} --app $2$flags" ;;
    tt) echo "$bench control-server --port @PORT@ --app $2" ;;
    bun) echo "$bun $root/bench/bun-server.js --app $2$flags" ;;
    esac
}

# tls_workload WORKLOAD: whether WORKLOAD is one of the TLS and HTTP/2 workloads.
tls_workload() {
    case $1 in
    wss-echo20 | wss-echo16k | tls-connect | h2-streams) return 0 ;;
    *) return 1 ;;
    esac
}

# tls_runs WORKLOAD: the runs of a TLS or HTTP/2 workload.
tls_runs() {
    local name out=
    for name in $servers; do
        case $1/$name in
        wss-echo*/anyws-* | wss-echo*/bun) out+=" $name+tls" ;;
        tls-connect/anyws-* | tls-connect/bun) out+=" $name+tls $name+plain" ;;
        h2-streams/anyws-*) out+=" $name+h2 $name+http1" ;;
        esac
    done
    echo "$out"
}

# tls_controls WORKLOAD RUN: what RUN's figures are compared with, as WORKLOAD:RUN pairs.
tls_controls() {
    local name=${2%%+*} setting=${2#*+}
    case $1/$setting in
    wss-echo*/tls)
        [[ $name == bun ]] || echo "$1:bun+tls"
        echo "${1#wss-}:$name"
        ;;
    tls-connect/tls)
        echo "$1:$name+plain"
        [[ $name == bun ]] || echo "$1:bun+tls"
        ;;
    tls-connect/plain) [[ $name == bun ]] || echo "$1:bun+plain" ;;
    h2-streams/h2) echo "$1:$name+http1" ;;
    esac
}

# deflate_workload WORKLOAD: whether WORKLOAD is one of the compression workloads.
deflate_workload() {
    case $1 in
    idle-deflate | dedicated | chat-deflate | broadcast-deflate) return 0 ;;
    *) return 1 ;;
    esac
}

# settings WORKLOAD: the settings each server runs a compression workload with, the first being
# the one measured and the others its controls (for anyws; Bun gets deflate and off).
settings() {
    case $1 in
    idle-deflate) echo "shared off" ;;
    dedicated) echo "dedicated off" ;;
    chat-deflate) echo "shared off" ;;
    broadcast-deflate) echo "shared shared-per-recipient off" ;;
    esac
}

# runs_for WORKLOAD: the servers (with their settings) WORKLOAD runs against. The smoke run
# keeps the compression workloads short: the first anyws runtime only, and Bun.
runs_for() {
    local name setting out= anyws_runs=0
    if tls_workload "$1"; then
        tls_runs "$1"
        return
    fi
    if ! deflate_workload "$1"; then
        echo "$servers"
        return
    fi
    for name in $servers; do
        case $name in
        anyws-*)
            $smoke && ((anyws_runs++ > 0)) && continue
            for setting in $(settings "$1"); do out+=" $name+$setting"; done
            ;;
        bun) [[ $1 == dedicated ]] || out+=" bun+deflate bun+off" ;;
        esac
    done
    echo "$out"
}

# client_args WORKLOAD: the load client's mode and arguments for WORKLOAD.
client_args() {
    case $1 in
    chat32) echo "chat --clients 32 --messages 640 --batches $chat32_batches" ;;
    chat8) echo "chat --clients 8 --messages 640 --batches $chat8_batches" ;;
    idle) echo "idle --connections $idle_connections --settle-ms $idle_settle_ms" ;;
    echo20) echo "echo --connections $echo20_connections --size 20 --rounds $echo20_rounds" ;;
    echo16k) echo "echo --connections $echo16k_connections --size 16384 --rounds $echo16k_rounds" ;;
    broadcast) echo "broadcast --subscribers $broadcast_subscribers --rounds $broadcast_rounds" ;;
    idle-deflate) echo "idle --deflate --size 256 --connections $idle_connections --settle-ms $idle_settle_ms" ;;
    dedicated) echo "idle --deflate --size 256 --connections $dedicated_connections --settle-ms $idle_settle_ms" ;;
    chat-deflate) echo "chat --deflate --size 200 --clients 32 --messages 100 --batches $chat_deflate_batches" ;;
    broadcast-deflate) echo "broadcast --deflate --size $deflate_broadcast_bytes --subscribers $broadcast_subscribers --rounds $broadcast_rounds" ;;
    wss-echo20) echo "echo --connections $echo20_connections --size 20 --rounds $echo20_rounds" ;;
    wss-echo16k) echo "echo --connections $echo16k_connections --size 16384 --rounds $echo16k_rounds" ;;
    tls-connect) echo "idle --connections $tls_connections --settle-ms $idle_settle_ms" ;;
    h2-streams) echo "streams --streams $h2_streams --size 20 --rounds $h2_rounds --settle-ms $idle_settle_ms" ;;
    esac
}

app_for() {
    case $1 in
    chat* | broadcast*) echo chatroom ;;
    *) echo echo ;;
    esac
}

# run_one WORKLOAD SERVER: starts SERVER on a free port, runs the client for WORKLOAD against it
# and stops it. Leaves the client's RESULT line in $workdir/WORKLOAD.SERVER.result; a failure
# is recorded in `failures` and the run goes on.
run_one() {
    local workload=$1 name=$2
    local port log command args=() arg waited status=0
    port=$(free_port)
    log=$workdir/$workload.$name.log
    : >"$log"
    read -r -a args <<<"$(server_command "$name" "$(app_for "$workload")")"
    for arg in "${!args[@]}"; do
        args[arg]=${args[arg]//@PORT@/$port}
    done

    # `exec` keeps $! the server's own pid (taskset execs it too), which the client reads.
    (PORT=$port HOST=127.0.0.1 exec taskset -c "$server_cpu" "${args[@]}" >"$log" 2>&1) &
    server_pid=$!
    watchdog "$server_pid" </dev/null >/dev/null 2>&1 &
    watchdog_pid=$!
    for ((waited = 0; waited < 100; waited++)); do
        grep -q "listening on" "$log" && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    # The fixture falls back to [::1] when 127.0.0.1:PORT is taken; insist on 127.0.0.1.
    if ! grep -q "listening on 127.0.0.1:$port" "$log"; then
        echo "run.sh: $workload: $name did not start listening on 127.0.0.1:$port:" >&2
        tail -n 20 "$log" >&2
        stop_server
        failures+=("$workload/$name (server did not start)")
        return 0
    fi

    echo "-- $workload on $name (pid $server_pid, port $port, load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg))"
    read -r -a command <<<"$(client_args "$workload")"
    local scheme=ws
    case $name in
    *+tls) scheme=wss command+=(--tls-ca "$workdir/tls/cert.pem") ;;
    *+http1) command+=(--http1) ;;
    *+h2) command+=(--per-connection "$h2_streams") ;;
    esac
    timeout 900 taskset -c "$client_cpu" "$bench" "${command[@]}" \
        --url "$scheme://127.0.0.1:$port/" --server-pid "$server_pid" --timeout-secs 600 \
        >"$workdir/$workload.$name.out" 2>&1 || status=$?
    stop_server
    if ((status != 0)) || ! grep -q '^RESULT ' "$workdir/$workload.$name.out"; then
        echo "run.sh: $workload: the client failed against $name (exit $status):" >&2
        tail -n 5 "$workdir/$workload.$name.out" >&2
        echo "server log:" >&2
        tail -n 10 "$log" >&2
        failures+=("$workload/$name (client exit $status)")
        return 0
    fi
    grep '^RESULT ' "$workdir/$workload.$name.out" >"$workdir/$workload.$name.result"
}

# field WORKLOAD SERVER KEY: one value from a RESULT line, or nothing.
field() {
    local file=$workdir/$1.$2.result
    [[ -f $file ]] || return 0
    sed -n "s/.* $3=\([^ ]*\).*/\1/p" "$file"
}

label() {
    local setting=
    [[ $1 == *+* ]] && setting=${1#*+}
    case ${1%%+*} in
    anyws-tokio) echo "anyws, tokio${setting:+, $setting}" ;;
    anyws-smol) echo "anyws, smol${setting:+, $setting}" ;;
    anyws-async-std) echo "anyws, async-std${setting:+, $setting}" ;;
    tt) echo "tokio-tungstenite (control)" ;;
    bun) echo "Bun $("$bun" --version)${setting:+, $([[ $setting == deflate ]] && echo perMessageDeflate || echo off)} (control)" ;;
    esac
}

# cell VALUE WORKLOAD KEY FORMAT: VALUE formatted, then its ratio against each control's figure
# for the same workload and KEY, as "12.3 (0.50× tt, 0.61× bun)".
cell() {
    local value=$1 workload=$2 key=$3 format=$4
    if [[ -z $value ]]; then
        echo "n/a"
        return
    fi
    awk -v v="$value" -v tt="$(field "$workload" tt "$key")" \
        -v bun="$(field "$workload" bun "$key")" -v fmt="$format" 'BEGIN {
        out = sprintf(fmt, v); sep = " ("; close_ = ""
        if (tt + 0 > 0) { out = out sep sprintf("%.2f× tt", v / tt); sep = ", "; close_ = ")" }
        if (bun + 0 > 0) { out = out sep sprintf("%.2f× bun", v / bun); sep = ", "; close_ = ")" }
        print out close_ }'
}

# table WORKLOAD TITLE KEY:HEADING:FORMAT...: a Markdown table of WORKLOAD's figures, one row
# per server, each figure with its ratios against the controls. The anyws rows on smol and
# async-std end with each figure as a multiple of anyws's on tokio, in the same order.
table() {
    local workload=$1 title=$2 spec name line key heading format value tokio_value ratios
    shift 2
    echo
    echo "### $title"
    echo
    line="| server |"
    for spec in "$@"; do
        IFS=: read -r key heading format <<<"$spec"
        line+=" $heading |"
    done
    echo "$line each figure vs anyws on tokio |"
    line="|---|"
    for spec in "$@"; do line+="---|"; done
    echo "$line---|"
    for name in $servers; do
        line="| $(label "$name") |"
        ratios=
        for spec in "$@"; do
            IFS=: read -r key heading format <<<"$spec"
            value=$(field "$workload" "$name" "$key")
            line+=" $(cell "$value" "$workload" "$key" "$format") |"
            tokio_value=$(field "$workload" anyws-tokio "$key")
            if [[ $name == anyws-smol || $name == anyws-async-std ]]; then
                ratios+="${ratios:+, }$(awk -v v="$value" -v t="$tokio_value" 'BEGIN {
                    print ((v != "" && t + 0 > 0) ? sprintf("%.2f×", v / t) : "n/a") }')"
            fi
        done
        echo "$line $ratios |"
    done
}

# controls_of WORKLOAD RUN: the runs RUN's figures are compared with. The measured setting of an
# anyws server against its other settings and Bun with compression; a control setting against
# `off` (and `off` against Bun without compression); Bun with compression against Bun without.
controls_of() {
    local workload=$1 run=$2 name=${2%%+*} setting=${2#*+} first other
    read -r first _ <<<"$(settings "$workload")"
    case $name in
    bun) [[ $setting == deflate ]] && echo "bun+off" ;;
    *)
        if [[ $setting == "$first" ]]; then
            for other in $(settings "$workload"); do
                [[ $other == "$first" ]] || echo "$name+$other"
            done
            echo "bun+deflate"
        elif [[ $setting == off ]]; then
            echo "bun+off"
        else
            echo "$name+off"
        fi
        ;;
    esac
}

# short RUN: how a ratio names the run it is against.
short() {
    case $1 in
    bun+deflate) echo "bun perMessageDeflate" ;;
    bun+off) echo "bun off" ;;
    *) echo "${1#*+}" ;;
    esac
}

# deflate_table WORKLOAD TITLE KEY:HEADING:FORMAT[:plain]...: a Markdown table of a compression
# workload, one row per run, each figure with its ratios against the runs `controls_of` names
# (none for a `plain` column).
deflate_table() {
    ratio_table deflate_row "$@"
}

# deflate_row FUNCTION WORKLOAD RUN [CONTROL]: for a compression workload, the row's name
# (`name`), the controls as WORKLOAD:RUN pairs (`controls`), or how a ratio names CONTROL
# (`short`).
deflate_row() {
    local control
    case $1 in
    name) label "$3" ;;
    controls) for control in $(controls_of "$2" "$3"); do echo "$2:$control"; done ;;
    short) short "${4#*:}" ;;
    esac
}

# tls_table WORKLOAD TITLE KEY:HEADING:FORMAT...: the same for a TLS or HTTP/2 workload, against
# the runs `tls_controls` names.
tls_table() {
    ratio_table tls_row "$@"
}

tls_row() {
    case $1 in
    name) tls_label "$3" ;;
    controls) tls_controls "$2" "$3" ;;
    short) tls_short "$2" "$4" ;;
    esac
}

# ratio_table ROW WORKLOAD TITLE KEY:HEADING:FORMAT[:plain]...: a Markdown table, one row per
# run of WORKLOAD, each figure (but in a `plain` column) with its ratios against the controls
# that the function ROW names (see deflate_row).
ratio_table() {
    local row=$1 workload=$2 title=$3 spec run line key heading format plain value control cv ratio sep
    shift 3
    echo
    echo "### $title"
    echo
    line="| server |"
    for spec in "$@"; do
        IFS=: read -r key heading format plain <<<"$spec"
        line+=" $heading |"
    done
    echo "$line"
    line="|---|"
    for spec in "$@"; do line+="---|"; done
    echo "$line"
    for run in $(runs_for "$workload"); do
        line="| $("$row" name "$workload" "$run") |"
        for spec in "$@"; do
            IFS=: read -r key heading format plain <<<"$spec"
            value=$(field "$workload" "$run" "$key")
            if [[ -z $value ]]; then
                line+=" n/a |"
                continue
            fi
            line+=" $(printf "$format" "$value")"
            sep=" ("
            if [[ -z $plain ]]; then
                for control in $("$row" controls "$workload" "$run"); do
                    cv=$(field "${control%%:*}" "${control#*:}" "$key")
                    ratio=$(awk -v v="$value" -v c="$cv" 'BEGIN { if (c + 0 > 0) printf "%.2f", v / c }')
                    [[ -n $ratio ]] || continue
                    line+="$sep${ratio}× $("$row" short "$workload" "$run" "$control")"
                    sep=", "
                done
            fi
            [[ $sep == ", " ]] && line+=")"
            line+=" |"
        done
        echo "$line"
    done
}

# tls_label RUN: a row's name.
tls_label() {
    local setting=${1#*+} what
    case $setting in
    tls) what="TLS" ;;
    plain) what="plain" ;;
    h2) what="HTTP/2 streams" ;;
    http1) what="HTTP/1.1 connections" ;;
    esac
    case ${1%%+*} in
    bun) echo "Bun $("$bun" --version), $what (control)" ;;
    *) echo "$(label "${1%%+*}"), $what" ;;
    esac
}

# tls_short WORKLOAD CONTROL: how a ratio names its control (a WORKLOAD:RUN pair).
tls_short() {
    local workload=${2%%:*} run=${2#*:}
    case $run in
    bun+tls) echo "bun TLS" ;;
    bun+plain) echo "bun plain" ;;
    *+plain) echo "plain" ;;
    *+http1) echo "HTTP/1.1" ;;
    *) [[ $workload == "$1" ]] && echo "$run" || echo "plain $workload" ;;
    esac
}

started=$(date +%s)
echo "== run.sh$($smoke && echo " --smoke"): servers: $servers; workloads: $workloads;" \
    "server on CPU $server_cpu, client on CPU $client_cpu; $(nproc) CPUs; $(uname -r)"
for workload in $workloads; do
    for name in $(runs_for "$workload"); do
        run_one "$workload" "$name"
    done
done

echo
echo "## Results ($(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - started)) s$($smoke && echo ", smoke run: the figures mean nothing"))"
echo
echo "Every figure is followed by its ratio against the tokio-tungstenite control (tt) and"
echo "Bun (bun) from this same run; below 1 means less than the control (for msgs/s: slower)."
echo "In the permessage-deflate tables each figure is followed by its ratio against the runs"
echo "named in its parentheses, from this same run: the same server with another setting, or Bun."
for workload in $workloads; do
    case $workload in
    chat32 | chat8)
        clients=${workload#chat}
        batches_var=${workload}_batches
        table "$workload" "Chat room, $clients clients x 640 texts of 30 B per batch, ${!batches_var} batches" \
            "cpu_us_per_1k:server CPU µs per 1,000 delivered:%.1f" \
            "msgs_per_sec:delivered msgs/s:%.0f" "hwm_kib:peak RSS KiB:%.0f"
        ;;
    idle)
        table idle "Idle, $idle_connections connections (echo app, one echo each)" \
            "kib_per_conn:server KiB per connection:%.2f" \
            "cpu_us_per_conn:server CPU µs per connection opened:%.1f"
        ;;
    echo20)
        table echo20 "Echo, $echo20_connections connections x 20 B, $echo20_rounds round trips each" \
            "cpu_us_per_1k:server CPU µs per 1,000 messages:%.1f" "msgs_per_sec:msgs/s:%.0f"
        ;;
    echo16k)
        table echo16k "Echo, $echo16k_connections connections x 16 KiB, $echo16k_rounds round trips each" \
            "cpu_us_per_1k:server CPU µs per 1,000 messages:%.1f" "msgs_per_sec:msgs/s:%.0f"
        ;;
    broadcast)
        table broadcast "Broadcast, one publish to $broadcast_subscribers subscribers, $broadcast_rounds rounds" \
            "cpu_ns_per_msg:server CPU ns per delivered:%.0f" \
            "last_ms_median:ms until the last subscriber has it (median):%.2f"
        ;;
    idle-deflate | dedicated)
        count=$idle_connections
        [[ $workload == dedicated ]] && count=$dedicated_connections
        deflate_table "$workload" "permessage-deflate, $workload: $count connections, each echoing one 256 B text" \
            "kib_per_conn:server KiB per connection:%.2f" \
            "cpu_us_per_conn:server CPU µs per connection opened:%.1f" \
            "compressed:echoes that came compressed:%d:plain"
        ;;
    chat-deflate)
        deflate_table chat-deflate "permessage-deflate, chat room: 32 clients x 100 texts of 200 B per batch, $chat_deflate_batches batches" \
            "cpu_us_per_1k:server CPU µs per 1,000 delivered:%.1f" \
            "msgs_per_sec:delivered msgs/s:%.0f" "hwm_kib:peak RSS KiB:%.0f" \
            "compressed_pct:delivered compressed %:%.1f:plain" \
            "client_cpu_pct:client CPU %:%.0f:plain"
        ;;
    wss-echo20)
        tls_table wss-echo20 "Echo over wss://, $echo20_connections connections x 20 B, $echo20_rounds round trips each" \
            "cpu_us_per_1k:server CPU µs per 1,000 messages:%.1f" "msgs_per_sec:msgs/s:%.0f"
        ;;
    wss-echo16k)
        tls_table wss-echo16k "Echo over wss://, $echo16k_connections connections x 16 KiB, $echo16k_rounds round trips each" \
            "cpu_us_per_1k:server CPU µs per 1,000 messages:%.1f" "msgs_per_sec:msgs/s:%.0f"
        ;;
    tls-connect)
        tls_table tls-connect "Connections opened over TLS and plain, $tls_connections connections (echo app, one echo each)" \
            "sched_us_per_conn:server CPU µs per connection opened:%.1f" \
            "kib_per_conn:server KiB per connection:%.2f"
        ;;
    h2-streams)
        tls_table h2-streams "$h2_streams WebSockets as HTTP/2 streams of one connection and as HTTP/1.1 connections, then $h2_rounds echoes of 20 B each" \
            "kib_per_stream:server KiB per WebSocket:%.2f" \
            "cpu_us_per_stream:server CPU µs per WebSocket opened:%.1f" \
            "msgs_per_sec:echo msgs/s:%.0f" "cpu_us_per_1k:server CPU µs per 1,000 echoed:%.1f"
        ;;
    broadcast-deflate)
        deflate_table broadcast-deflate "permessage-deflate, broadcast: one publish of $deflate_broadcast_bytes B to $broadcast_subscribers subscribers, $broadcast_rounds rounds" \
            "cpu_ns_per_msg:server CPU ns per delivered:%.0f" \
            "last_ms_median:ms until the last subscriber has it (median):%.2f" \
            "compressed_pct:delivered compressed %:%.1f:plain"
        ;;
    esac
done

if ((${#failures[@]})); then
    echo
    echo "run.sh: ${#failures[@]} run(s) failed: ${failures[*]}" >&2
    exit 1
fi
