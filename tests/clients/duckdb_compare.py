"""The everyday queries of a new user, answered by the live pipeline over the Postgres protocol
and by DuckDB over the same live rows.

  python3 duckdb_compare.py PG_PORT

Reads the live `transactions` once (psycopg), loads them into an in-memory DuckDB, where
`customers` is DuckDB's own GROUP BY of them, then asks both every query below and compares
the answers as multisets of rows (money as exact decimals, times in UTC). Prints one line per
query and `N of N agree` last; exits 1 on any difference.
"""
import datetime
import decimal
import sys

import duckdb
import psycopg

QUERIES = {
    "join": "SELECT c.customer, c.total, t.category, count(*) AS n FROM customers c "
            "JOIN transactions t ON c.customer = t.customer GROUP BY c.customer, c.total, t.category",
    "left join": "SELECT c.customer, t.id FROM customers c LEFT JOIN transactions t "
                 "ON t.customer = c.customer AND t.amount > 400",
    "cte": "WITH big AS (SELECT customer, sum(amount) AS s FROM transactions GROUP BY customer) "
           "SELECT customer, s FROM big WHERE s > (SELECT avg(s) FROM big)",
    "scalar subquery": "SELECT id, amount - (SELECT max(amount) FROM transactions) AS below FROM transactions",
    "in subquery": "SELECT customer, total FROM customers WHERE customer IN "
                   "(SELECT customer FROM transactions WHERE category = 'books')",
    "exists subquery": "SELECT id FROM transactions t WHERE EXISTS (SELECT 1 FROM transactions u "
                       "WHERE u.customer = t.customer AND u.amount > t.amount)",
    "count distinct": "SELECT category, count(DISTINCT customer) AS who FROM transactions GROUP BY category",
    "case": "SELECT id, CASE WHEN amount >= 100 THEN 'big' WHEN amount >= 10 THEN 'mid' ELSE 'small' END AS size "
            "FROM transactions",
    "union": "SELECT customer FROM transactions WHERE amount < 20 UNION SELECT customer FROM customers WHERE count > 3",
    "union all, except": "SELECT category FROM transactions UNION ALL "
                         "(SELECT customer FROM customers EXCEPT SELECT customer FROM transactions WHERE amount > 450)",
    "window": "SELECT id, customer, row_number() OVER (PARTITION BY customer ORDER BY amount DESC, id) AS rn "
              "FROM transactions",
    "running sum": "SELECT id, sum(amount) OVER (PARTITION BY customer ORDER BY id) AS running, "
                   "rank() OVER (ORDER BY amount) AS r FROM transactions",
    "filter": "SELECT customer, sum(amount) FILTER (WHERE category = 'food') AS food, count(*) FILTER "
              "(WHERE amount > 100) AS big FROM transactions GROUP BY customer",
    "upper": "SELECT upper(customer) AS who, length(customer) AS len FROM customers",
    "cast": "SELECT customer, CAST(count AS VARCHAR) || ' orders' AS said FROM customers",
    "self join": "SELECT a.id, b.id FROM transactions a JOIN transactions b "
                 "ON a.customer = b.customer AND a.id < b.id AND a.category = b.category",
    "date_trunc": "SELECT date_trunc('hour', ts) AS h, count(*) AS n, sum(amount) AS s FROM transactions "
                  "WHERE ts IS NOT NULL GROUP BY 1",
    "having, order, limit": "SELECT customer, sum(amount) AS s FROM transactions GROUP BY customer "
                            "HAVING count(*) > 1 ORDER BY s DESC, customer LIMIT 3",
}


def value(v):
    """One cell, comparable across the two engines."""
    if isinstance(v, decimal.Decimal):
        return "n:" + format(v.normalize(), "f")
    if isinstance(v, bool):
        return "b:" + str(v)
    if isinstance(v, int):
        return "n:" + str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return "t:" + v.astimezone(datetime.timezone.utc).isoformat()
    return repr(v)


def answer(rows):
    return sorted(tuple(value(v) for v in row) for row in rows)


def main():
    port = sys.argv[1]
    pg = psycopg.connect(f"host=127.0.0.1 port={port} user=lambda dbname=lambda", autocommit=True)
    pg.execute("SET client_min_messages = warning")
    live = pg.execute("SELECT id, customer, amount, category, ts FROM transactions").fetchall()
    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    duck.execute("CREATE TABLE transactions (id VARCHAR, customer VARCHAR, amount DECIMAL(38, 2), "
                 "category VARCHAR, ts TIMESTAMPTZ)")
    duck.executemany("INSERT INTO transactions VALUES (?, ?, ?, ?, ?)", [list(r) for r in live])
    duck.execute("CREATE VIEW customers AS SELECT customer, sum(amount) AS total, count(*) AS count, "
                 "min(amount) AS min, max(amount) AS max FROM transactions GROUP BY customer")
    agree = 0
    for name, sql in QUERIES.items():
        ours = answer(pg.execute(sql).fetchall())
        theirs = answer(duck.execute(sql).fetchall())
        if ours == theirs:
            agree += 1
            print(f"agree: {name} ({len(ours)} rows)")
        else:
            print(f"DIFFER: {name}\n  sql: {sql}\n  ours:   {ours[:8]}\n  duckdb: {theirs[:8]}")
    print(f"{agree} of {len(QUERIES)} agree over {len(live)} live transactions")
    sys.exit(0 if agree == len(QUERIES) else 1)


if __name__ == "__main__":
    main()
