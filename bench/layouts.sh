#!/usr/bin/env bash
# `lambda batch` on one history as 1 process x 2 workers and as 2 processes x 1 worker,
# alternating, two rounds; checks that both write the same customers view.
#   H=history.jsonl bash bench/layouts.sh       (default H: a 10M-row file you generated with
#   lambda gen --rows 10000000 --customers 10000 --corrections 0.1 --seed 1 --out /tmp/h10m.jsonl)
set -euo pipefail
source bench/common.sh
H=${H:-/tmp/h10m.jsonl}
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(free_port)" "$(free_port)" > $WORK/hosts
now() { date +%s.%N; }
for i in 1 2; do
t0=$(now); "$LAMBDA" batch --workers 2 --input $H --out $WORK/o2 >/dev/null 2>&1; t1=$(now)
echo "1x2: $(python3 -c "print(round($t1-$t0,2))")"
t0=$(now)
"$LAMBDA" batch --workers 1 --processes 2 --process 1 --hostfile $WORK/hosts --input $H --out $WORK/o1 >/dev/null 2>&1 &
"$LAMBDA" batch --workers 1 --processes 2 --process 0 --hostfile $WORK/hosts --input $H --out $WORK/o0 >/dev/null 2>&1
wait; t1=$(now)
echo "2x1: $(python3 -c "print(round($t1-$t0,2))")"
done
cmp $WORK/o2/customers.jsonl $WORK/o0/customers.jsonl && echo "same customers view"
