#!/usr/bin/env bash
# The project's benchmark: fanfold against DuckDB and Polars on the same
# files, the same group-by with CSV output, in the same run.
#
# Each peer runs the way its documentation shows the job, its fastest
# configuration (bench/peers.py "fast": no ORDER BY, Polars streaming into
# sink_csv, DuckDB COPY with typed columns and every thread); fanfold runs
# `fanfold run` with its defaults. Runs alternate tool by tool, RUNS times
# (default 3); the table shows medians of wall time and peak RSS and the
# ratio to the faster peer's median. Then each peer runs once more sorted by
# the group key ("sorted") and its output is compared with fanfold's: byte
# for byte where the aggregates are integer sums, value by value (means to
# 1e-9) for the catalogue.
#
# Profiles (fanfold gen): bmat, zipf, zipf-long (longer keys, more songs,
# another popularity curve), catalogue (12 columns, group by two, sum, mean,
# min, max and count, a where filter: bench/specs/catalogue.json).
#
# SCALING=1 also runs each tool once on one thread (fanfold --workers 1,
# DuckDB SET threads = 1, POLARS_MAX_THREADS=1) and prints the speedups.
#
# Usage: bench/run.sh [SIZE] [PROFILE...]    (default 1GB, every profile)
set -euo pipefail
cd "$(dirname "$0")"
size="${1:-1GB}"; shift || true
profiles=("$@"); [ ${#profiles[@]} -gt 0 ] || profiles=(bmat zipf zipf-long catalogue)
runs="${RUNS:-3}"
here=$(pwd)

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import duckdb, polars" 2>/dev/null || .venv/bin/pip install -q "duckdb==2.0.0" "polars==2.1.0"
(cd .. && cargo build --release -q -p fanfold)
bin="${CARGO_TARGET_DIR:-$here/../target}/release/fanfold"
mkdir -p data out

measure() { # name, command...: prints "seconds peak_kb"
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "out/$name.time" "$@" > "out/$name.log" 2>&1 || { echo "$name failed:" >&2; cat "out/$name.log" >&2; exit 1; }
  tail -1 "out/$name.time"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-10s %-8s %-7s %9s %10s %s\n' file tool variant "wall s" "peak RSS" "ratio to faster peer (fast)"
for profile in "${profiles[@]}"; do
  csv="data/$profile-$size.csv"
  [ -f "$csv" ] || "$bin" gen --profile "$profile" --size "$size" -o "$csv" --seed 42 2>/dev/null
  spec=(); [ -f "specs/$profile.json" ] && spec=(--spec "specs/$profile.json")
  cat "$csv" > /dev/null # warm the page cache for every tool alike
  declare -A secs=() kbs=()
  for i in $(seq 1 "$runs"); do
    rm -rf "out/fanfold-$profile"
    read -r s kb < <(measure "fanfold-$profile" "$bin" run "$csv" "${spec[@]}" --out "out/fanfold-$profile")
    secs[fanfold]+="$s "; kbs[fanfold]+="$kb "
    for peer in duckdb polars; do
      read -r s kb < <(measure "$peer-$profile" .venv/bin/python peers.py "$peer" fast "$profile" "$csv" "out/$peer-$profile.csv")
      secs[$peer]+="$s "; kbs[$peer]+="$kb "
    done
  done
  for peer in duckdb polars; do
    read -r s kb < <(measure "$peer-$profile-sorted" .venv/bin/python peers.py "$peer" sorted "$profile" "$csv" "out/$peer-$profile-sorted.csv")
    secs[$peer-sorted]="$s"; kbs[$peer-sorted]="$kb"
  done
  # shellcheck disable=SC2086
  best=$(python3 -c "print(min($(median ${secs[duckdb]}), $(median ${secs[polars]})))")
  for row in fanfold:fast duckdb:fast polars:fast duckdb-sorted:sorted polars-sorted:sorted; do
    tool=${row%%:*}; variant=${row#*:}
    # shellcheck disable=SC2086
    s=$(median ${secs[$tool]}); kb=$(median ${kbs[$tool]})
    printf '%-10s %-8s %-7s %9.2f %7d MB %s\n' "$profile" "${tool%-sorted}" "$variant" "$s" $(( kb / 1024 )) \
      "$(python3 -c "print(f'{$s / $best:.2f}')")"
  done
  if [ "${SCALING:-0}" = 1 ]; then
    # One thread each, once: the speedup to the medians above (2 threads here).
    read -r f1 _ < <(measure "fanfold-$profile-1" "$bin" run "$csv" "${spec[@]}" --workers 1 --out "out/fanfold-$profile-1")
    read -r d1 _ < <(THREADS=1 measure "duckdb-$profile-1" .venv/bin/python peers.py duckdb fast "$profile" "$csv" "out/duckdb-$profile-1.csv")
    read -r p1 _ < <(POLARS_MAX_THREADS=1 measure "polars-$profile-1" .venv/bin/python peers.py polars fast "$profile" "$csv" "out/polars-$profile-1.csv")
    rm -rf "out/fanfold-$profile-1"
    # shellcheck disable=SC2086
    python3 -c "
f2, d2, p2 = $(median ${secs[fanfold]}), $(median ${secs[duckdb]}), $(median ${secs[polars]})
print(f'{\"$profile\":10} one thread: fanfold {$f1:.2f} s (x{$f1 / f2:.2f} with 2), DuckDB {$d1:.2f} s (x{$d1 / d2:.2f}), Polars {$p1:.2f} s (x{$p1 / p2:.2f})')"
  fi
  unset secs kbs
  # Same result? Our parts joined (one header) against each peer's sorted file.
  python3 - "$profile" <<'PY'
import csv, glob, io, sys
from decimal import Decimal
p = sys.argv[1]
parts = sorted(glob.glob(f"out/fanfold-{p}/part-*.csv"))
ours = bytearray()
for i, f in enumerate(parts):
    b = open(f, "rb").read()
    ours += b if i == 0 else b[b.index(b"\n") + 1:]
def rows(b):
    return list(csv.reader(io.StringIO(b.decode())))
for peer in ("duckdb", "polars"):
    theirs = open(f"out/{peer}-{p}-sorted.csv", "rb").read()
    if p != "catalogue":
        same = "yes (bytes)" if theirs == bytes(ours) else "NO"
    else:
        a, b = rows(bytes(ours)), rows(theirs)
        ok = len(a) == len(b) and a[0] == b[0]
        for x, y in zip(a[1:], b[1:]):
            if not ok:
                break
            ok = x[:2] == y[:2] and all(abs(Decimal(u) - Decimal(v)) <= Decimal("1e-9") * max(1, abs(Decimal(u)))
                                        for u, v in zip(x[2:], y[2:]))
        same = "yes (values)" if ok else "NO"
    print(f"{p:10} results identical to {peer}: {same}")
PY
done
