#!/usr/bin/env bash
# Benchmark runner: builds release, runs the benchmarks and writes
# BENCHMARKS.md with the machine and the date. Figures are never typed by
# hand; rerun this script to refresh them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-./target}/release/eddy"
out=BENCHMARKS.md
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
  echo "# eddy benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\`; do not edit by hand."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(nproc) cores, ${cpu}, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
  echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "## Log (\`eddy bench log\`)"
  echo
  "$bin" bench log --dir "${BENCH_DIR:-./eddy-bench-data}"
  echo
  echo "## W1: Kafka protocol with librdkafka (\`cargo bench --bench kafka_w1\`)"
  echo
  EDDY_BIN="$bin" cargo bench --quiet --bench kafka_w1
  echo
  echo "## W3: incremental group-by view against DuckDB recomputing (\`cargo bench --bench views_w3\`)"
  echo
  python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb >&2 || true
  echo "DuckDB $(python3 -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null || echo 'not installed') from PyPI."
  echo
  cargo bench --quiet --bench views_w3
  echo
  echo "## W6: freshness under a steady produce load (\`cargo bench --bench fresh_w6\`)"
  echo
  EDDY_BIN="$bin" cargo bench --quiet --bench fresh_w6
  echo
  echo "## W7: point lookups on a view against PostgreSQL (\`cargo bench --bench pull_w7\`)"
  echo
  echo "PostgreSQL $("${W7_PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" --version | awk '{print $3}') and pgbench from Debian."
  echo
  EDDY_BIN="$bin" cargo bench --quiet --bench pull_w7
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
