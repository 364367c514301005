#!/usr/bin/env bash
# Durability benchmark: restart from a snapshot against a rebuild from the history file,
# the snapshot's write time and size, and the longest pause in query answers while
# snapshots are written.
#
#   bash bench/restart.sh [ROWS] [ROUNDS]        (default 10000000 rows, 3 rounds)
#
# Each round: (a) `lambda run` with no snapshot in its state directory rebuilds from the history;
# the time is from launch to the first answer of /v1/status (which waits for the views);
# a view created once beforehand with CREATE VIEW (kept in the state directory's views.json)
# is built too; SIGTERM then writes a snapshot (its size, write time and the workers' pause are logged);
# (b) `lambda run` again resumes from that snapshot. Both times are until /v1/status and the
# created view answer. Then, resumed once
# more, wrk looks up customers for 30 s while `lambda produce` sends 2,000 messages/s and a
# snapshot is written every 5 s (one with nothing new would be skipped), and once more with
# the same load and no snapshot during the run, for the baseline. ROUNDS=0 measures only
# that (with a snapshot already in $WORK/state); LOOKUPS=0 skips the lookups; VIEW=0 leaves
# the created view out (the built-in views only).
set -euo pipefail
ROWS=${1:-10000000}
ROUNDS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
BROKER=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
: > "$WORK/run.log"
[ -f "$WORK/history.jsonl" ] || "$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 1 --out "$WORK/history.jsonl"
echo "history: $(wc -c <"$WORK/history.jsonl") bytes, $ROWS rows"
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 3 >"$WORK/broker.log" 2>&1 &
sleep 1

# Starts `lambda run` with the given options; ELAPSED = seconds until /v1/status answers.
RUN_PID=
ELAPSED=
start_and_time() {
  local t0 t1
  t0=$(date +%s.%N)
  "$LAMBDA" run --workers 2 --brokers "$BROKER" --http "$HTTP" --input "$WORK/history.jsonl" \
    --dead-letters "$WORK/dead.jsonl" "$@" </dev/null >>"$WORK/run.log" 2>&1 &
  RUN_PID=$!
  until curl -sf --max-time 30 "http://$HTTP/v1/status" >/dev/null 2>&1; do sleep 0.01; done
  if [ -f "$WORK/state/views.json" ] && grep -q spend "$WORK/state/views.json"; then
    until curl -sf --max-time 30 "http://$HTTP/v1/views/spend?limit=1" >/dev/null 2>&1; do sleep 0.01; done
  fi
  t1=$(date +%s.%N)
  ELAPSED=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
}
stop_run() { kill -TERM "$RUN_PID"; wait "$RUN_PID" || true; }

# Once, not timed: create the view, so that every round's rebuild and restart both have it.
if [ "$ROUNDS" -gt 0 ] && [ "${VIEW:-1}" = 1 ]; then
  rm -rf "$WORK/state"
  start_and_time --state-dir "$WORK/state" --snapshot-every-ms 3600000
  curl -sf -X POST -H "Content-Type: application/sql" --data-binary "CREATE VIEW spend AS SELECT customer, count(*) AS n, sum(amount) AS total, min(amount) AS low, max(amount) AS high FROM transactions GROUP BY customer" "http://$HTTP/v1/sql" >/dev/null
  stop_run
  cp "$WORK/state/views.json" "$WORK/views.json"
fi
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/state" && mkdir -p "$WORK/state"
  if [ "${VIEW:-1}" = 1 ]; then cp "$WORK/views.json" "$WORK/state/"; fi
  start_and_time --state-dir "$WORK/state" --snapshot-every-ms 3600000
  rebuild=$ELAPSED
  stop_run
  written=$(grep "snapshot written" "$WORK/run.log" | tail -1 | grep -oE '(bytes|write_ms|longest_worker_pause_ms|versions)=[0-9.]+' | tr '\n' ' ')
  start_and_time --state-dir "$WORK/state" --snapshot-every-ms 3600000
  restart=$ELAPSED
  stop_run
  echo "round $round: rebuild ${rebuild}s  restart from snapshot ${restart}s  snapshot at stop: $written"
done

lookups() {
  "$LAMBDA" produce --brokers "$BROKER" --rate 2000 --duration 40 --customers 10000 --corrections 0.1 --seed 7 \
    >/dev/null 2>&1 &
  local producer=$!
  CUSTOMERS=10000 wrk -t1 -c4 -d30s --latency -s "$HERE/random_customer.lua" "http://$HTTP" | grep -E "Latency|50%|99%|Requests/sec"
  kill "$producer" 2>/dev/null || true
}
[ "${LOOKUPS:-1}" = 0 ] && exit 0
echo "== lookups while a snapshot is written every 5 s (wrk -c4, 30 s, producing 2,000 messages/s)"
: > "$WORK/run.log"
start_and_time --state-dir "$WORK/state" --snapshot-every-ms 5000
lookups
stop_run
grep "snapshot written" "$WORK/run.log" | grep -oE '(write_ms|longest_worker_pause_ms)=[0-9.]+' | tr '\n' ' '; echo
echo "== baseline: the same lookups and load with no snapshot during the run"
start_and_time --state-dir "$WORK/state" --snapshot-every-ms 3600000
lookups
stop_run
ls -la "$WORK/state"
