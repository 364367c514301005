#!/usr/bin/env bash
# Nexmark: every query as a view over tables fed by the generator in process (`lambda
# nexmark`), append-only and with corrections (10% of bids re-sent with a new price, 2%
# deleted), each run in a process of its own, each checked against DataFusion over the events
# applied. Prints one line per run and a Markdown table; exits 1 if any view differs.
#   EVENTS=10000000 QUERIES="q0 q1 …" WORKERS=2 bash bench/nexmark.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
EVENTS=${EVENTS:-10000000}
WORKERS=${WORKERS:-2}
QUERIES=${QUERIES:-"q0 q1 q2 q3 q4 q5 q7 q8 q9 q17 q18 q19 q20"}
failed=0
table="| query | append-only: events/s per core | CPU-s per M events | peak MiB | with corrections: events/s per core | ratio | peak MiB | checked |\n|---|---|---|---|---|---|---|---|\n"
field() { sed -E "s/.*[ (]([0-9.]+) $1.*/\1/" <<<"$2"; }
for q in $QUERIES; do
  row=()
  for variant in "" "--corrections 0.1 --deletes 0.02"; do
    # shellcheck disable=SC2086
    if line=$(RUST_LOG=warn "$LAMBDA" nexmark --query "$q" --events "$EVENTS" --workers "$WORKERS" $variant); then
      echo "$line"
    else
      echo "$line"; failed=1
    fi
    per_core=$(sed -E 's/.* ([0-9]+) per core.*/\1/' <<<"$line")
    cpu=$(sed -E 's/.* ([0-9.]+) CPU-s per million.*/\1/' <<<"$line")
    peak=$(sed -E 's/.*peak ([0-9]+) MiB.*/\1/' <<<"$line")
    checked=$(grep -q "equal to the recomputation" <<<"$line" && echo equal || echo DIFFERENT)
    row+=("$per_core" "$cpu" "$peak" "$checked")
  done
  ratio=$(python3 -c "print(f'{${row[4]} / ${row[0]}:.2f}')")
  table+="| $q | ${row[0]} | ${row[1]} | ${row[2]} | ${row[4]} | $ratio | ${row[6]} | ${row[3]}, ${row[7]} |\n"
done
printf "\n$table"
exit $failed
