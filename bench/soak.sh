#!/usr/bin/env bash
# Soak: churn + query load + dropped event streams against the release binary; prints RSS, open
# file descriptors and threads at start and end (they must be flat) and exits 1 if they are not.
#
#   BENCH_WRAP="heaptrack -o /tmp/h" profiles the server (its RSS figures are then the wrapper's).
#   bench/soak.sh [--minutes 10] [--apps 1000] [--qps 2000] [--churn-rate 50] [--drop-every 30]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
exec cargo bench --locked -q --bench soak -- "$@"
