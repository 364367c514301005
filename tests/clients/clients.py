"""Real clients of a running `lambda run`, over the Postgres protocol: what each does when it
connects and browses, printed as one JSON object for the Rust test (tests/it/clients_e2e.rs)
to check.

    python3 clients.py <port>

- `catalog`: the queries Grafana, DBeaver and Metabase send when they connect and list
  tables and columns (catalog_queries.json, as datafusion-postgres's tests record them),
  each run over psycopg's extended protocol, as the tools' drivers do;
- `sqlalchemy`: `create_engine(...).connect()`, `inspect()`'s tables, views and columns;
- `pandas`: `read_sql` of a query and of a query with a bound parameter, and the dtypes;
- `psycopg`: typed parameters — text, binary, prepared — that are never spliced into text.
"""

import json
import os
import sys
from decimal import Decimal

import psycopg

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=lambda dbname=lambda"
out = {}

# The catalog queries of the BI tools.
queries = json.load(open(os.path.join(os.path.dirname(__file__), "catalog_queries.json")))
out["catalog"] = {}
for tool, statements in queries.items():
    results = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            try:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
                results.append({"ok": True, "rows": [[str(v) for v in r] for r in rows[:200]]})
            except psycopg.Error as e:
                results.append({"ok": False, "error": f"{e.sqlstate}: {e}", "statement": statement[:200]})
    out["catalog"][tool] = results

# SQLAlchemy, and pandas over it.
import pandas
import sqlalchemy


def sqlalchemy_and_pandas():
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://lambda@127.0.0.1:{port}/lambda")
    with engine.connect() as conn:
        version = conn.execute(sqlalchemy.text("SELECT version()")).scalar()
        inspector = sqlalchemy.inspect(conn)
        out["sqlalchemy"] = {
            "version": version,
            "tables": sorted(inspector.get_table_names()),
            "views": sorted(inspector.get_view_names()),
            "columns": [(c["name"], str(c["type"])) for c in inspector.get_columns("customers")],
        }
        # Decimals as Decimal (pandas makes floats of them unless told not to).
        frame = pandas.read_sql("SELECT customer, total, count FROM customers ORDER BY customer", conn, coerce_float=False)
        one = pandas.read_sql(
            sqlalchemy.text("SELECT customer, total FROM customers WHERE customer = :name"), conn, params={"name": "Ali"}
        )
        out["pandas"] = {
            "columns": list(frame.columns),
            "dtypes": [str(t) for t in frame.dtypes],
            "rows": [[str(v) for v in r] for r in frame.itertuples(index=False)],
            "total_is_decimal": all(isinstance(v, Decimal) for v in frame["total"]),
            "one": [[str(v) for v in r] for r in one.itertuples(index=False)],
        }


def section(name, run):
    try:
        run()
    except Exception as e:  # the test prints what failed
        out[name] = {"failed": f"{type(e).__name__}: {e}"}


section("sqlalchemy", sqlalchemy_and_pandas)

# psycopg's typed parameters: a text parameter that looks like a number stays text, a negative
# number is not a comment, binary and prepared parameters, NaN and infinity refused for money.
def typed_parameters():
    with psycopg.connect(dsn, autocommit=True) as conn:
        p = {}
        p["text_number"] = conn.execute("SELECT count(*) FROM customers WHERE customer = %s", ("1001",)).fetchone()[0]
        p["negative"] = str(conn.execute("SELECT 200 - %s", (-100,)).fetchone()[0])
        p["binary"] = [
            [str(v) for v in r]
            for r in conn.execute("SELECT customer, total FROM customers WHERE total > %b ORDER BY 1", (Decimal("100"),), binary=True)
        ]
        p["prepared"] = [
            str(conn.execute("SELECT count(*) FROM transactions WHERE customer = %s", (name,), prepare=True).fetchone()[0])
            for name in ["Ali", "Sara", "Nobody"]
        ]
        p["injection"] = conn.execute("SELECT count(*) FROM customers WHERE customer = %s", ("x' OR '1'='1",)).fetchone()[0]
        for name, value in [("nan", float("nan")), ("inf", float("inf"))]:
            try:
                row = conn.execute("SELECT count(*) FROM transactions WHERE amount > %s", (value,)).fetchone()
                p[name] = f"answered {row[0]}"
            except psycopg.Error as e:
                p[name] = f"error {e.sqlstate}"
        out["psycopg"] = p


section("psycopg", typed_parameters)
print(json.dumps(out))
