#!/usr/bin/env bash
# A compiled join view created at run time over a large live state: its backfill and its memory.
#
#   cargo build --release && bash bench/view_backfill.sh [LAMBDA] [DATA] [RUNS]
#       LAMBDA  the release binary (default target/release/lambda)
#       DATA    scratch directory (default /tmp/atelier-view-backfill); history.jsonl and
#               customers.csv are made there when missing
#       RUNS    fresh `lambda run` processes, one after the other (default 2)
#
# The history is 10M rows (ROWS), 10k customers, 10% corrections (`lambda gen --seed 1`);
# customers.csv gives each of customer-000000 .. customer-009999 a city (city-NN, index % 50)
# and a segment (index % 3). In each run, `lambda run --workers 2` (no Kafka: it warns and serves
# the history) loads the history; then, timed over HTTP:
#   a. CREATE TABLE customer_info ... WITH (connector = 'file', path = customers.csv);
#   b. CREATE VIEW spend_by_city (transactions JOIN customer_info, GROUP BY city), then at once
#      SELECT count(*) FROM spend_by_city, which waits until the view is filled: the time from
#      the CREATE to that answer is the backfill (a 504 / 57014 is retried and counted in);
#   c. the view's rows against the same query asked ad hoc (DataFusion joining at read time,
#      timed 3 times): equal, or the script exits 1;
#   d. CREATE VIEW per_customer, a view over transactions alone, timed the same way and checked
#      the same way; e. top10 (ORDER BY amount DESC LIMIT 10) and f. top3_each (row_number()
#      per customer, rn <= 3), the top-k views, the same way.
# VmRSS / VmHWM of the process after the load and after each step. Then DuckDB runs the join
# over the same two files, 3 times (it applies no corrections or deletes: every line counts, so
# its figure is only a speed reference for the same shape of work).
#
# Like bench/*.sh, but bench/common.sh is not sourced: it builds the repository it sits in,
# and this script measures a binary given to it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LAMBDA=$(realpath "${1:-$HERE/../target/release/lambda}")
DATA=$(realpath -m "${2:-/tmp/atelier-view-backfill}")
RUNS=${3:-2}
ROWS=${ROWS:-10000000}
TIMEOUT_MS=${TIMEOUT_MS:-600000}   # --query-timeout-ms: the backfill's read is not cut at 10 s
mkdir -p "$DATA"

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Every process started in the background stops with the script, however it ends.
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
now() { date +%s.%N; }
since() { printf '%.3f' "$(echo "$(now) - $1" | bc)"; }
# VmRSS and VmHWM of process $1, and the machine's 1-minute load (it is shared: say how busy).
rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB  ", $1, $2/1024}' "/proc/$1/status"; echo "load $(cut -d' ' -f1 /proc/loadavg)"; }
# CPU seconds (user + system, every thread) process $1 has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# sql STATEMENT OUT: the statement over HTTP, the answer in OUT, the HTTP status on stdout.
sql() { curl -s -o "$2" -w '%{http_code}' -X POST -H 'Content-Type: application/sql' --data-binary "$1" "http://$HTTP/v1/sql"; }
# sql_wait STATEMENT OUT: sql, again while it times out (HTTP 504 or SQLSTATE 57014).
sql_wait() {
  local code
  while :; do
    code=$(sql "$1" "$2")
    [ "$code" = 200 ] && return 0
    if [ "$code" = 504 ] || grep -q 57014 "$2"; then echo "    (timed out, retrying: $(head -c 200 "$2"))" >&2; continue; fi
    echo "    HTTP $code: $(head -c 500 "$2")" >&2; return 1
  done
}
# same A B: the JSON rows of two answers, equal to the cent (numbers read as decimals)?
same() { python3 - "$1" "$2" <<'PY'
import decimal, json, sys
a, b = (json.load(open(f), parse_float=decimal.Decimal)["rows"] for f in sys.argv[1:3])
print(f"equal ({len(a)} rows)" if a == b else f"DIFFERENT ({len(a)} rows against {len(b)})")
sys.exit(a != b)
PY
}
# The transactions /v1/status counts, -1 while it does not answer.
transactions() {
  (curl -s -m 5 "http://$HTTP/v1/status" || true) | python3 -c 'import json,sys
try: d=json.load(sys.stdin); print(d["transactions"] if d["records_read"]["history"] > 0 else -1)
except Exception: print(-1)'
}

if [ ! -s "$DATA/history.jsonl" ]; then
  "$LAMBDA" gen --rows "$ROWS" --customers 10000 --corrections 0.1 --seed 1 --out "$DATA/history.jsonl"
fi
if [ ! -s "$DATA/customers.csv" ]; then
  python3 - "$DATA/customers.csv" <<'PY'
import sys
segments = ["retail", "pro", "enterprise"]
with open(sys.argv[1], "w") as f:
    f.write("customer,city,segment\n")
    for i in range(10000):
        f.write(f"customer-{i:06d},city-{i % 50:02d},{segments[i % 3]}\n")
PY
fi
echo "== $(date -u), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary $LAMBDA; history $(wc -c <"$DATA/history.jsonl") bytes; customers.csv $(($(wc -l <"$DATA/customers.csv") - 1)) rows"

TABLE="CREATE TABLE customer_info (customer text, city text, segment text, PRIMARY KEY (customer)) WITH (connector = 'file', path = '$DATA/customers.csv')"
JOIN_VIEW="CREATE VIEW spend_by_city AS SELECT i.city, sum(t.amount) AS total, count(*) AS n FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city"
JOIN_ADHOC="SELECT i.city, sum(t.amount), count(*) FROM transactions t JOIN customer_info i ON t.customer = i.customer GROUP BY i.city ORDER BY 1"
OLD_VIEW="CREATE VIEW per_customer AS SELECT customer, sum(amount) AS total, count(*) AS n FROM transactions GROUP BY customer"
OLD_ADHOC="SELECT customer, sum(amount), count(*) FROM transactions GROUP BY customer ORDER BY 1"
TOP_VIEW="CREATE VIEW top10 AS SELECT customer, amount FROM transactions ORDER BY amount DESC, customer LIMIT 10"
TOP_ADHOC="SELECT customer, amount FROM transactions ORDER BY amount DESC, customer LIMIT 10"
RANKED="SELECT customer, amount, row_number() OVER (PARTITION BY customer ORDER BY amount DESC) AS rn FROM transactions"
RANK_VIEW="CREATE VIEW top3_each AS SELECT customer, amount, rn FROM ($RANKED) r WHERE rn <= 3"
RANK_ADHOC="SELECT customer, amount, rn FROM ($RANKED) r WHERE rn <= 3 ORDER BY customer, rn"
# timed_view STEP NAME CREATE READ ADHOC: the view created and read at once (its backfill), CPU
# and memory, then its rows against the same query asked ad hoc.
timed_view() {
  local u0 o0 created result
  u0=$(cpu $RUN); o0=$(now); sql_wait "$3" "$OUT/$2-create.json"; created=$(since "$o0")
  sql_wait "SELECT count(*) FROM $2" "$OUT/$2-count.json"
  echo "$1. CREATE VIEW $2: answered in $created s; its first read answered $(since "$o0") s after the CREATE, $(echo "$(cpu $RUN) - $u0" | bc) CPU s; $(rss $RUN)"
  sql_wait "$4" "$OUT/$2.json"
  sql_wait "$5" "$OUT/$2-adhoc.json"
  result=$(same "$OUT/$2.json" "$OUT/$2-adhoc.json") || status=1
  echo "   view against the ad-hoc query: $result"
}
status=0
for run in $(seq 1 "$RUNS"); do
  HTTP=127.0.0.1:$(free_port)
  OUT=$DATA/run-$run
  mkdir -p "$OUT"
  echo "== run $run: lambda run --workers 2 --http $HTTP --pg off --query-timeout-ms $TIMEOUT_MS"
  t0=$(now)
  "$LAMBDA" run --input "$DATA/history.jsonl" --workers 2 --http "$HTTP" --pg off --query-timeout-ms "$TIMEOUT_MS" \
    --dead-letters "$OUT/dead.jsonl" </dev/null >"$OUT/run.log" 2>&1 &
  RUN=$!
  # Loaded: the history is read and the count of transactions holds still for a second.
  last=-2
  while :; do
    n=$(transactions)
    [ "$n" -ge 0 ] && [ "$n" = "$last" ] && break
    last=$n; sleep 1
  done
  echo "loaded: $n transactions, seen stable $(since "$t0") s after launch; $(rss $RUN)"

  c0=$(now); sql_wait "$TABLE" "$OUT/table.json"
  echo "a. CREATE TABLE customer_info: $(since "$c0") s ($(head -c 100 "$OUT/table.json")); $(rss $RUN)"

  u0=$(cpu $RUN); v0=$(now); sql_wait "$JOIN_VIEW" "$OUT/view.json"; created=$(since "$v0")
  sql_wait "SELECT count(*) FROM spend_by_city" "$OUT/count.json"
  echo "b. CREATE VIEW spend_by_city: answered in $created s; its first read answered $(since "$v0") s after the CREATE (backfill), $(echo "$(cpu $RUN) - $u0" | bc) CPU s; $(rss $RUN)"

  sql_wait "SELECT * FROM spend_by_city ORDER BY city" "$OUT/spend_by_city.json"
  for i in 1 2 3; do
    q0=$(now); sql_wait "$JOIN_ADHOC" "$OUT/adhoc-$i.json"
    echo "c. the join ad hoc, run $i: $(since "$q0") s; $(rss $RUN)"
  done
  result=$(same "$OUT/spend_by_city.json" "$OUT/adhoc-1.json") || status=1
  echo "   view against the ad-hoc query: $result"
  python3 - "$OUT/spend_by_city.json" "$n" <<'PY'
import json, sys
joined = sum(r[2] for r in json.load(open(sys.argv[1]))["rows"])
print(f"   the view counts {joined} transactions of {sys.argv[2]} ({'all' if joined == int(sys.argv[2]) else 'NOT all'} joined a customer)")
PY

  timed_view d per_customer "$OLD_VIEW" "SELECT * FROM per_customer ORDER BY customer" "$OLD_ADHOC"
  timed_view e top10 "$TOP_VIEW" "SELECT * FROM top10 ORDER BY amount DESC, customer" "$TOP_ADHOC"
  timed_view f top3_each "$RANK_VIEW" "SELECT * FROM top3_each ORDER BY customer, rn" "$RANK_ADHOC"

  kill "$RUN"; wait "$RUN" 2>/dev/null || true
  echo "   lambda's log, warnings and errors: $(grep -cE ' (WARN|ERROR) ' "$OUT/run.log") (in $OUT/run.log)"
  grep -E ' (WARN|ERROR) ' "$OUT/run.log" | cut -c1-200 | sed 's/^/     /' || true
done

echo "== DuckDB $(python3 -c 'import duckdb; print(duckdb.__version__)'): the same join over the files (no corrections applied)"
python3 - "$DATA/history.jsonl" "$DATA/customers.csv" 3 <<'PY'
import sys, time, duckdb
hist, cust, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = (f"SELECT i.city, sum(t.amount), count(*) FROM read_json_auto('{hist}') t "
     f"JOIN read_csv_auto('{cust}') i ON t.customer = i.customer GROUP BY i.city ORDER BY 1")
threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
times = []
for _ in range(runs):
    con = duckdb.connect()  # a fresh connection each time: nothing cached but the OS's pages
    t = time.perf_counter(); rows = con.execute(q).fetchall(); times.append(time.perf_counter() - t)
    con.close()
print("runs (s): " + " ".join(f"{x:.2f}" for x in times) + f"; median {sorted(times)[len(times) // 2]:.2f}; {threads} threads")
print(f"{len(rows)} cities, {sum(r[2] for r in rows)} rows joined (every line of the file: corrections not applied, deletes have no customer)")
PY
[ "$status" = 0 ] && echo "== every view equalled its ad-hoc query" || echo "== A VIEW DIFFERED FROM ITS AD-HOC QUERY"
exit "$status"
