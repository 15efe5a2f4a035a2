#!/usr/bin/env bash
# Benchmark runner: builds release, runs the named benchmark sections (all
# when none is named: log w1 w3 w4 w6 w7 wf et) and writes each section's figures,
# with the machine, the date and the commit it ran on, to
# benches/results/<section>.md; BENCHMARKS.md is those files put together.
# Figures are never typed by hand; rerun this script to refresh them.
#
#   scripts/bench.sh            # every section (about 30 minutes on 2 cores)
#   scripts/bench.sh w6 w7      # only these; the others keep their last run
set -euo pipefail
cd "$(dirname "$0")/.."
all=(log w1 w3 w4 w6 w7 wf et)
if [ "$#" -gt 0 ]; then sections=("$@"); else sections=("${all[@]}"); fi
# The server binary and the benchmark runners in one build: built apart, the
# binary would get a feature set of its own (no dev-dependencies unified
# in) and recompile DataFusion for it.
cargo build --release --quiet --bin eddy --benches
bin="${CARGO_TARGET_DIR:-./target}/release/eddy"
results=benches/results
mkdir -p "$results"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')

title() {
  case "$1" in
    log) echo "Log (\`eddy bench log\`)" ;;
    w1) echo "W1: Kafka protocol with librdkafka (\`cargo bench --bench kafka_w1\`)" ;;
    w3) echo "W3: incremental group-by view against DuckDB recomputing (\`cargo bench --bench views_w3\`)" ;;
    w4) echo "W4: Nexmark q5, a sliding-window view (\`cargo bench --bench nexmark_w4\`)" ;;
    w6) echo "W6: freshness under a steady produce load (\`cargo bench --bench fresh_w6\`)" ;;
    w7) echo "W7: point lookups on a view against PostgreSQL (\`cargo bench --bench pull_w7\`)" ;;
    wf) echo "Window functions in a view: work per change against partitions (\`cargo bench --bench windows_wf\`)" ;;
    et) echo "Event time: a windowed view over 100 M events keeps bounded state (\`cargo bench --bench event_time_long\`)" ;;
    *) echo "unknown section $1 (sections: ${all[*]})" >&2; exit 2 ;;
  esac
}

run() {
  case "$1" in
    log) "$bin" bench log --dir "${BENCH_DIR:-./eddy-bench-data}" ;;
    w1) EDDY_BIN="$bin" cargo bench --quiet --bench kafka_w1 ;;
    w3)
      python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb >&2 || true
      echo "DuckDB $(python3 -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null || echo 'not installed') from PyPI."
      echo
      cargo bench --quiet --bench views_w3
      ;;
    w4) cargo bench --quiet --bench nexmark_w4 ;;
    wf) cargo bench --quiet --bench windows_wf ;;
    et) cargo bench --quiet --bench event_time_long ;;
    w6) EDDY_BIN="$bin" cargo bench --quiet --bench fresh_w6 ;;
    w7)
      echo "PostgreSQL $("${W7_PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" --version | awk '{print $3}') and pgbench from Debian."
      echo
      EDDY_BIN="$bin" cargo bench --quiet --bench pull_w7
      ;;
  esac
}

for s in "${sections[@]}"; do
  t=$(title "$s")
  {
    echo "## $t"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) cores, ${cpu}, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
    echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    run "$s"
  } > "$results/$s.md.tmp"
  mv "$results/$s.md.tmp" "$results/$s.md"
done

out=BENCHMARKS.md
{
  echo "# eddy benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\` from \`benches/results/\`; do not edit by hand."
  echo "Each section says when, where and at which commit it ran; ratios are"
  echo "only taken between figures of one section's run."
  for s in "${all[@]}"; do
    if [ -f "$results/$s.md" ]; then
      echo
      cat "$results/$s.md"
    fi
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
