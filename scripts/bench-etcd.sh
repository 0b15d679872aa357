#!/usr/bin/env bash
# RunTask (count 1) calls per second beside etcd 3.4 puts per second, on this machine, in
# this script: a three-member etcd on loopback (Debian's etcd-server, installed when
# missing) and Berth's three-node bench cluster, each driven by `berth bench` with the
# same callers over the same number of connections, one after the other so they never
# share the cores. Then RunTask count 10 from 256 callers, the throughput bar.
# Usage: scripts/bench-etcd.sh [rounds (default 3)] [seconds per run (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
clients=64
conns=64
dir=target/bench-etcd

if ! command -v etcd >/dev/null; then
  echo "installing etcd-server from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting its own member on 2379.
  apt-get install -y -qq --no-install-recommends etcd-server
fi
etcd --version | head -1
berth=target/release/berth
[[ -x $berth ]] || cargo build --release -p berth --locked

pids=()
stop_etcd() {
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  pids=()
}
trap stop_etcd EXIT

start_etcd() {
  rm -rf "$dir" && mkdir -p "$dir"
  local cluster="" i
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:2380$i"; done
  for i in 1 2 3; do
    # fsync on every WAL append is etcd's default, as it is Berth's.
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" \
      --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" \
      --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token berth-bench --log-level error \
      >"$dir/e$i.log" 2>&1 &
    pids+=($!)
  done
}

etcd_rates=()
berth_rates=()
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds"
  start_etcd
  out=$($berth bench etcd --endpoints http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793 \
    --clients $clients --conns $conns --seconds "$seconds")
  echo "$out"
  stop_etcd
  etcd_rates+=("$(sed -n 's/.*(\([0-9]*\) puts\/s).*/\1/p' <<<"$out")")
  out=$($berth bench --dir target/bench-cluster throughput --clients $clients --conns $conns --count 1 --seconds "$seconds")
  echo "$out"
  berth_rates+=("$(sed -n 's/.*(\([0-9]*\) calls\/s).*/\1/p' <<<"$out")")
done
echo "== RunTask count 10, 256 callers (the ≥ 10,000 tasks/s bar)"
$berth bench --dir target/bench-cluster throughput --clients 256 --count 10 --seconds "$seconds"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
e=$(median "${etcd_rates[@]}")
b=$(median "${berth_rates[@]}")
echo "== summary over $rounds rounds: etcd puts/s ${etcd_rates[*]} (median $e); Berth RunTask count 1 calls/s ${berth_rates[*]} (median $b)"
awk -v b="$b" -v e="$e" 'BEGIN { r = b / e; printf "   ratio %.2f (bar: ≥ 2.00) — %s\n", r, (r >= 2 ? "met" : "not met") }'
