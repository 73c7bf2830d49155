#!/usr/bin/env bash
# The documented soak run (issue 9, point 7): tests/soak.rs for SECS seconds
# (600 by default; the test suite runs it for 60), then a plot of the
# gateway's RSS, open fds and request rate over the run.
#
#   scripts/soak.sh                 # 10 minutes, plot to docs/soak.png
#   SECS=120 OUT=/tmp/soak.png scripts/soak.sh
#
# Needs gnuplot (apt-get install -y gnuplot-nox) for the plot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=${SECS:-600}
OUT=${OUT:-docs/soak.png}

command -v gnuplot >/dev/null ||
    { echo "soak: missing gnuplot (apt-get install -y gnuplot-nox)" >&2; exit 1; }

SWITCHYARD_SOAK_SECS=$SECS cargo test --test soak -- --nocapture 2>&1 | tee target/soak-run.log
csv=target/soak/soak.csv
summary=$(grep -m1 "^soak ${SECS}s:" target/soak-run.log || true)

gnuplot <<EOF
set terminal pngcairo size 1000,560 font "sans,10"
set output "$OUT"
set datafile separator ","
set key bottom right
set title "Soak, ${SECS} s: reload every 3 s, failing canary rolled back, stable endpoints restarting every 6 s"
set xlabel "seconds"
set ylabel "MiB / open fds"
set y2label "requests per second"
set yrange [0:*]
set y2range [0:*]
set ytics nomirror
set y2tics
set grid
prev = 0
rate(x) = (d = x - prev, prev = x, d)
plot "$csv" using 1:2 skip 1 with lines lw 2 title "gateway RSS (MiB)", \
     "$csv" using 1:3 skip 1 with lines lw 2 title "gateway open fds", \
     "$csv" using 1:(rate(\$4)) skip 1 axes x1y2 with lines lw 1 lc rgb "#999999" title "requests answered 200 per second"
EOF
echo "plot: $OUT"
echo "$summary"
