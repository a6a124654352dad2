#!/usr/bin/env bash
# A long generator-based fuzzing run (tests/fuzz.rs, tests/sse_framing.rs) in release mode:
#
#   bench/fuzz.sh [ITERATIONS]     # default 200000; MARATHON_DNS_FUZZ_SEED=N repeats a run
#
# Stable Rust has no coverage-guided fuzzing (cargo-fuzz needs nightly): the generators mutate
# valid DNS queries and the real Marathon fixtures, and send random bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
export MARATHON_DNS_FUZZ_ITERATIONS="${1:-200000}"
exec cargo test --release --locked --test fuzz --test sse_framing -- --nocapture
