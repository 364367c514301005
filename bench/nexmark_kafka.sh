#!/usr/bin/env bash
# Nexmark through Kafka, black-box: `lambda broker` (PARTITIONS partitions a topic), `lambda
# run` with the three tables read from the topics `person`, `auction`, `bid` and one query as a
# view, then `lambda produce --nexmark EVENTS` sends the streams as JSON while the run reads
# them. The time runs from the producer's start until `/v1/status` shows every table's topic
# read to the offsets the producer printed; CPU is `lambda run`'s alone (the producer and the
# broker share the cores, counted apart). Then, in one statement at one time, the view must
# equal its own SELECT run ad hoc over the tables (EXCEPT ALL both ways: 0 rows), or the
# script fails.
#   EVENTS=1000000 QUERIES="q0 q5" CORRECTIONS=0.1 DELETES=0.02 bash bench/nexmark_kafka.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
EVENTS=${EVENTS:-1000000}
PARTITIONS=${PARTITIONS:-48}
WORKERS=${WORKERS:-2}
QUERIES=${QUERIES:-"q0 q5"}
CORRECTIONS=${CORRECTIONS:-0}
DELETES=${DELETES:-0}
now() { date +%s.%N; }
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
sql() { curl -s -X POST -H "Content-Type: application/sql" --data-binary "$1" "http://$HTTP/v1/sql"; }
: > "$WORK/empty.jsonl"
for q in $QUERIES; do
  PORT=$(free_port); HTTP=127.0.0.1:$(free_port)
  "$LAMBDA" broker --port "$PORT" --partitions "$PARTITIONS" --also person --also auction --also bid >"$WORK/broker.log" 2>&1 &
  BROKER=$!
  sleep 1
  "$LAMBDA" run --workers "$WORKERS" --brokers "127.0.0.1:$PORT" --http "$HTTP" --pg off --input "$WORK/empty.jsonl" \
    --dead-letters "$WORK/dead.jsonl" </dev/null >"$WORK/run.log" 2>&1 &
  RUN=$!
  until curl -sf "http://$HTTP/readyz" >/dev/null; do sleep 0.1; done
  "$LAMBDA" nexmark --query "$q" --print-sql kafka > "$WORK/ddl.sql"
  while IFS= read -r statement; do
    answer=$(sql "$statement")
    grep -q '"error"' <<<"$answer" && { echo "$statement: $answer"; exit 1; }
  done < "$WORK/ddl.sql"
  select=$(tail -1 "$WORK/ddl.sql" | sed -E "s/^CREATE VIEW $q AS //")
  t0=$(now); cpu0=$(cpu "$RUN"); pcpu0=$(cpu "$BROKER")
  bound=$("$LAMBDA" produce --brokers "127.0.0.1:$PORT" --nexmark "$EVENTS" --corrections "$CORRECTIONS" --deletes "$DELETES" \
    2>"$WORK/produce.log")
  until python3 - "$bound" "$(curl -s "http://$HTTP/v1/status")" <<'PY'
import json, sys
want = {}
for item in sys.argv[1].replace("min_offsets=", "").split(","):
    topic, rest = item.split("/")
    partition, offset = rest.split(":")
    want[(topic, partition)] = int(offset)
status = json.loads(sys.argv[2])
have = {(t["name"], p): o for t in status["tables"] for p, o in t["offsets"].items()}
sys.exit(0 if all(have.get(k, 0) >= v for k, v in want.items()) else 1)
PY
  do sleep 0.02; done
  t1=$(now); cpu1=$(cpu "$RUN"); pcpu1=$(cpu "$BROKER")
  check=$(sql "SELECT (SELECT count(*) FROM $q) AS view_rows, (SELECT count(*) FROM ((SELECT * FROM $q EXCEPT ALL ($select)) UNION ALL (($select) EXCEPT ALL SELECT * FROM $q)) d) AS differ")
  python3 - "$q" "$EVENTS" "$t0" "$t1" "$cpu0" "$cpu1" "$pcpu0" "$pcpu1" "$check" "$CORRECTIONS" <<'PY'
import json, sys
q, n, t0, t1, c0, c1, b0, b1 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:9])
check = json.loads(sys.argv[9])
assert "rows" in check, check
rows, differ = check["rows"][0]
seconds, cpu = t1 - t0, c1 - c0
print(f"{q} through Kafka, corrections {sys.argv[10]}: {n} events in {seconds:.2f} s = {n / seconds:,.0f} events/s; "
      f"lambda run {cpu:.1f} CPU-s = {n / cpu:,.0f} events per CPU-second (broker {b1 - b0:.1f} CPU-s); "
      f"view {rows} rows, {differ} differ from its SELECT ad hoc")
sys.exit(0 if differ == 0 and rows > 0 else 1)
PY
  kill "$RUN" "$BROKER"; wait "$RUN" "$BROKER" 2>/dev/null || true
done
