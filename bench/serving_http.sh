#!/usr/bin/env bash
# Serving latency over HTTP while ingesting, side by side with the workshop's serving path.
#
#   bash bench/serving_http.sh [CONNECTIONS] [SECONDS]
#
# 1. a history of 1M rows over 100k customers (`lambda gen`, 10% corrections);
# 2. `lambda broker`, and `lambda run --workers 2` serving HTTP;
# 3. `lambda produce` at 10k messages/s (100k customers, 10% corrections) for the whole run;
# 4. wrk (Debian's `wrk`) on GET /v1/customers/{random customer}, CONNECTIONS at once;
# 5. the status at the end (consumer lag: did ingestion keep up?);
# 6. the workshop's path: `lambda batch` writes the views, then every question re-reads
#    customers.csv (bench/reread_batch_files.py).
# Everything shares this machine's cores: wrk, the broker, the producer and the pipeline.
set -euo pipefail
CONNECTIONS=${1:-8}
SECONDS_RUN=${2:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
source "$HERE/common.sh"
trap 'cleanup; rm -rf "$WORK"' EXIT INT TERM
BROKER_PORT=$(free_port)
HTTP=127.0.0.1:$(free_port)

"$LAMBDA" gen --rows 1000000 --customers 100000 --corrections 0.1 --seed 1 --out "$WORK/history.jsonl"
"$LAMBDA" broker --port "$BROKER_PORT" --partitions 3 >"$WORK/broker.log" 2>&1 &
sleep 1
"$LAMBDA" run --workers 2 --http "$HTTP" --brokers "127.0.0.1:$BROKER_PORT" --input "$WORK/history.jsonl" \
  --dead-letters "$WORK/dead.jsonl" </dev/null >"$WORK/run.log" 2>&1 &
until curl -sf "http://$HTTP/v1/status" >/dev/null 2>&1; do sleep 0.2; done
echo "pipeline up: $(curl -s "http://$HTTP/v1/status" | head -c 300)"
"$LAMBDA" produce --brokers "127.0.0.1:$BROKER_PORT" --rate 10000 --duration $((SECONDS_RUN + 10)) \
  --customers 100000 --corrections 0.1 --seed 2 >"$WORK/produce.log" 2>&1 &
sleep 3
echo "== wrk: $CONNECTIONS connections, ${SECONDS_RUN}s, while producing 10k messages/s"
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency -s "$HERE/random_customer.lua" "http://$HTTP"
echo "== status after the load"
curl -s "http://$HTTP/v1/status"; echo
curl -s "http://$HTTP/metrics" | grep -E '^lambda_(consumer_lag|records_read_total)'
wait %4 2>/dev/null || true
kill %2 %3 2>/dev/null || true
echo "== the workshop's path: re-read the batch output for every question"
"$LAMBDA" batch --workers 2 --input "$WORK/history.jsonl" --out "$WORK/batch" --dead-letters "$WORK/batch-dead.jsonl" >/dev/null
python3 "$HERE/reread_batch_files.py" --file "$WORK/batch/customers.csv" --customers 100000 --seconds 10
