#!/usr/bin/env bash
# The project's benchmark: fanfold against DuckDB and Polars on the same
# 1 GB files, the same group-by (BMAT: sum plays by song and day, sorted)
# with CSV output, in the same run. Prints wall time, peak RSS and the
# ratio to the faster peer, and checks the three results are identical.
#
# Usage: bench/run.sh [SIZE]    (default 1GB)
set -euo pipefail
cd "$(dirname "$0")"
size="${1:-1GB}"
here=$(pwd)

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import duckdb, polars" 2>/dev/null || .venv/bin/pip install -q "duckdb==2.0.0" "polars==2.1.0"
(cd .. && cargo build --release -q -p fanfold)
bin="$here/../target/release/fanfold"
mkdir -p data out

measure() { # name, command...: prints "seconds peak_kb"
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "out/$name.time" "$@" > "out/$name.log" 2>&1 || { echo "$name failed:" >&2; cat "out/$name.log" >&2; exit 1; }
  cat "out/$name.time" | tail -1
}

printf '%-6s %-8s %9s %10s %s\n' file tool "wall s" "peak RSS" "ratio to faster peer"
for profile in bmat zipf; do
  csv="data/$profile-$size.csv"
  [ -f "$csv" ] || "$bin" gen --profile "$profile" --size "$size" -o "$csv" --seed 42 2>/dev/null
  cat "$csv" > /dev/null # warm the page cache for every tool alike
  read -r ff_s ff_kb < <(measure "fanfold-$profile" "$bin" run "$csv" --out "out/fanfold-$profile")
  read -r dk_s dk_kb < <(measure "duckdb-$profile" .venv/bin/python peers.py duckdb "$csv" "out/duckdb-$profile.csv")
  read -r pl_s pl_kb < <(measure "polars-$profile" .venv/bin/python peers.py polars "$csv" "out/polars-$profile.csv")
  best=$(python3 -c "print(min($dk_s, $pl_s))")
  for row in "fanfold $ff_s $ff_kb" "duckdb $dk_s $dk_kb" "polars $pl_s $pl_kb"; do
    set -- $row
    printf '%-6s %-8s %9.2f %7d MB %s\n' "$profile" "$1" "$2" $(( $3 / 1024 )) "$(python3 -c "print(f'{$2 / $best:.2f}')")"
  done
  # Same result? Our parts joined (one header) against each peer's file.
  python3 - "$profile" <<'PY'
import glob, sys
p = sys.argv[1]
parts = sorted(glob.glob(f"out/fanfold-{p}/part-*.csv"))
ours = bytearray()
for i, f in enumerate(parts):
    b = open(f, "rb").read()
    ours += b if i == 0 else b[b.index(b"\n") + 1:]
for peer in ("duckdb", "polars"):
    same = open(f"out/{peer}-{p}.csv", "rb").read() == bytes(ours)
    print(f"{p:6} results identical to {peer}: {'yes' if same else 'NO'}")
PY
done
