#!/usr/bin/env python3
"""Side-by-side batch benchmark: `lambda batch` against the workshop's PySpark batch job.

  python3 bench/compare_batch.py --input FILE [--runs 5] [--workers 2] [--spark-master local[2]]

Runs A (lambda batch) and B (PySpark, ../shared/peers/spark/batch_job.py) alternately on the
same file, measuring for each run the wall time and the peak resident memory of the whole
process tree (Spark's JVM is a child process that /usr/bin/time does not see), sampled
every 20 ms from /proc. Prints every run, the medians, and the ratio B/A. Also records
Spark's own `query_seconds` (its time without JVM start-up) and, as a floor, the time to
read the file (`cat`). Standard library only.
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(os.path.dirname(REPO), "shared", "peers")


def tree_rss_kb(root):
    """Resident memory of `root` and all its descendants, in KiB."""
    children = {}
    rss = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            with open(f"/proc/{pid}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
        rss[int(pid)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd, env=None):
    """Runs cmd; returns (wall seconds, peak tree RSS in MiB, stdout)."""
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    out.seek(0)
    text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{text[-2000:]}")
    return wall, peak / 1024, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--lambda-bin", default=os.path.join(REPO, "target", "release", "lambda"))
    ap.add_argument("--skip-spark", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-batch-")
    a_cmd = [a.lambda_bin, "batch", "--input", a.input, "--out", os.path.join(work, "lambda"), "--workers", str(a.workers)]
    b_cmd = [sys.executable, os.path.join(PEERS, "spark", "batch_job.py"), a.input, os.path.join(work, "spark"),
             "--master", a.spark_master]
    size = os.path.getsize(a.input)
    print(f"input {a.input}: {size / 1e6:.1f} MB; {a.runs} runs each, alternating; {os.cpu_count()} cores")
    cat = [measure(["cat", a.input])[0] for _ in range(3)]
    print(f"cat (read the file): median {statistics.median(cat):.3f} s")
    rows = {"lambda": [], "spark": []}
    spark_query = []
    for i in range(a.runs):
        wall, rss, _ = measure(a_cmd)
        rows["lambda"].append((wall, rss))
        print(f"run {i + 1} A lambda batch: {wall:7.3f} s  peak RSS {rss:8.1f} MiB", flush=True)
        if a.skip_spark:
            continue
        wall, rss, text = measure(b_cmd)
        rows["spark"].append((wall, rss))
        q = [float(l.split("=")[1]) for l in text.splitlines() if l.startswith("query_seconds=")]
        spark_query.extend(q)
        print(f"run {i + 1} B pyspark     : {wall:7.3f} s  peak RSS {rss:8.1f} MiB  (query_seconds {q[0] if q else '?'})",
              flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in rows.items() if v}
    print()
    for k, (w, r) in med.items():
        print(f"median {k:7}: {w:7.3f} s  peak RSS {r:8.1f} MiB")
    if "spark" in med:
        print(f"median pyspark query_seconds (no JVM start): {statistics.median(spark_query):.3f} s")
        print(f"ratio pyspark/lambda: wall {med['spark'][0] / med['lambda'][0]:.1f}x, "
              f"query-only {statistics.median(spark_query) / med['lambda'][0]:.1f}x, "
              f"memory {med['spark'][1] / med['lambda'][1]:.1f}x")


if __name__ == "__main__":
    main()
