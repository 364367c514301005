#!/usr/bin/env python3
"""The peer's freshness: Spark Structured Streaming (../shared/peers/spark/streaming_job.py).

  python3 bench/spark_streaming_latency.py [--files 30] [--events 100] [--every 1.0]

Spark's Kafka connector cannot be installed from the reachable registries, so the peer
reads a file source: every `--every` seconds this drops a file of `--events` JSON events
stamped with `sent_ms` into the watched directory (written elsewhere, then renamed), and
collects the job's `latency_ms` lines — the time from the newest event's `sent_ms` to the
moment its micro-batch updated the per-customer totals. The first 3 batches (JVM warm-up)
are left out. Standard library only.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "peers")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--every", type=float, default=1.0)
    a = ap.parse_args()
    watch = tempfile.mkdtemp(prefix="spark-watch-")
    staging = tempfile.mkdtemp(prefix="spark-staging-")
    seconds = 40 + a.files * a.every
    job = subprocess.Popen([sys.executable, os.path.join(PEERS, "spark", "streaming_job.py"), watch,
                            "--seconds", str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(l.strip() for l in job.stdout), daemon=True)
    reader.start()
    time.sleep(25)  # JVM and Spark start-up
    for i in range(a.files):
        now = int(time.time() * 1000)
        path = os.path.join(staging, f"batch-{i:04d}.json")
        with open(path, "w") as f:
            for j in range(a.events):
                f.write(json.dumps({"id": f"e{i}-{j}", "customer": f"c{j % 50}", "amount": 10, "sent_ms": now}) + "\n")
        os.rename(path, os.path.join(watch, f"batch-{i:04d}.json"))
        time.sleep(a.every)
    job.wait()
    reader.join(timeout=5)
    latencies = [float(l.split("latency_ms=")[1]) for l in lines if "latency_ms=" in l][3:]
    if not latencies:
        sys.exit(f"no latency lines from the job: {lines[-5:]}")
    latencies.sort()
    pick = lambda p: latencies[min(len(latencies) - 1, round((len(latencies) - 1) * p))]
    print(f"spark structured streaming (file source, {a.events} events per file every {a.every}s): "
          f"n={len(latencies)} p50={pick(0.5):.0f} ms p90={pick(0.9):.0f} ms p99={pick(0.99):.0f} ms "
          f"max={latencies[-1]:.0f} ms")


if __name__ == "__main__":
    main()
