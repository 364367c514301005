#!/usr/bin/env bash
# Idle cost: `lambda run` (workshop history, empty topic on `lambda broker`, no clients) —
# the CPU it uses in SECONDS seconds after it settled, from /proc/PID/stat; the broker's too.
# Freshness at a trickle is `speed_bench freshness --rate 20` (see BENCHMARKS.md).
#   bash bench/idle.sh            (SECS=10 WORKERS=2 by default)
set -euo pipefail
source "$(dirname "$0")/common.sh"
SECS=${SECS:-10}
WORKERS=${WORKERS:-2}
BROKER_PORT=$(free_port); HTTP_PORT=$(free_port)
"$LAMBDA" broker --port "$BROKER_PORT" --partitions 3 >"$WORK/broker.log" 2>&1 &
BROKER=$!
sleep 1
"$LAMBDA" run --brokers "127.0.0.1:$BROKER_PORT" --workers "$WORKERS" ${FETCH_WAIT_MS:+--fetch-wait-ms $FETCH_WAIT_MS} --http "127.0.0.1:$HTTP_PORT" --pg off \
  --input datasets/transactions.json --dead-letters "$WORK/dead.jsonl" >"$WORK/run.log" 2>&1 &
RUN=$!
until curl -sf "http://127.0.0.1:$HTTP_PORT/v1/status" | grep -q '"reading"'; do sleep 0.2; done
sleep 3
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
r0=$(ticks $RUN); b0=$(ticks $BROKER)
sleep "$SECS"
r1=$(ticks $RUN); b1=$(ticks $BROKER)
hz=$(getconf CLK_TCK)
python3 - "$r0" "$r1" "$b0" "$b1" "$hz" "$SECS" <<'PY'
import sys
r0, r1, b0, b1, hz, secs = map(float, sys.argv[1:])
print(f"idle {secs:.0f} s: lambda run {(r1 - r0) / hz:.2f} s CPU = {100 * (r1 - r0) / hz / secs:.1f}% of a core; "
      f"lambda broker {(b1 - b0) / hz:.2f} s = {100 * (b1 - b0) / hz / secs:.1f}%")
PY
