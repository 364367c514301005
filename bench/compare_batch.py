#!/usr/bin/env python3
"""Side-by-side batch benchmark: `lambda batch` against DuckDB, Polars and PySpark.

  python3 bench/compare_batch.py --input FILE [--runs 5] [--workers 2] [--peers duckdb,spark]

Runs `lambda batch` and each peer (../shared/peers/<peer>/batch_job.py) in turn on the
same file, with the same number of threads, measuring for each run the wall time and the peak resident memory (see `measure`). Prints every run, the medians, and each peer's ratio. Also records
the peers' own `query_seconds` (Spark's time without JVM start-up) and, as a floor, the time to
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
    """Runs cmd; returns (wall seconds, peak tree RSS in MiB, stdout).

    The whole process tree's resident memory is sampled from /proc every 100 ms (Spark's
    JVM is a child, and the driver and the JVM are resident together). Sampling every
    20 ms slowed a 7 s `lambda batch` by 20-30%: reading /proc of a process while it
    faults pages in contends with it.
    """
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        try:
            proc.wait(timeout=0.1)  # returns as soon as it exits
        except subprocess.TimeoutExpired:
            pass
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
    ap.add_argument("--peers", default="duckdb,spark",
                    help="comma-separated peers from ../shared/peers: duckdb, polars, spark")
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--lambda-bin", default=os.path.join(REPO, "target", "release", "lambda"))
    ap.add_argument("--skip-spark", action="store_true", help="same as leaving spark out of --peers")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-batch-")
    peer_args = {
        "duckdb": ["--threads", str(a.workers)],
        "polars": [],
        "spark": ["--master", a.spark_master],
    }
    peers = [p for p in a.peers.split(",") if p and not (a.skip_spark and p == "spark")]
    for p in peers:
        if p not in peer_args:
            sys.exit(f"unknown peer {p!r}: one of {', '.join(peer_args)}")
    env = dict(os.environ, POLARS_MAX_THREADS=str(a.workers))
    cmds = {"lambda": [a.lambda_bin, "batch", "--input", a.input, "--out", os.path.join(work, "lambda"),
                       "--workers", str(a.workers)]}
    for p in peers:
        cmds[p] = [sys.executable, os.path.join(PEERS, p, "batch_job.py"), a.input, os.path.join(work, p)] + peer_args[p]
    size = os.path.getsize(a.input)
    print(f"input {a.input}: {size / 1e6:.1f} MB; {a.runs} runs each, alternating; {os.cpu_count()} cores")
    cat = [measure(["cat", a.input])[0] for _ in range(3)]
    print(f"cat (read the file): median {statistics.median(cat):.3f} s")
    rows = {k: [] for k in cmds}
    query = {k: [] for k in cmds}
    for i in range(a.runs):
        for name, cmd in cmds.items():
            wall, rss, text = measure(cmd, env)
            rows[name].append((wall, rss))
            q = [float(l.split("=")[1]) for l in text.splitlines() if l.startswith("query_seconds=")]
            query[name].extend(q)
            extra = f"  (query_seconds {q[0]})" if q else ""
            print(f"run {i + 1} {name:7}: {wall:7.3f} s  peak RSS {rss:8.1f} MiB{extra}", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in rows.items()}
    print()
    for k, (w, r) in med.items():
        qs = f"  query_seconds {statistics.median(query[k]):.3f}" if query[k] else ""
        print(f"median {k:7}: {w:7.3f} s  peak RSS {r:8.1f} MiB{qs}")
    for p in peers:
        print(f"ratio {p}/lambda: wall {med[p][0] / med['lambda'][0]:.2f}x, memory {med[p][1] / med['lambda'][1]:.2f}x")


if __name__ == "__main__":
    main()
