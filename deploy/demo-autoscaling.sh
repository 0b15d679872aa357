#!/usr/bin/env bash
# Autoscaling on the compose cluster, with real load: a service of web servers whose every
# request burns CPU (berth/workload's berth-cpu-server), a load generator on this host sending
# a steady request rate to whichever of its tasks are RUNNING, and a target-tracking policy on
# CPU. The service must scale out within its scale-out cooldown of the load starting, spread
# the load over more tasks, and scale back in to its minimum once the load stops. Exits 0 when
# it did, 1 when it did not (with the service's events), 2 when the demo could not be run.
#
# Usage: deploy/demo-autoscaling.sh [--no-build] [--keep] [--rate R] [--load-secs S]
#   --no-build     use the release binary already built (or $BERTH_BIN)
#   --keep         leave the cluster up afterwards (default: deploy/down.sh --wipe)
#   --rate R       requests per second while loaded (default 6: about half a vCPU of work)
#   --load-secs S  how long the load lasts (default 90)
# The agents measure every 2 s and report 10 s windows (BERTH_AGENT_STATS_INTERVAL_MS,
# BERTH_AGENT_UTILIZATION_WINDOW_MS; a minute by default) and the policy's cooldowns are 30 s
# instead of ECS's 5 minutes, so the demo takes about three minutes, not half an hour.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=(); KEEP=0; RATE=6; LOAD_SECS=90
while (($#)); do
  case "$1" in
    --no-build) BUILD=(--no-build) ;;
    --keep) KEEP=1 ;;
    --rate) RATE=${2:?--rate needs requests per second}; shift ;;
    --load-secs) LOAD_SECS=${2:?--load-secs needs seconds}; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "demo-autoscaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $RATE =~ ^[1-9][0-9]*$ && $LOAD_SECS =~ ^[1-9][0-9]*$ ]] \
  || { echo "demo-autoscaling.sh: --rate and --load-secs take whole numbers above 0" >&2; exit 2; }
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "demo-autoscaling.sh: $tool not found" >&2; exit 2; }
done

SERVICE=cpu-demo
COOLDOWN=30
WINDOW_MS=10000
# The first decision needs one full window of load, and may see it only at the end of the
# window after the one the load began in.
SCALE_OUT_WITHIN=$COOLDOWN
SCALE_IN_WITHIN=$(( COOLDOWN + 3 * WINDOW_MS / 1000 ))

t0=$(date +%s)
say() { printf '== %s (+%ss)\n' "$1" "$(( $(date +%s) - t0 ))"; }
fail() { echo "demo-autoscaling.sh: FAILED: $*" >&2; show; exit 1; }

export BERTH_AGENT_STATS_INTERVAL_MS=2000 BERTH_AGENT_UTILIZATION_WINDOW_MS=$WINDOW_MS
deploy/up.sh "${BUILD[@]}" || { echo "demo-autoscaling.sh: the cluster did not come up" >&2; exit 2; }
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-target}/release/berth}
export BERTH_ENDPOINT=127.0.0.1:17400,127.0.0.1:17401,127.0.0.1:17402
export BERTH_TLS_CA=${BERTH_TLS_HOST_DIR:-$PWD/deploy/.tls}/ca.pem
export BERTH_TOKEN_FILE=${BERTH_TLS_HOST_DIR:-$PWD/deploy/.tls}/admin.token
WORK=$(mktemp -d)
LOAD_PID=""
cleanup() {
  [[ -z $LOAD_PID ]] || { touch "$WORK/stop"; wait "$LOAD_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
  if ((KEEP)); then
    echo "demo-autoscaling.sh: the cluster is still up (deploy/down.sh --wipe removes it)"
  else
    deploy/down.sh --wipe >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

show() {
  echo "---- berth service describe $SERVICE"
  "$BERTH" service describe "$SERVICE" || true
  echo "---- berth top --once"
  "$BERTH" top --once || true
}

json() { "$BERTH" -o json "$@"; }
# `service describe -o json`: {"service": {...}, "tasks": [the service's tasks]}.
desired() {
  json service describe "$SERVICE" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["service"].get("desiredCount", 0))'
}
running_ports() {
  json service describe "$SERVICE" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tasks"]:
    if t.get("lastStatus") != "RUNNING":
        continue
    for c in t.get("containers", []):
        for b in c.get("networkBindings", []):
            print(b["hostPort"])'
}

say "the service: one task of 0.25 vCPU serving CPU-bound requests"
cat >"$WORK/cpu-demo.yaml" <<'YAML'
family: cpu-demo
cpu: 256
memory: 512
containerDefinitions:
  - name: web
    image: berth/workload
    command: ["berth-cpu-server", "8080"]
    portMappings:
      - {containerPort: 8080}
    stopTimeout: 2
YAML
"$BERTH" taskdef register "$WORK/cpu-demo.yaml"
"$BERTH" service create "$SERVICE" --taskdef "$SERVICE" --desired 1 --wait
"$BERTH" service autoscale "$SERVICE" --cpu-target 50 --min 1 --max 6 \
  --scale-out-cooldown "${COOLDOWN}s" --scale-in-cooldown "${COOLDOWN}s"

# An open loop: RATE requests a second whatever the answers, each to the next RUNNING task
# (the list is refreshed every 2 s), so more tasks share the same work.
load() {
  local ports=() n=0 refresh=0 pause
  pause=$(python3 -c "print(1 / $RATE)")
  while [[ ! -e $WORK/stop ]]; do
    if (( $(date +%s) >= refresh )); then
      mapfile -t ports < <(running_ports 2>/dev/null || true)
      refresh=$(( $(date +%s) + 2 ))
    fi
    if ((${#ports[@]})); then
      curl -s -o /dev/null -m 10 "http://127.0.0.1:${ports[n % ${#ports[@]}]}/cgi-bin/burn" &
      n=$((n + 1))
    fi
    sleep "$pause"
  done
  wait
}

say "load: $RATE requests/s (about $(python3 -c "print(round($RATE * 0.08, 2))") vCPU) for ${LOAD_SECS}s"
load_start=$(date +%s)
load & LOAD_PID=$!
first_out=""; peak=1
while (( $(date +%s) < load_start + LOAD_SECS )); do
  d=$(desired 2>/dev/null || echo "$peak")
  if (( d > peak )); then
    peak=$d
    echo "   desired $d after $(( $(date +%s) - load_start ))s of load"
  fi
  [[ -n $first_out || $d -le 1 ]] || first_out=$(( $(date +%s) - load_start ))
  sleep 1
done
touch "$WORK/stop"; wait "$LOAD_PID" || true; LOAD_PID=""
[[ -n $first_out ]] || fail "no scale-out in ${LOAD_SECS}s of load"
(( first_out <= SCALE_OUT_WITHIN )) \
  || fail "the first scale-out came ${first_out}s after the load began, later than the ${SCALE_OUT_WITHIN}s cooldown"
(( peak >= 3 )) || fail "the load of about $(python3 -c "print(round($RATE * 0.08, 2))") vCPU took the service only to $peak tasks"

say "load stopped: the service must come back to its minimum (1) within ${SCALE_IN_WITHIN}s"
load_end=$(date +%s)
back=""
while (( $(date +%s) < load_end + SCALE_IN_WITHIN + 10 )); do
  if [[ $(desired 2>/dev/null || echo 0) == 1 ]]; then back=$(( $(date +%s) - load_end )); break; fi
  sleep 1
done
[[ -n $back ]] || fail "still not back to 1 task $(( $(date +%s) - load_end ))s after the load stopped"
(( back <= SCALE_IN_WITHIN )) || fail "back to 1 task only ${back}s after the load stopped"

show
echo "demo-autoscaling.sh: PASS: scaled out ${first_out}s after the load began (cooldown ${COOLDOWN}s), up to $peak tasks; back to 1 task ${back}s after it stopped"
