"""Runs a profile's group-by in DuckDB or Polars with CSV output.

usage: peers.py duckdb|polars fast|sorted PROFILE INPUT.csv OUTPUT.csv

`fast` is how each tool's documentation shows the job, its fastest way:
DuckDB's COPY (SELECT ... GROUP BY ALL) TO with the column types given and
all threads, Polars' lazy scan_csv(...).group_by(...).agg(...).sink_csv(...)
(the streaming engine). `sorted` adds ORDER BY the group key (Polars then
collects in memory and writes), so the output can be compared byte for
byte with fanfold's, which is always in key order.

THREADS=N limits DuckDB to N threads (Polars: set POLARS_MAX_THREADS=N).
"""
import os
import sys

engine, variant, profile, src, dst = sys.argv[1:6]
sort = variant == "sorted"

if profile == "catalogue":
    keys = ["category", "brand"]
    duck_types = ("{'sku': 'VARCHAR', 'category': 'VARCHAR', 'brand': 'VARCHAR', 'name': 'VARCHAR', "
                  "'color': 'VARCHAR', 'size': 'VARCHAR', 'price': 'DECIMAL(10,2)', 'cost': 'DECIMAL(10,2)', "
                  "'stock': 'BIGINT', 'weight_kg': 'DOUBLE', 'rating': 'DOUBLE', 'updated': 'VARCHAR'}")
    duck_select = ('"category", "brand", SUM("stock") AS "stock", AVG("price") AS "mean_price", '
                   'MIN("price") AS "min_price", MAX("price") AS "max_price", COUNT(*) AS "products"')
    duck_where = 'WHERE "rating" >= 2.5'
else:
    keys = ["Song", "Date"]
    duck_types = "{'Song': 'VARCHAR', 'Date': 'VARCHAR', 'Number of Plays': 'BIGINT'}"
    duck_select = '"Song", "Date", SUM("Number of Plays") AS "Total Number of Plays for Date"'
    duck_where = ""

if engine == "duckdb":
    import duckdb

    con = duckdb.connect()
    if os.environ.get("THREADS"):
        con.execute(f"SET threads = {int(os.environ['THREADS'])}")
    order = "ORDER BY ALL" if sort else ""
    con.execute(
        f"""COPY (
            SELECT {duck_select}
            FROM read_csv('{src}', header = true, columns = {duck_types})
            {duck_where}
            GROUP BY ALL {order}
        ) TO '{dst}' (HEADER, DELIMITER ',')"""
    )
elif engine == "polars":
    import polars as pl

    if profile == "catalogue":
        schema = {"sku": pl.Utf8, "category": pl.Utf8, "brand": pl.Utf8, "name": pl.Utf8, "color": pl.Utf8,
                  "size": pl.Utf8, "price": pl.Decimal(10, 2), "cost": pl.Decimal(10, 2), "stock": pl.Int64,
                  "weight_kg": pl.Float64, "rating": pl.Float64, "updated": pl.Utf8}
        q = (pl.scan_csv(src, schema=schema)
             .filter(pl.col("rating") >= 2.5)
             .group_by(keys)
             .agg(pl.col("stock").sum().alias("stock"),
                  pl.col("price").cast(pl.Float64).mean().alias("mean_price"),
                  pl.col("price").min().alias("min_price"),
                  pl.col("price").max().alias("max_price"),
                  pl.len().alias("products")))
    else:
        schema = {"Song": pl.Utf8, "Date": pl.Utf8, "Number of Plays": pl.Int64}
        q = (pl.scan_csv(src, schema=schema)
             .group_by(keys)
             .agg(pl.col("Number of Plays").sum().alias("Total Number of Plays for Date")))
    if sort:
        q.sort(keys).collect().write_csv(dst)
    else:
        q.sink_csv(dst)
else:
    sys.exit(f"unknown engine {engine}")
