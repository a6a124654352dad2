#!/usr/bin/env bash
# Freshness and footprint at scale against Knot DNS on the same records, in one run.
#
#   bench/run.sh [--apps N] [--tasks N] [--seconds S] [--samples N] [--churn-rate R] [--churn-seconds S]
#
# Defaults: 10,000 apps × 3 tasks, dnsperf 10 s per server, 200 event samples, churn of 200
# events/s for 10 s. Needs the Debian packages dnsperf, knot and util-linux (taskset).
# See bench/scale.rs for what is measured and how.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in dnsperf knotd taskset; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "missing $tool (apt-get install dnsperf knot util-linux)"; exit 1; }
done
cargo build --release --locked -q
exec cargo bench --locked -q --bench scale -- "$@"
