"""Ad-hoc SQL over the live transactions of `lambda run`, beside DuckDB over the same rows
held in its own memory: the same queries, timed side by side, and their answers compared.

  python3 bench/sql_vs_duckdb.py HISTORY.jsonl PG_PORT [RUNS] [THREADS]

DuckDB loads HISTORY the way the pipeline does (the latest version of each id by file
position, rows without an id standing alone, deletes dropping the id) into an in-memory table
`transactions`, and `customers` as its own GROUP BY of them (not timed). Each query then runs
RUNS times on each side, alternated: ours through psycopg (client to last row), DuckDB's
through its Python API. The answers must be equal (sorted rows, money exact), or it exits 1:
the figures are of the same work.
"""
import decimal
import sys
import time

import duckdb
import psycopg

QUERIES = {
    "GROUP BY category, 5 aggregates": "SELECT category, count(*), sum(amount), min(amount), max(amount), "
                                       "avg(amount) FROM transactions GROUP BY category",
    "customers JOIN transactions, by category": "SELECT t.category, count(*), sum(c.total), max(c.count) "
                                                "FROM customers c JOIN transactions t ON c.customer = t.customer "
                                                "GROUP BY t.category",
    "count, sum": "SELECT count(*), sum(amount) FROM transactions",
}


def cell(v):
    if isinstance(v, decimal.Decimal):
        # DuckDB's avg is a double and ours a numeric of scale 6: compared to the cent.
        return format(v.quantize(decimal.Decimal("0.01")), "f")
    if isinstance(v, float):
        return format(decimal.Decimal(v).quantize(decimal.Decimal("0.01")), "f")
    return repr(v)


def rows(result):
    return sorted(tuple(cell(v) for v in r) for r in result)


def main():
    history, port = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    duck = duckdb.connect()
    duck.execute(f"SET threads = {threads}")
    started = time.time()
    duck.execute(f"""
        CREATE TABLE transactions AS
        WITH t AS (
          SELECT *, row_number() OVER () AS pos
          FROM read_json('{history}', format = 'newline_delimited', ignore_errors = true,
                         columns = {{id: 'VARCHAR', customer: 'VARCHAR', amount: 'DECIMAL(18,2)',
                                    ts: 'TIMESTAMPTZ', category: 'VARCHAR', op: 'VARCHAR'}})),
        latest AS (
          SELECT * FROM t
          QUALIFY row_number() OVER (PARTITION BY coalesce(id, 'pos:' || pos) ORDER BY pos DESC) = 1)
        SELECT id, customer, amount, category, ts FROM latest
        WHERE coalesce(op, 'upsert') <> 'delete' AND customer IS NOT NULL AND customer <> ''
              AND amount IS NOT NULL""")
    duck.execute("CREATE TABLE customers AS SELECT customer, sum(amount) AS total, count(*) AS count "
                 "FROM transactions GROUP BY customer")
    loaded = duck.execute("SELECT count(*) FROM transactions").fetchone()[0]
    print(f"DuckDB {duckdb.__version__} loaded {loaded} live transactions in {time.time() - started:.1f} s "
          f"(threads = {threads})")
    pg = psycopg.connect(f"host=127.0.0.1 port={port} user=lambda dbname=lambda", autocommit=True)
    pg.execute("SET client_min_messages = warning")
    ours_count = pg.execute("SELECT count(*) FROM transactions").fetchone()[0]
    if ours_count != loaded:
        print(f"different rows: lambda has {ours_count}, DuckDB {loaded}")
        sys.exit(1)
    failed = False
    print("| query | lambda (runs) | DuckDB (runs) | ratio of medians |")
    print("|---|---|---|---|")
    for name, sql in QUERIES.items():
        ours, theirs, answers = [], [], {}
        for _ in range(runs):
            t = time.perf_counter()
            answers["lambda"] = rows(pg.execute(sql).fetchall())
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            answers["duckdb"] = rows(duck.execute(sql).fetchall())
            theirs.append(time.perf_counter() - t)
        if answers["lambda"] != answers["duckdb"]:
            failed = True
            print(f"DIFFERENT ANSWERS for {name}:\n  lambda {answers['lambda'][:5]}\n  duckdb {answers['duckdb'][:5]}")
        med = lambda xs: sorted(xs)[len(xs) // 2]
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
        print(f"| {name} | {fmt(ours)} s | {fmt(theirs)} s | {med(ours) / med(theirs):.2f}× |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
