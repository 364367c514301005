#!/usr/bin/env bash
# SQL over the Postgres protocol: point queries idle and while ingesting, and ad-hoc scans of
# 10M live transactions beside DuckDB.
#
#   bash bench/sql.sh [CLIENTS] [SECONDS] [ROWS]
#
# 1. a history of 1M rows over 100k customers (10% corrections), and `lambda run --workers 2`
#    serving SQL on --pg;
# 2. idle: pgbench -n -c CLIENTS -j 1, -M simple then -M prepared, with a one-statement script,
#    a point query on a random customer; every latency logged, p50/p99 computed from the log;
# 3. the same -M simple while `lambda produce` sends 10k messages/s; the status at the end
#    (did ingestion keep up?);
# 4. a second run on ROWS rows (default 10M): ad-hoc GROUP BYs and a join over every live
#    transaction, beside DuckDB over the same rows in its own memory (bench/sql_vs_duckdb.py,
#    which checks the answers are equal), and the process's memory before and after.
# Everything shares this machine's cores: pgbench, the broker, the producer and the pipeline.
set -euo pipefail
CLIENTS=${1:-8}
SECONDS_RUN=${2:-20}
ROWS=${3:-10000000}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
trap 'cleanup' EXIT INT TERM
BROKER_PORT=$(free_port)
HTTP=127.0.0.1:$(free_port)
PG_PORT=$(free_port)

"$LAMBDA" gen --rows 1000000 --customers 100000 --corrections 0.1 --seed 1 --out "$WORK/history.jsonl"
"$LAMBDA" broker --port "$BROKER_PORT" --partitions 3 >"$WORK/broker.log" 2>&1 &
BROKER=$!
sleep 1
"$LAMBDA" run --workers 2 --http "$HTTP" --pg "127.0.0.1:$PG_PORT" --brokers "127.0.0.1:$BROKER_PORT" \
  --input "$WORK/history.jsonl" --dead-letters "$WORK/dead.jsonl" </dev/null >"$WORK/run.log" 2>&1 &
RUN=$!
until curl -sf "http://$HTTP/readyz" >/dev/null 2>&1; do sleep 0.2; done
# Customers are named customer-000000 .. customer-099999; these are customer-010000 .. 099999.
cat > "$WORK/point.sql" <<'SQL'
\set c random(10000, 99999)
SELECT customer, total, count FROM customers WHERE customer = 'customer-0' || :c;
SQL
pgbench_run() { # MODE LABEL
  rm -f "$WORK"/point.[0-9]*
  echo "== pgbench -M $1: $CLIENTS clients, ${SECONDS_RUN}s, point query over the Postgres protocol, $2"
  (cd "$WORK" && pgbench -n -M "$1" -c "$CLIENTS" -j 1 -T "$SECONDS_RUN" -f point.sql -h 127.0.0.1 -p "$PG_PORT" -U lambda \
    --log --log-prefix=point lambda 2>&1 | grep -E "tps|latency|failed|processed")
  python3 - "$WORK" <<'PY'
import glob, sys
lat = sorted(int(l.split()[2]) for f in glob.glob(sys.argv[1] + "/point.[0-9]*") for l in open(f))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(f"latency over {len(lat)} queries: p50 {q(0.5):.3f} ms, p99 {q(0.99):.3f} ms, p99.9 {q(0.999):.3f} ms")
PY
}
pgbench_run simple "idle"
pgbench_run prepared "idle"
"$LAMBDA" produce --brokers "127.0.0.1:$BROKER_PORT" --rate 10000 --duration $((SECONDS_RUN + 10)) \
  --customers 100000 --corrections 0.1 --seed 2 >"$WORK/produce.log" 2>&1 &
PRODUCE=$!
sleep 3
pgbench_run simple "while producing 10k messages/s"
echo "== status after the load"
curl -s "http://$HTTP/v1/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("transactions", d["transactions"], "lag", {p: v["lag"] for p, v in d["partitions"].items()})'
kill "$RUN"; wait "$RUN" 2>/dev/null || true

echo "== ad-hoc GROUP BY over $ROWS live transactions"
"$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 3 --out "$WORK/big.jsonl"
# A fresh broker: the first part's messages must not be read into this run.
kill "$BROKER" "$PRODUCE" 2>/dev/null || true; wait "$BROKER" "$PRODUCE" 2>/dev/null || true
BROKER_PORT=$(free_port)
"$LAMBDA" broker --port "$BROKER_PORT" --partitions 3 >"$WORK/broker-big.log" 2>&1 &
sleep 1
"$LAMBDA" run --workers 2 --http "$HTTP" --pg "127.0.0.1:$PG_PORT" --brokers "127.0.0.1:$BROKER_PORT" \
  --input "$WORK/big.jsonl" --dead-letters "$WORK/dead-big.jsonl" </dev/null >"$WORK/run-big.log" 2>&1 &
RUN=$!
STARTED=$(date +%s.%N)
until curl -sf "http://$HTTP/readyz" >/dev/null 2>&1; do sleep 0.2; done
echo "loaded in $(python3 -c "import time; print(round(time.time() - $STARTED, 1))") s; RSS $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$RUN/status)"
python3 "$HERE/sql_vs_duckdb.py" "$WORK/big.jsonl" "$PG_PORT" 3 2
echo "RSS after the queries: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$RUN/status)"
