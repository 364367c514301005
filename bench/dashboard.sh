#!/usr/bin/env bash
# The dashboard under load, in a real browser: does the page's main thread stay free?
#
#   bash bench/dashboard.sh [RATE] [SECONDS]     (default 10000 messages/s for 30 s)
#   NO_PAGE=1 bash bench/dashboard.sh ...        (the same without the browser: what the page costs)
#
# `lambda run` (release, 2 workers) on a history of 100,000 rows over 10,000 customers; headless
# Chromium (Debian `chromium`, driven by playwright-core, pinned, installed with npm into
# bench/.node) opens the dashboard; then `lambda produce` sends RATE messages/s (10,000
# customers, 10% corrections) for SECONDS. Meanwhile the page's long tasks (PerformanceObserver
# 'longtask': any stretch of more than 50 ms the main thread was busy) are collected, a
# `page.evaluate` round trip is timed every 100 ms, and the page's height and renders (changes of
# the serving table) are sampled. `lambda run`'s CPU time over the run is reported (the page's
# reads cost it). At the end the views must hold every produced message.
set -euo pipefail
RATE=${1:-10000}
SECONDS_RUN=${2:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
if [ ! -d "$HERE/.node/node_modules/playwright-core" ]; then
  mkdir -p "$HERE/.node"
  (cd "$HERE/.node" && npm install --silent --no-audit --no-fund playwright-core@1.64.1 >/dev/null)
fi
BROKER=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
"$LAMBDA" gen --rows 100000 --customers 10000 --corrections 0.05 --seed 1 --out "$WORK/history.jsonl"
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 6 >"$WORK/broker.log" 2>&1 &
sleep 1
"$LAMBDA" run --workers 2 --brokers "$BROKER" --http "$HTTP" --pg off --input "$WORK/history.jsonl" \
  --views-out "$WORK/views" </dev/null >"$WORK/run.log" 2>&1 &
RUN=$!
for i in $(seq 600); do curl -sf "http://$HTTP/v1/batch" >/dev/null && break; sleep 0.05; done
curl -sf "http://$HTTP/v1/batch" >/dev/null || { echo "lambda run did not start:"; tail "$WORK/run.log"; exit 1; }
PRODUCE=("$LAMBDA" produce --brokers "$BROKER" --rate "$RATE" --duration "$SECONDS_RUN" --customers 10000
  --corrections 0.1 --seed 7 --id-prefix live)
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$RUN/stat"; }
cpu_before=$(cpu)
if [ -n "${NO_PAGE:-}" ]; then
  "${PRODUCE[@]}" >"$WORK/produce.out" 2>/dev/null
else
  NODE_PATH="$HERE/.node/node_modules" node "$HERE/dashboard.js" "http://$HTTP/" "$SECONDS_RUN" "$WORK/produce.out" "${PRODUCE[@]}"
fi
echo "lambda run used $(echo "$(cpu) - $cpu_before" | bc) CPU-seconds in the $SECONDS_RUN s of producing ($([ -n "${NO_PAGE:-}" ] && echo "no page open" || echo "the page open"))"
# The producer prints the next offset of every partition it wrote: on a fresh topic, their sum
# is the number of messages the views must hold.
want=$(sed -n 's/^min_offsets=//p' "$WORK/produce.out" | tr ',' '\n' | awk -F: '{s += $2} END {print s}')
for _ in $(seq 100); do [ "$(admitted "$HTTP")" -ge "$want" ] && break; sleep 0.1; done
echo "the views hold $(admitted "$HTTP") of $want messages produced"
[ "$(admitted "$HTTP")" -ge "$want" ]
