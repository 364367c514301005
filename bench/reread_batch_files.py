#!/usr/bin/env python3
"""The workshop's serving path, for comparison: answer "what is customer X's total?" by
re-reading the batch layer's output file, as serving_layer.py does with the batch results.

  python3 bench/reread_batch_files.py --file OUT/customers.csv --customers 100000 --seconds 10

Each question reads the whole file with the csv module and returns the customer's row.
Prints the latency percentiles and questions per second. Standard library only.
"""
import argparse, csv, random, time


def answer(path, customer):
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["customer"] == customer:
                return row
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)
    p.add_argument("--customers", type=int, default=100000)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    rng = random.Random(1)
    latencies, found = [], 0
    end = time.perf_counter() + a.seconds
    while time.perf_counter() < end:
        customer = "customer-%06d" % rng.randrange(a.customers)
        t = time.perf_counter()
        found += answer(a.file, customer) is not None
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1) + 0.5))]
    print(f"re-reading {a.file}: n={len(latencies)} found={found} p50={pick(0.5):.1f} ms "
          f"p99={pick(0.99):.1f} ms = {len(latencies) / a.seconds:.1f} questions/s")


if __name__ == "__main__":
    main()
