#!/usr/bin/env bash
# Views created at run time: CREATE VIEW over a large live state against loading that state.
#
#   bash bench/views.sh [ROWS]        (default 10000000 rows, 10k customers, 10% corrections)
#   WHERE="WHERE amount > -1000000000" bash bench/views.sh   (the view of the transactions that pass
#                                     it: without one, the view has the `customers` built-in's
#                                     shape and is read from its arrangement, filled by nothing)
#
# `lambda run` loads the history (time from launch to the first answer of /v1/status, and
# its resident memory); then, while `lambda produce` sends 10,000 messages/s, `CREATE VIEW`
# of a per-customer aggregate (filled from the live version table, no file re-read) is timed
# from the statement to its answer, the view is checked against the same question asked as
# an ad-hoc query, and the resident memory is taken after the CREATE and after the DROP.
# The produced messages are checked to be all in the views at the end.
set -euo pipefail
ROWS=${1:-10000000}
WHERE=${WHERE:-}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
BROKER=127.0.0.1:$(free_port)
HTTP=127.0.0.1:$(free_port)
[ -f "$WORK/history.jsonl" ] || "$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 1 --out "$WORK/history.jsonl"
echo "history: $(wc -c <"$WORK/history.jsonl") bytes, $ROWS rows"
"$LAMBDA" broker --port "${BROKER#*:}" --partitions 12 >"$WORK/broker.log" 2>&1 &
sleep 1
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }
sql() { curl -s -X POST -H "Content-Type: application/sql" --data-binary "$1" "http://$HTTP/v1/sql"; }
# A digest of rows (customer, count, total) given as JSON on stdin, and how many.
digest() { python3 -c 'import hashlib,json,sys
rows = sorted(json.loads(l) for l in sys.stdin)
print(hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16], len(rows))'; }

t0=$(date +%s.%N)
"$LAMBDA" run --workers 2 --brokers "$BROKER" --http "$HTTP" --pg off --max-rows 1000000 \
  --input "$WORK/history.jsonl" --dead-letters "$WORK/dead.jsonl" </dev/null >"$WORK/run.log" 2>&1 &
RUN=$!
until curl -sf "http://$HTTP/v1/status" >/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
echo "load: $(echo "$t1 - $t0" | bc) s from launch to the first answer; RSS $(rss $RUN)"

"$LAMBDA" produce --brokers "$BROKER" --rate 10000 --duration 20 --customers 10000 --corrections 0.1 \
  --seed 7 --id-prefix live >"$WORK/produce.out" 2>"$WORK/produce.log" &
PRODUCE=$!
sleep 3
statement="CREATE VIEW spend AS SELECT customer, count(*) AS n, sum(amount) AS total, min(amount) AS low, max(amount) AS high FROM transactions $WHERE GROUP BY customer"
# Meanwhile, one customer's row is read over and over: how long do other views' reads wait
# while the new view is being filled?
python3 - "$HTTP" >"$WORK/reads-during-create.txt" <<'PY' &
import json, sys, time, urllib.parse, urllib.request
base = f"http://{sys.argv[1]}/v1/customers"
name = json.load(urllib.request.urlopen(f"{base}?limit=1"))["customers"][0]["customer"]
url, waits, end = f"{base}/{urllib.parse.quote(name)}", [], time.time() + 12
while time.time() < end:
    t = time.perf_counter(); urllib.request.urlopen(url).read(); waits.append((time.perf_counter() - t) * 1000)
    time.sleep(0.005)
waits.sort()
print(f"{len(waits)} reads of /v1/customers/{name} meanwhile: p50 {waits[len(waits) // 2]:.1f} ms, p99 {waits[len(waits) * 99 // 100]:.1f} ms, max {waits[-1]:.1f} ms")
PY
READER=$!
sleep 1
c0=$(date +%s.%N)
answer=$(sql "$statement")
c1=$(date +%s.%N)
echo "CREATE VIEW while producing 10k msg/s: $(echo "$c1 - $c0" | bc) s ($answer); RSS $(rss $RUN)"
wait $READER
echo "  $(cat "$WORK/reads-during-create.txt")"
for i in 1 2 3; do
  f0=$(date +%s.%N); sql "SELECT count(*) FROM spend" >/dev/null; f1=$(date +%s.%N)
  echo "  a read of the new view: $(echo "($f1 - $f0) * 1000" | bc) ms"
done
wait $PRODUCE
bound=$(cat "$WORK/produce.out")
view=$(curl -s "http://$HTTP/v1/views/spend?$bound&timeout_ms=60000" \
  | python3 -c 'import json,sys; [print(json.dumps([r["customer"], r["n"], str(r["total"])])) for r in json.load(sys.stdin)["rows"]]' | digest)
adhoc=$(sql "SELECT customer, count(*), sum(amount) FROM transactions $WHERE GROUP BY customer" \
  | python3 -c 'import json,sys; [print(json.dumps([r[0], r[1], str(r[2])])) for r in json.load(sys.stdin)["rows"]]' | digest)
echo "after the stream ($bound): view [hash rows] $view, ad-hoc query $adhoc"
[ "$view" = "$adhoc" ] && echo "  equal" || echo "  DIFFERENT"
sql "DROP VIEW spend" >/dev/null
sleep 2
echo "after DROP VIEW: RSS $(rss $RUN)"
