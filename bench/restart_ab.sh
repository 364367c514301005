#!/usr/bin/env bash
# Two builds of `lambda`, alternated on the same restart and the same rebuild: wall time from
# launch until /v1/status and the created view `spend` answer, CPU time of the process by
# then, and its peak resident memory (VmHWM, which counts the mapped snapshot's pages).
#
#   WORK=DIR bash bench/restart_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     (default 2 rounds)
#
# DIR is a directory `bench/restart.sh` has filled (history.jsonl, and state/ with a snapshot
# and views.json). Each run starts from a copy of that state; it is killed (-9) once it
# answers, so that it writes nothing. A restart reads the snapshot; a rebuild has only
# views.json and reads the history.
set -euo pipefail
OLD=$1
NEW=$2
ROUNDS=${3:-2}
: "${WORK:?WORK must be a directory bench/restart.sh filled}"
source "$(dirname "$0")/common.sh"
[ -f "$WORK/state/views.json" ] || { echo "no $WORK/state/views.json: run bench/restart.sh first" >&2; exit 1; }
BROKER=127.0.0.1:$(free_port)
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 3 >"$WORK/ab-broker.log" 2>&1 &
sleep 1

# once BINARY MODE: prints one line of figures.
once() {
  local bin=$1 mode=$2 http pid t0 t1 stat peak
  rm -rf "$WORK/ab-state" && mkdir -p "$WORK/ab-state"
  if [ "$mode" = restart ]; then cp -r "$WORK/state/." "$WORK/ab-state/"; rm -f "$WORK/ab-state/LOCK"
  else cp "$WORK/state/views.json" "$WORK/ab-state/"; fi
  http=127.0.0.1:$(free_port)
  t0=$(date +%s.%N)
  "$bin" run --workers 2 --brokers "$BROKER" --http "$http" --input "$WORK/history.jsonl" \
    --dead-letters "$WORK/ab-dead.jsonl" --state-dir "$WORK/ab-state" --snapshot-every-ms 3600000 \
    </dev/null >"$WORK/ab-run.log" 2>&1 &
  pid=$!
  until curl -sf --max-time 30 "http://$http/v1/status" >/dev/null 2>&1; do sleep 0.01; done
  until curl -sf --max-time 30 "http://$http/v1/views/spend?limit=1" >/dev/null 2>&1; do sleep 0.01; done
  t1=$(date +%s.%N)
  read -r -a stat <"/proc/$pid/stat"
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{\"$mode\":8} {\"$bin\"}: wall {$t1 - $t0:6.2f} s  cpu {(${stat[13]} + ${stat[14]}) / 100:6.2f} s  peak {$peak / 1024:6.0f} MiB')"
}
for round in $(seq "$ROUNDS"); do
  for mode in restart rebuild; do
    once "$OLD" "$mode"
    once "$NEW" "$mode"
  done
done
