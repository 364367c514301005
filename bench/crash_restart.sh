#!/usr/bin/env bash
# Restart after a crash (kill -9) with a created view, against the same restart without the
# views' state kept beside the snapshot (what a crash left before the views were captured
# with every snapshot) and against a rebuild from the history. Each timed from launch until
# /v1/status and the created view `spend` answer; the runs alternate.
#
#   bash bench/crash_restart.sh [ROWS] [ROUNDS]        (default 10000000 rows, 3 rounds)
#
# Once per invocation, untimed (its offsets are those of this invocation's broker): `lambda
# run` rebuilds from the history (HISTORY, or `lambda gen` of ROWS rows), `spend` is
# created, `lambda produce` sends 20,000 messages, a periodic snapshot (every 5 s) is
# written with the views' state beside it, and the process is killed with SIGKILL. That
# state directory is copied for every restart.
set -euo pipefail
ROWS=${1:-10000000}
ROUNDS=${2:-3}
source "$(dirname "$0")/common.sh"
HISTORY=${HISTORY:-$WORK/history.jsonl}
[ -f "$HISTORY" ] || "$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 1 --out "$HISTORY"
BROKER=127.0.0.1:$(free_port)
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 3 >"$WORK/broker.log" 2>&1 &
sleep 1

# Starts `lambda run` on state directory $1 with snapshots every $2 ms; waits until /v1/status
# and `spend` (when views.json has it) answer. Sets PID, HTTP, SECONDS_TAKEN.
PID= HTTP= SECONDS_TAKEN=
start() {
  local state=$1 every=$2 t0 t1
  HTTP=127.0.0.1:$(free_port)
  t0=$(date +%s.%N)
  "$LAMBDA" run --workers 2 --brokers "$BROKER" --http "$HTTP" --input "$HISTORY" --dead-letters "$WORK/dead.jsonl" \
    --state-dir "$state" --snapshot-every-ms "$every" </dev/null >"$WORK/run.log" 2>&1 &
  PID=$!
  until curl -sf --max-time 30 "http://$HTTP/v1/status" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || { echo "lambda run exited:" >&2; tail -3 "$WORK/run.log" >&2; exit 1; }
    sleep 0.01
  done
  if grep -qs spend "$state/views.json"; then
    until curl -sf --max-time 30 "http://$HTTP/v1/views/spend?limit=1" >/dev/null 2>&1; do sleep 0.01; done
  fi
  t1=$(date +%s.%N)
  SECONDS_TAKEN=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
}

# The crashed state.
rm -rf "$WORK/crashed"
start "$WORK/crashed" 5000
curl -sf -X POST -H "Content-Type: application/sql" --data-binary "CREATE VIEW spend AS SELECT customer, count(*) AS n, sum(amount) AS total, min(amount) AS low, max(amount) AS high FROM transactions GROUP BY customer" "http://$HTTP/v1/sql" >/dev/null
"$LAMBDA" produce --brokers "$BROKER" --rate 10000 --duration 2 --customers 10000 --corrections 0.1 --seed 7 >/dev/null 2>&1
until [ "$(admitted "$HTTP")" -ge 20000 ]; do sleep 0.2; done
# Once nothing more comes, the newest snapshot stays the newest (one with nothing new is not
# written): wait for it to have every worker's views beside it.
newest_with_views() {
  local t
  t=$(ls "$WORK/crashed" | grep -E '^snapshot-[0-9]+\.snap$' | sort | tail -1 | sed -E 's/snapshot-([0-9]+)\.snap/\1/')
  [ -n "$t" ] && [ -f "$WORK/crashed/views-$t-0.bin" ] && [ -f "$WORK/crashed/views-$t-1.bin" ] && echo "$t"
}
while :; do
  newest=$(newest_with_views || true)
  sleep 6
  [ -n "$newest" ] && [ "$(newest_with_views || true)" = "$newest" ] && break
done
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
echo "crashed state: $(du -sh "$WORK/crashed" | cut -f1) — snapshot $newest, views beside it"

# once MODE: restart (the crashed state), bare (the same without the views' files), rebuild.
once() {
  local mode=$1 state=$WORK/state-$1 stat peak put_back
  rm -rf "$state" && mkdir -p "$state"
  case $mode in
    restart) cp -r "$WORK/crashed/." "$state/" ;;
    bare) cp -r "$WORK/crashed/." "$state/"; rm -f "$state"/views-*.bin ;;
    rebuild) cp "$WORK/crashed/views.json" "$state/" ;;
  esac
  rm -f "$state/LOCK"
  start "$state" 3600000
  read -r -a stat <"/proc/$PID/stat"
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  put_back=$(grep -c "is put back" "$WORK/run.log" || true)
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true
  python3 -c "print(f'{\"$mode\":8} wall {$SECONDS_TAKEN:6.2f} s  cpu {(${stat[13]} + ${stat[14]}) / 100:6.2f} s  peak {$peak / 1024:6.0f} MiB  workers that put the views back: $put_back')"
}
for round in $(seq "$ROUNDS"); do
  for mode in restart bare rebuild; do once "$mode"; done
done
