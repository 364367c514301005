#!/usr/bin/env bash
# Soak: stream MESSAGES messages over a bounded key set (IDS distinct ids; corrections and
# deletes) through `lambda run` with a snapshot every SNAPSHOT_MS, and record its resident
# memory over time. The memory must level off: versions are replaced, not piled up, and the
# arrangements compact.
#
#   bench/soak.sh                       # 20M messages at 60k/s over 1M ids, 12 partitions (about 6 min)
#   MESSAGES=2000000 RATE=50000 bench/soak.sh
#
# Writes $WORK/soak.csv (seconds, rss_mib, messages_in_views, snapshots) and prints a summary.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/soak}
MESSAGES=${MESSAGES:-20000000}
RATE=${RATE:-60000}
IDS=${IDS:-1000000}
PARTITIONS=${PARTITIONS:-12}
SNAPSHOT_MS=${SNAPSHOT_MS:-5000}
source "$REPO/bench/common.sh"
rm -rf "$WORK/state" "$WORK/dead.jsonl"

BROKER_PORT=$(free_port)
HTTP_PORT=$(free_port)
"$LAMBDA" broker --port "$BROKER_PORT" --partitions "$PARTITIONS" >/dev/null &
sleep 1
"$LAMBDA" run --brokers "127.0.0.1:$BROKER_PORT" --workers 2 --http "127.0.0.1:$HTTP_PORT" \
  --input "$REPO/datasets/transactions.json" --state-dir "$WORK/state" --snapshot-every-ms "$SNAPSHOT_MS" \
  --dead-letters "$WORK/dead.jsonl" 2>"$WORK/run.log" &
RUN=$!
until curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; do sleep 0.2; done

DURATION=$(python3 -c "print($MESSAGES / $RATE)")
"$LAMBDA" produce --brokers "127.0.0.1:$BROKER_PORT" --rate "$RATE" --duration "$DURATION" \
  --ids "$IDS" --corrections 0.1 --seed 11 2>"$WORK/produce.log" &
PRODUCER=$!

echo "seconds,rss_mib,messages_in_views,snapshots" > "$WORK/soak.csv"
START=$(date +%s.%N)
while :; do
  NOW=$(python3 -c "import time; print(round(time.time() - $START, 1))")
  RSS=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$RUN/status")
  IN=$(admitted "127.0.0.1:$HTTP_PORT")
  SNAPS=$(grep -c "snapshot written" "$WORK/run.log" || true)
  echo "$NOW,$RSS,$IN,$SNAPS" >> "$WORK/soak.csv"
  if ! kill -0 "$PRODUCER" 2>/dev/null && [ "$IN" -ge "$MESSAGES" ]; then break; fi
  if ! kill -0 "$RUN" 2>/dev/null; then echo "lambda run died" >&2; tail "$WORK/run.log" >&2; exit 1; fi
  sleep 5
done
STATUS=$(curl -s "http://127.0.0.1:$HTTP_PORT/v1/status")
kill -TERM "$RUN"; wait "$RUN" || true
python3 - "$WORK/soak.csv" "$STATUS" "$MESSAGES" "$IDS" <<'EOF'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
status, messages, ids = json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
skipped = sum(p["skipped"] for p in status["partitions"].values())
print(f"messages in the views: {status['records_read']['kafka']:,} of {messages:,}; skipped: {skipped}")
print(f"live transactions: {status['transactions']:,} (at most {ids:,} ids + 5 history records)")
assert status["records_read"]["kafka"] == messages and skipped == 0, "the views do not hold every message"
assert status["transactions"] <= ids + 5
rss = [(float(r["seconds"]), int(r["rss_mib"]), int(r["messages_in_views"])) for r in rows]
for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
    t, m, n = rss[min(len(rss) - 1, int(fraction * (len(rss) - 1)))]
    print(f"  {t:7.1f} s  {n:>11,} messages  RSS {m:5} MiB")
print(f"peak RSS {max(m for _, m, _ in rss)} MiB; snapshots written: {rows[-1]['snapshots']}")
EOF
