#!/usr/bin/env bash
# Ingest through the real binary: MESSAGES generated messages (10% corrections) pre-produced
# into `lambda broker` over PARTITIONS partitions — one kcat per partition, keyed by id, each
# id always on the same partition, so that no partition passes the broker's 5 MiB retention
# and the final views do not depend on the order between partitions — then `lambda run
# --workers WORKERS` (empty history) reads them from the start. The time runs from launch until
# /v1/status reflects every offset (with the CPU `lambda run` used by then); then the views must
# hold what `lambda batch` computes from the same messages (transactions and total), or the
# script fails.
#
#   bash bench/ingest.sh [MESSAGES] [PARTITIONS] [RUNS]     (default 1000000 24 3; WORKERS=2)
set -euo pipefail
MESSAGES=${1:-1000000}
PARTITIONS=${2:-24}
RUNS=${3:-3}
WORKERS=${WORKERS:-2}
source "$(dirname "$0")/common.sh"
now() { date +%s.%N; }
"$LAMBDA" gen --rows "$MESSAGES" --customers 10000 --corrections 0.1 --seed 5 --id-prefix s --out "$WORK/messages.jsonl"
python3 - "$WORK" "$PARTITIONS" <<'PY'
import json, sys, zlib
work, n = sys.argv[1], int(sys.argv[2])
files = [open(f"{work}/p{p}.txt", "w") for p in range(n)]
for line in open(f"{work}/messages.jsonl"):
    key = str(json.loads(line)["id"])
    files[zlib.crc32(key.encode()) % n].write(f"{key}\t{line}")
PY
"$LAMBDA" batch --input "$WORK/messages.jsonl" --out "$WORK/batch" >/dev/null 2>&1
EXPECTED=$(cat "$WORK/batch/overall.jsonl")
: > "$WORK/empty.jsonl"
for run in $(seq "$RUNS"); do
  PORT=$(free_port); HTTP=127.0.0.1:$(free_port)
  "$LAMBDA" broker --port "$PORT" --partitions "$PARTITIONS" >"$WORK/broker.log" 2>&1 &
  BROKER=$!
  sleep 1
  for p in $(seq 0 $((PARTITIONS - 1))); do
    kcat -P -b "127.0.0.1:$PORT" -t real-time-orders -p "$p" -K$'\t' -l "$WORK/p$p.txt" &
  done
  wait $(jobs -p | grep -v "^$BROKER$")
  t0=$(now)
  "$LAMBDA" run --workers "$WORKERS" --brokers "127.0.0.1:$PORT" --http "$HTTP" --pg off --input "$WORK/empty.jsonl" \
    --dead-letters "$WORK/dead.jsonl" >"$WORK/run.log" 2>&1 &
  RUN=$!
  until [ "$(admitted "$HTTP")" -ge "$MESSAGES" ]; do sleep 0.02; done
  t1=$(now)
  # lambda run's own CPU (user + system) by then: the broker and kcat share the cores.
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$RUN/stat")
  python3 - "$t0" "$t1" "$MESSAGES" "$EXPECTED" "$(curl -s "http://$HTTP/v1/status")" "$WORKERS" "$PARTITIONS" "$cpu" <<'PY'
import json, sys
from decimal import Decimal
t0, t1, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
expected = json.loads(sys.argv[4], parse_float=Decimal)
status = json.loads(sys.argv[5], parse_float=Decimal)
held = (status["transactions"], Decimal(str(status["total"])))
want = (expected["count"], Decimal(str(expected["total"])))
assert held == want, f"the views hold {held}, lambda batch computes {want}"
cpu = float(sys.argv[8])
print(f"{n} messages, {sys.argv[7]} partitions, {sys.argv[6]} workers: {t1 - t0:.2f} s from launch = {n / (t1 - t0):,.0f} msg/s; "
      f"lambda run used {cpu:.2f} CPU-s = {cpu / (n / 1e6):.2f} CPU-s per million messages; "
      f"views hold {held[0]} transactions, total {held[1]} (= lambda batch)")
PY
  kill "$RUN" "$BROKER"; wait "$RUN" "$BROKER" 2>/dev/null || true
done
