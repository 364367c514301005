#!/usr/bin/env bash
# Scale-out benchmark: batch load time and ingest throughput for 1, 2 and 4 workers in one
# process, and for 2 processes (1 worker each, and 2 workers each) on this machine.
#
#   bash bench/scale.sh [ROWS] [MESSAGES] [RUNS]     (default 1000000 rows, 500000 messages, 3 runs)
#
# - batch: `lambda batch` over a generated history, wall time of the whole command (the
#   processes of a cluster run side by side; the time is until both have exited);
# - ingest: the topic (48 partitions of the in-process broker, run as `lambda broker`) is
#   filled first; then `lambda run` reads it from the start; the time is from launch until
#   /v1/status reports every message admitted.
set -euo pipefail
ROWS=${1:-1000000}
MESSAGES=${2:-500000}
RUNS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
now() { date +%s.%N; }
seconds() { python3 -c "print(f'{$2 - $1:.2f}')"; }
[ -f "$WORK/history.jsonl" ] || "$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 1 --out "$WORK/history.jsonl"
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(free_port)" "$(free_port)" > "$WORK/hosts"

# layout: "W" (one process of W workers) or "2xW" (two processes of W workers)
batch() {
  local layout=$1 input=${2:-$WORK/history.jsonl} t0 t1
  t0=$(now)
  if [[ $layout == 2x* ]]; then
    local w=${layout#2x}
    "$LAMBDA" batch --workers "$w" --processes 2 --process 1 --hostfile "$WORK/hosts" --input "$input" \
      --out "$WORK/out1" >/dev/null 2>&1 &
    "$LAMBDA" batch --workers "$w" --processes 2 --process 0 --hostfile "$WORK/hosts" --input "$input" \
      --out "$WORK/out0" >/dev/null 2>&1
    wait
  else
    "$LAMBDA" batch --workers "$layout" --input "$input" --out "$WORK/out" >/dev/null 2>&1
  fi
  t1=$(now)
  seconds "$t0" "$t1"
}

BROKER=127.0.0.1:$(free_port)
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 48 >"$WORK/broker.log" 2>&1 &
sleep 1
"$LAMBDA" produce --brokers "$BROKER" --duration 100000 --rate 1e12 --customers 10000 --corrections 0.1 \
  --seed 3 >/dev/null 2>&1 &
PRODUCER=$!
# Fill the topic: stop the producer once MESSAGES are on it (counted by a throw-away run).
: > "$WORK/empty.jsonl"
HTTP=127.0.0.1:$(free_port)
"$LAMBDA" run --workers 2 --brokers "$BROKER" --http "$HTTP" --input "$WORK/empty.jsonl" --dead-letters "$WORK/d.jsonl" \
  </dev/null >/dev/null 2>&1 &
COUNTER=$!
while true; do
  n=$(admitted "$HTTP")
  [ "$n" -ge "$MESSAGES" ] && break
  sleep 0.2
done
kill "$PRODUCER" "$COUNTER"; wait "$PRODUCER" "$COUNTER" 2>/dev/null || true
TOTAL=$n

ingest() {
  local layout=$1 t0 t1 http pids=()
  http=127.0.0.1:$(free_port)
  t0=$(now)
  if [[ $layout == 2x* ]]; then
    local w=${layout#2x}
    "$LAMBDA" run --workers "$w" --processes 2 --process 1 --hostfile "$WORK/hosts" --brokers "$BROKER" --http off \
      --input "$WORK/empty.jsonl" --dead-letters "$WORK/d.jsonl" </dev/null >/dev/null 2>&1 &
    pids+=($!)
    "$LAMBDA" run --workers "$w" --processes 2 --process 0 --hostfile "$WORK/hosts" --brokers "$BROKER" --http "$http" \
      --input "$WORK/empty.jsonl" --dead-letters "$WORK/d.jsonl" </dev/null >/dev/null 2>&1 &
    pids+=($!)
  else
    "$LAMBDA" run --workers "$layout" --brokers "$BROKER" --http "$http" \
      --input "$WORK/empty.jsonl" --dead-letters "$WORK/d.jsonl" </dev/null >/dev/null 2>&1 &
    pids+=($!)
  fi
  while true; do
    n=$(admitted "$http")
    [ "$n" -ge "$TOTAL" ] && break
    sleep 0.02
  done
  t1=$(now)
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  python3 -c "print(f'{$t1 - $t0:.2f} s = {$TOTAL / ($t1 - $t0):.0f} messages/s')"
}

echo "history: $ROWS rows; topic: $TOTAL messages over 48 partitions; $(nproc) cores"
for layout in 1 2 4 2x1 2x2; do
  echo "batch  $layout, empty history (start-up and cluster connection): $(batch "$layout" "$WORK/empty.jsonl") s"
  for run in $(seq 1 "$RUNS"); do
    echo "batch  $layout: $(batch "$layout") s"
  done
  for run in $(seq 1 "$RUNS"); do
    echo "ingest $layout: $(ingest "$layout")"
  done
done
