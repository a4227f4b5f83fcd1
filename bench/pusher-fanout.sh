#!/usr/bin/env bash
# Pusher-protocol fan-out, crier against Sockudo in one run: for each scenario a fresh server,
# N pusher-protocol subscribers on one channel, events triggered through the signed HTTP API at
# a fixed rate, measured by `fanout-bench --proto pusher`.
#
# Usage: FANOUT_BENCH=path/to/fanout-bench [SOCKUDO_BIN=path/to/sockudo] bench/pusher-fanout.sh [path/to/crier]
# SCENARIOS="1000 200 32;5000 100 32" (subscribers, events/s, publish concurrency) by default.
set -u
crier=$(readlink -f "${1:-target/release/crier}")
B=${FANOUT_BENCH:?set FANOUT_BENCH to the fanout-bench binary}
IFS=';' read -r -a scenarios <<< "${SCENARIOS:-1000 200 32;5000 100 32}"
out=${OUT_DIR:-$(mktemp -d)}; mkdir -p "$out"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_tcp() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run() { # name, port, app id, start command
  local name=$1 port=$2 app=$3 start=$4
  for sc in "${scenarios[@]}"; do
    set -- $sc
    local n=$1 rate=$2 conc=$3 d; d=$(mktemp -d)
    (cd "$d" && exec bash -c "$start") >"$d/server.log" 2>&1 & local pid=$!
    wait_tcp "$port" || { echo "$name did not start: $(tail -3 "$d/server.log")"; kill "$pid"; continue; }
    local res
    res=$("$B" --proto pusher --host "127.0.0.1:$port" --app-id "$app" --key bench-key --secret bench-secret \
          -n "$n" --rate "$rate" --publish-concurrency "$conc" --duration 10 --idle-secs 2 \
          --server-pid "$pid" --json 2>>"$out/$name.err" | tail -1)
    echo "$res" >> "$out/$name.jsonl"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$d"
    python3 - "$name" "$n" "$rate" "$res" <<'PY'
import json, sys
name, n, rate, res = sys.argv[1:5]
try:
    r = json.loads(res)
except Exception:
    print(f"{name:8} {n:>5}x{rate:<4} FAILED: {res[:160]}"); sys.exit()
idle = (r.get("rss_idle_kb", 0) - r.get("rss_before_kb", 0)) / max(1, int(n))
print(f"{name:8} {n:>5}x{rate:<4} {r['deliveries_per_s']:>9.0f}/s {r['delivered']}/{r['expected']} "
      f"p50 {r['lat_p50_ms']:.1f} p99 {r['lat_p99_ms']:.1f} ms  idle {idle:.1f} KiB/conn  cpu {r.get('server_cpu_s', 0):.1f} s")
PY
  done
}

p=$(freeport)
apps='[{id="1", key="bench-key", secret="bench-secret", tenant="default"}]'
run crier "$p" 1 "exec env CRIER_PUSHER_APPS='$apps' $crier serve --listen 127.0.0.1:$p --data-dir ./data"

if [ -n "${SOCKUDO_BIN:-}" ]; then
  p=$(freeport)
  cfg='{"debug":false,"host":"127.0.0.1","port":'$p',"mode":"production","adapter":{"driver":"local"},
"app_manager":{"driver":"memory","array":{"apps":[{"id":"bench-app","key":"bench-key","secret":"bench-secret",
"enabled":true,"max_connections":0,"enable_client_messages":false,"max_client_events_per_second":0}]}},
"cache":{"driver":"memory"},"queue":{"driver":"none"},"metrics":{"enabled":false},
"rate_limiter":{"enabled":false},"opentelemetry":{"enabled":false}}'
  run sockudo "$p" bench-app "echo '$cfg' > config.json && exec env -i PATH=/usr/bin:/bin HOME=/tmp $SOCKUDO_BIN --config config.json"
fi
echo "raw results: $out"
