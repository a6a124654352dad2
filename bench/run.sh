#!/usr/bin/env bash
# Throughput of marathon-dns against Knot DNS serving the same zone, measured with dnsperf in
# one invocation on the same machine, so the ratio means something on a noisy host.
#
#   bench/run.sh [seconds] [clients]      (needs: dnsperf knot; apt-get install dnsperf knot)
#
# It starts `marathon-dns dev` (simulated Marathon, release build), exports its zone, loads the
# export into knotd, builds a query mix from the zone (SRV with glue, A, AAAA/NODATA,
# NXDOMAIN) and runs dnsperf against both, one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
clients=${2:-4}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

for tool in dnsperf knotd; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "missing $tool (apt-get install dnsperf knot)"; exit 1; }
done
knotd=$(command -v knotd || echo /usr/sbin/knotd)

cargo build --release --locked -q
bin=target/release/marathon-dns

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ours=$(port); theirs=$(port)

"$bin" dev --listen "127.0.0.1:$ours" --churn 1h > "$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "simulated Marathon at" "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
sim=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/dev.out" | head -1)
"$bin" export --marathon "$sim" > "$work/marathon.local.zone" 2>/dev/null

mkdir -p "$work/knot/db" "$work/knot/run"
cat > "$work/knot.conf" <<CONF
server:
  rundir: "$work/knot/run"
  listen: 127.0.0.1@$theirs
  udp-max-payload: 4096
control:
  listen: "$work/knot/run/knot.sock"
database:
  storage: "$work/knot/db"
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: "$work"
    file: "%s.zone"
    zonefile-load: whole
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: marathon.local
CONF
"$knotd" -c "$work/knot.conf" 2>"$work/knot.err" &
pids+=($!)
sleep 1

# Query mix from the zone itself.
awk '$4=="SRV"{print $1" SRV"} $4=="A"{print $1" A"}' "$work/marathon.local.zone" | sort -u > "$work/q"
awk '$4=="A"{print $1" AAAA"}' "$work/marathon.local.zone" | sort -u | head -20 >> "$work/q"
for i in $(seq 20); do echo "nx$i.marathon.local. A" >> "$work/q"; done

run() {
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/q" -l "$secs" -c "$clients" -e -b 4096 2>&1 \
    | awk '/Queries per second/{print $4}'
}
echo "query mix: $(wc -l < "$work/q") queries (SRV+glue, A, AAAA/NODATA, NXDOMAIN), ${secs}s each, $clients clients, EDNS 4096"
q_ours=$(run "$ours")
q_knot=$(run "$theirs")
printf '%-14s %12s qps\n' "marathon-dns" "$q_ours" "knot $(knotd -V 2>/dev/null | awk '{print $NF}')" "$q_knot"
python3 -c "print(f'ratio marathon-dns/knot: {float(\"$q_ours\")/float(\"$q_knot\"):.2f}')"
