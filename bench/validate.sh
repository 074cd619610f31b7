#!/usr/bin/env bash
# End-to-end validation of chatbench against the Node test server
# (bench/testserver, NOT the product): exact counts under injected loss,
# duplicates, fragmentation, pings and rate limiting.  Loopback only; every
# server it starts is stopped by its own pid.
#
#   bench/validate.sh            (or: make -C bench validate)

set -u
cd "$(dirname "$0")"

PORT_BASE=${PORT_BASE:-18089}
TMP=$(mktemp -d /tmp/chatbench-validate.XXXXXX)
PIDS=()
pass=0
fail=0

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

make -s chatbench floor || exit 1

if [ ! -d testserver/node_modules/ws ]; then
    (cd testserver && npm ci --no-audit --no-fund --silent) || {
        echo "validate: cannot install the ws package"; exit 1; }
fi

# start_server PORT ARGS... ; sets SRV_PID
start_server() {
    local port=$1; shift
    local pidfile=$TMP/srv.$port.pid
    node testserver/server.js --port "$port" --pidfile "$pidfile" "$@" \
        >"$TMP/srv.$port.log" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    for _ in $(seq 50); do
        [ -s "$pidfile" ] && return 0
        sleep 0.1
    done
    echo "validate: test server on port $port did not start"
    cat "$TMP/srv.$port.log"
    exit 1
}

stop_server() {
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# check NAME JSONFILE JS-EXPRESSION-over-r
check() {
    local name=$1 file=$2 expr=$3
    if node -e '
        const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        const ok = eval(process.argv[2]);
        if (!ok) { console.error(JSON.stringify(r)); process.exit(1); }' \
        "$file" "$expr"; then
        echo "ok   $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name: $expr"
        fail=$((fail + 1))
    fi
}

echo "== selftest"
if ./chatbench --selftest; then pass=$((pass + 1)); else fail=$((fail + 1)); fi

echo "== floor"
./floor --conns 500 --rounds 10 --json >"$TMP/floor.json"
cat "$TMP/floor.json"
check "floor figures" "$TMP/floor.json" \
    'r.send_cpu_us > 0 && r.recv_cpu_us > 0 && r.ceiling_end_to_end > 0'

CB="./chatbench --quiet --json"

echo "== open loop, 200 conns, 20 rooms"
start_server $PORT_BASE
$CB --port $PORT_BASE --conns 200 --rooms 20 --duration 2 --drain 2 \
    --server-pids "$SRV_PID" >"$TMP/a.json"
check "all open and joined" "$TMP/a.json" \
    'r.opened == 200 && r.joined == 200 && r.connect_failed == 0'
check "every delivery arrives once" "$TMP/a.json" \
    'r.sent > 300 && r.expected == r.sent * 10 && r.received == r.expected &&
     r.lost == 0 && r.dup_or_reorder == 0 && r.acks == r.sent'
check "latency and cpu recorded" "$TMP/a.json" \
    'r.latency_ms.n == r.received && r.latency_ms.p50 > 0 &&
     r.latency_ms.max >= r.latency_ms.p99 && r.server_cpu_s > 0'
check "presence: 45 per room of 10" "$TMP/a.json" 'r.presence == 900'

echo "== closed loop"
$CB --port $PORT_BASE --conns 200 --rooms 20 --rate 0 --window 4 \
    --duration 1 >"$TMP/b.json"
check "closed loop accounting" "$TMP/b.json" \
    'r.mode == "closed" && r.sent > 100 && r.acks == r.sent &&
     r.received == r.expected && r.ack_ms.n == r.acks'

echo "== idle"
$CB --port $PORT_BASE --conns 1000 --rooms 100 --idle --duration 1 \
    --src-ips 3 --server-pids "$SRV_PID" >"$TMP/c.json"
check "idle: 1000 joined over 3 source addresses" "$TMP/c.json" \
    'r.mode == "idle" && r.joined == 1000 && r.sent == 0 &&
     r.connect_rate > 0 && r.server_kb_per_conn > 0'

echo "== split generator: one sender process, two --recv-only, one room"
SP=()
for k in 0 1 2; do
    extra=(--recv-only)
    [ "$k" = 0 ] && extra=(--rate 50)
    $CB --json-buckets --port $PORT_BASE --conns $((60 + k)) --rooms 1 \
        --senders 1 --run-id 777 --user-prefix "v$k-" --room-prefix split- \
        --duration 2 --drain 2 --barrier "$TMP/barrier.$k" "${extra[@]}" \
        --server-pids "$SRV_PID" >"$TMP/split.$k.json" &
    SP+=($!)
done
for _ in $(seq 100); do
    [ -e "$TMP/barrier.0" ] && [ -e "$TMP/barrier.1" ] && [ -e "$TMP/barrier.2" ] && break
    sleep 0.1
done
[ -e "$TMP/barrier.2" ] || echo "validate: the split processes never reached the barrier"
kill -USR1 "${SP[@]}"
wait "${SP[@]}"
node cbmerge.js "$TMP"/split.{0,1,2}.json >"$TMP/split.json"
check "split: all 183 joined, every message to every member of the 3 processes" \
    "$TMP/split.json" \
    'r.gen_procs == 3 && r.joined == 183 && r.sent > 80 && r.acks == r.sent &&
     r.expected == r.sent * 183 && r.received == r.expected &&
     r.foreign == 0 && r.dup_or_reorder == 0 && r.gen[1].recv_only == 1 &&
     r.gen[1].received == r.sent * 61 && r.gen[2].received == r.sent * 62'
check "split: merged histogram = the parts' buckets summed" "$TMP/split.json" \
    'const ps = [0, 1, 2].map((k) => JSON.parse(require("fs").readFileSync(
         process.argv[1].replace(/split\.json$/, `split.${k}.json`), "utf8")));
     const m = require("./cbmerge.js");
     r.latency_ms.n == r.received &&
     r.latency_hist.b.reduce((a, x) => a + x[1], 0) == r.received &&
     r.latency_ms.max == Math.max(...ps.map((p) => p.latency_ms.max)) &&
     r.latency_ms.p99 >= Math.min(...ps.map((p) => p.latency_ms.p99)) &&
     r.latency_ms.p99 <= Math.max(...ps.map((p) => p.latency_ms.p99)) &&
     ps.every((p) => m.mergeHist([p.latency_hist]).ms.p99 == p.latency_ms.p99) &&
     r.gen_max_core_pct > 0'

echo "== handshake failure"
$CB --port $PORT_BASE --path /nope --conns 20 --duration 1 >"$TMP/d.json"
rc=$?
check "404 counted as handshake failures, exit 1" "$TMP/d.json" \
    "r.handshake_failed == 20 && r.failures['handshake: status 404'] == 20 && $rc == 1"
stop_server "$SRV_PID"

echo "== fragmented frames, pings, injected loss and duplicates"
P=$((PORT_BASE + 1))
start_server $P --fragment --ping-ms 50 --drop-every 97 --dup-every 101
$CB --port $P --conns 200 --rooms 20 --duration 2 --drain 1 >"$TMP/e.json"
check "exact loss and duplicate counts" "$TMP/e.json" \
    'const E = r.expected;
     r.lost == Math.floor(E / 97) &&
     r.dup_or_reorder == Math.floor(E / 101) - Math.floor(E / 9797) &&
     r.received == E - r.lost && r.pings > 0 && r.protocol_errors == 0'
stop_server "$SRV_PID"

echo "== rate-limited server"
P=$((PORT_BASE + 2))
start_server $P --rate-limit 5
$CB --port $P --conns 100 --rooms 10 --rate 0 --window 4 --duration 2 \
    >"$TMP/f.json"
check "refused sends are not expected" "$TMP/f.json" \
    'r.refused > 0 && r.errors.rate_limited == r.refused &&
     r.acks + r.refused == r.sent && r.received == r.expected'
stop_server "$SRV_PID"

echo "== server goes away mid-run"
P=$((PORT_BASE + 3))
start_server $P
$CB --port $P --conns 100 --rooms 10 --duration 3 --drain 1 >"$TMP/g.json" &
cb=$!
sleep 1.5
stop_server "$SRV_PID"
wait "$cb"
check "closes counted" "$TMP/g.json" \
    'r.closed_after_open == 100 && r.sent > 0'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
