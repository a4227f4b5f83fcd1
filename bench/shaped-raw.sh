#!/usr/bin/env bash
# raw's ceiling for the messages crier must send.
#
# perf-compare measures crier against raw-fanout broadcasting the load tool's 50-byte payload
# as it is. crier cannot send that: every event it delivers has the shape of API.md §1, about
# 300 bytes with the payload in `data` near the end, wrapped in `{"op":"event",...}` over
# WebSocket. How much the load tool spends on a message, and so how much of two shared cores
# is left for the server, depends on that shape.
#
# This runs, per scenario, the same shared tools with the same command lines as perf-compare:
#   raw         raw-fanout broadcasting the payload as it is (perf-compare's raw row);
#   raw-shaped  the same raw-fanout, published a crier WebSocket event frame with the payload
#               in its `data`, so it broadcasts what crier would (taken from a running hub);
#   crier-ws, crier-sse   as perf-compare runs them.
# Nothing in the shared folder is changed or rebuilt: the tools are perf-compare's own builds.
#
# Usage: bench/shaped-raw.sh [path/to/crier]
#   SCENARIOS="n rate conc;..." (default "1000 200 32;5000 100 32;5000 200 32"), ONLY, OUT_DIR,
#   BENCH_TARGET as perf-compare.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED_BENCH:-$here/../../shared/bench}
crier=$(readlink -f "${1:-target/release/crier}")
out=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$out"
tgt=${BENCH_TARGET:-$HOME/.cache/crier-bench-tools}
for t in fanout-bench raw-fanout; do
  [ -x "$tgt/$t/release/$t" ] || (cd "$shared/$t" && CARGO_TARGET_DIR="$tgt/$t" cargo build --release -q)
done
B=$tgt/fanout-bench/release/fanout-bench
R=$tgt/raw-fanout/release/raw-fanout
IFS=';' read -r -a scenarios <<< "${SCENARIOS:-1000 200 32;5000 100 32;5000 200 32}"
only=" ${ONLY:-raw raw-shaped crier-ws crier-sse} "
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# The frame crier sends a WebSocket subscriber for the load tool's events, with the tool's
# `{payload}` placeholder where the event's data goes.
p=$(freeport)
d=$(mktemp -d)
"$crier" serve --listen "127.0.0.1:$p" --data-dir "$d" >/dev/null 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$p/healthz" || { echo "crier did not start" >&2; kill "$pid"; exit 2; }
curl -sf -o /dev/null "http://127.0.0.1:$p/v1/events" -H 'content-type: application/json' \
  -d '{"type":"bench.x","data":{"bench_ts":1764633600000000000,"bench_seq":1000000}}' ||
  { echo "crier refused the sample event" >&2; kill "$pid"; exit 2; }
shaped=$(curl -sf "http://127.0.0.1:$p/v1/events?limit=1" | python3 -c '
import json, sys
ev = json.load(sys.stdin)["events"][0]
ev["data"] = "@PAYLOAD@"
frame = json.dumps({"op": "event", "sub": "s", "event": ev}, separators=(",", ":"))
print(frame.replace("\"@PAYLOAD@\"", "{payload}"))')
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
rm -rf "$d"
echo "raw-shaped broadcasts (${#shaped} bytes before the payload is put in): $shaped"

for sc in "${scenarios[@]}"; do
  set -- $sc
  n=$1 rate=$2 conc=$3
  for name in raw raw-shaped crier-ws crier-sse; do
    [[ "$only" == *" $name "* ]] || continue
    p=$(freeport)
    d=$(mktemp -d)
    case $name in
      raw | raw-shaped)
        "$R" --addr "127.0.0.1:$p" >"$d/server.log" 2>&1 &
        body='{payload}'
        [ "$name" = raw-shaped ] && body=$shaped
        args=(--proto ws-json --sub-url "ws://127.0.0.1:$p/ws" --subscribe-msg '{"subscribe":"{channel}"}'
          --ready-match '"ok":true' --pub-url "http://127.0.0.1:$p/publish" --pub-body "$body")
        ;;
      crier-ws)
        "$crier" serve --listen "127.0.0.1:$p" --data-dir "$d" >"$d/server.log" 2>&1 &
        args=(--proto ws-json --sub-url "ws://127.0.0.1:$p/v1/ws"
          --subscribe-msg '{"op":"subscribe","id":"s","filter":{"type":["bench.*"]}}' --ready-match '"subscribed"'
          --pub-url "http://127.0.0.1:$p/v1/events" --pub-body '{"type":"bench.x","data":{payload}}')
        ;;
      crier-sse)
        "$crier" serve --listen "127.0.0.1:$p" --data-dir "$d" >"$d/server.log" 2>&1 &
        args=(--proto sse --sub-url "http://127.0.0.1:$p/v1/stream?type=bench.*" --ready-match "crier head="
          --pub-url "http://127.0.0.1:$p/v1/events" --pub-body '{"type":"bench.x","data":{payload}}')
        ;;
    esac
    pid=$!
    if ! wait_http "http://127.0.0.1:$p/"; then
      echo "$name did not start: $(tail -3 "$d/server.log")"
      kill "$pid" 2>/dev/null || true
      rm -rf "$d"
      continue
    fi
    res=$("$B" -n "$n" --rate "$rate" --publish-concurrency "$conc" --duration 10 --idle-secs 2 \
      --server-pid "$pid" --json "${args[@]}" 2>>"$out/$name.err" | tail -1)
    echo "$res" >>"$out/$name.jsonl"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$d"
  done
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for name in ("raw", "raw-shaped", "crier-ws", "crier-sse"):
    path = os.path.join(out, name + ".jsonl")
    if not os.path.exists(path):
        continue
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        rows[(r["subscribers"], int(r["rate"]), name)] = r
def per_delivery(r, key):
    return (r.get(key) or 0) / max(1, r["delivered"]) * 1e6
print(f"{'scenario':10} {'server':11} {'deliveries/s':>12} {'arrived':>20} {'p50 ms':>8} {'p99 ms':>8}"
      f" {'server µs':>9} {'tool µs':>8}   vs raw: rate, p99, CPU   vs raw-shaped")
for (n, rate, name), r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    line = (f"{n}x{rate:<6} {name:11} {r['deliveries_per_s']:>12.0f} {r['delivered']:>9}/{r['expected']:<10}"
            f" {r['lat_p50_ms']:>8.1f} {r['lat_p99_ms']:>8.1f} {per_delivery(r, 'server_cpu_s'):>9.2f}"
            f" {per_delivery(r, 'client_cpu_s'):>8.2f}")
    for base in ("raw", "raw-shaped"):
        b = rows.get((n, rate, base))
        if b and base != name and name != "raw":
            line += (f"   {100 * r['deliveries_per_s'] / b['deliveries_per_s']:.1f} %,"
                     f" {r['lat_p99_ms'] / b['lat_p99_ms']:.2f}x,"
                     f" {per_delivery(r, 'server_cpu_s') / max(1e-9, per_delivery(b, 'server_cpu_s')):.2f}x")
    print(line)
print(f"results: {out}")
PY
