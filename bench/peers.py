"""Runs the BMAT group-by in DuckDB or Polars with CSV output, sorted like fanfold's.

usage: peers.py duckdb|polars INPUT.csv OUTPUT.csv
"""
import sys

engine, src, dst = sys.argv[1:4]
if engine == "duckdb":
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"""COPY (
            SELECT "Song", "Date", SUM("Number of Plays") AS "Total Number of Plays for Date"
            FROM read_csv('{src}', header = true,
                          columns = {{'Song': 'VARCHAR', 'Date': 'VARCHAR', 'Number of Plays': 'BIGINT'}})
            GROUP BY ALL ORDER BY ALL
        ) TO '{dst}' (HEADER, DELIMITER ',')"""
    )
elif engine == "polars":
    import polars as pl

    (
        pl.scan_csv(src, schema={"Song": pl.Utf8, "Date": pl.Utf8, "Number of Plays": pl.Int64})
        .group_by(["Song", "Date"])
        .agg(pl.col("Number of Plays").sum().alias("Total Number of Plays for Date"))
        .sort(["Song", "Date"])
        .collect()
        .write_csv(dst)
    )
else:
    sys.exit(f"unknown engine {engine}")
