#!/usr/bin/env bash
# Berth's chaos suite: brings up the docker-compose cluster (deploy/up.sh) with frequent
# snapshots and no restart policy (the suite decides when a killed node comes back), runs
# berth-chaos against it, and tears it down. Exit status: 0 no violation, 1 a violation,
# 2 the run could not be made.
#
# Usage: chaos/run.sh [--short | --duration 30m] [--seed S] [--agents auto|real|sim]
#                     [--five] [--reuse] [--keep] [--out DIR] [-- berth-chaos args…]
#   --short       the CI run: 3 leader kills, a leader pause, the leader isolated, a full
#                 restart, and one of each other fault, in a seeded order (the default)
#   --duration D  faults drawn from the seed for D (s, m or h)
#   --agents      real: the compose agents run real containers; sim: agents simulated by
#                 the harness over the agent protocol; auto (default): real when the
#                 binary has `berth agent` run flags, else sim
#   --five        five control nodes
#   --reuse       use the running cluster (started by this script with --keep) as it is
#   --keep        leave the cluster up afterwards (default: deploy/down.sh --wipe)
#   --out DIR     history.jsonl and report.{txt,json} (default /tmp/berth-chaos-SEED)
#   --no-build    use the berth release binary already built ($BERTH_BIN or the target dir)
# $BERTH_CHAOS_BIN, when set, is the harness to run instead of building berth-chaos (to
# compare two builds under the same faults).
# Cargo builds go to $CARGO_TARGET_DIR (default target/): berth in release, berth-chaos
# in the dev profile (the workspace's dependencies are optimised there too).
set -euo pipefail

# Everything in a function: bash reads it whole before running it, so editing this file
# during a run cannot break the run.
main() {
  cd "$(dirname "$0")/.."

  SEED=""
  MODE=(--short)
  AGENTS=auto
  FIVE=0
  REUSE=0
  KEEP=0
  OUT=""
  BUILD=1
  EXTRA=()
  CMDLINE="chaos/run.sh $*"
  while (($#)); do
    case "$1" in
      --short) MODE=(--short) ;;
      --duration) MODE=(--duration "${2:?--duration needs a value}"); shift ;;
      --seed) SEED=${2:?--seed needs a value}; shift ;;
      --agents) AGENTS=${2:?--agents needs real, sim or auto}; shift ;;
      --five) FIVE=1 ;;
      --reuse) REUSE=1 ;;
      --keep) KEEP=1 ;;
      --out) OUT=${2:?--out needs a directory}; shift ;;
      --no-build) BUILD=0 ;;
      --) shift; EXTRA=("$@"); break ;;
      -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
      *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
  done
  SEED=${SEED:-$(( $(date +%s) % 100000 ))}
  OUT=${OUT:-/tmp/berth-chaos-$SEED}
  t0=$(date +%s)

  # Frequent snapshots, so kills land while one is built or installed.
  export BERTH_SNAPSHOT_EVERY=${BERTH_SNAPSHOT_EVERY:-500}
  export BERTH_KEEP_BEHIND_SNAPSHOT=${BERTH_KEEP_BEHIND_SNAPSHOT:-100}
  export BERTH_RESTART=no
  # Nodes and agents run under berth-keep: the suite kills and restarts the process inside a
  # container that stays up, because container exits can deadlock Docker 20.10's network
  # controller (deploy/berth-keep says why).
  export BERTH_ENTRYPOINT=/usr/local/bin/berth-keep

  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
  if [[ -n ${BERTH_CHAOS_BIN:-} ]]; then
    CHAOS=$BERTH_CHAOS_BIN
  else
    echo "== building berth-chaos"
    cargo build -p berth-chaos --locked --quiet
    CHAOS="$TARGET_DIR/debug/berth-chaos"
  fi

  UP=()
  ((FIVE)) && UP+=(--five)
  if ((BUILD)); then
    cargo build --release -p berth --locked --quiet
  fi
  UP+=(--no-build)
  BERTH=${BERTH_BIN:-$TARGET_DIR/release/berth}
  if [[ $AGENTS == auto ]]; then
    if "$BERTH" agent --help 2>/dev/null | grep -q -- '--cpu'; then
      AGENTS=real
    else
      AGENTS=sim
    fi
    echo "== agents: $AGENTS"
  fi
  [[ $AGENTS == sim ]] && UP+=(--no-agents)

  if ((REUSE == 0)); then
    echo "== fresh cluster (snapshot every $BERTH_SNAPSHOT_EVERY, keep $BERTH_KEEP_BEHIND_SNAPSHOT behind)"
    deploy/down.sh --wipe >/dev/null 2>&1 || true
    deploy/up.sh "${UP[@]}"
  fi
  cleanup() {
    if ((KEEP == 0)); then
      echo "== tearing down"
      # Bounded: on a hung engine (exit 2 below) docker-compose down would wait forever.
      timeout 300 deploy/down.sh --wipe >/dev/null 2>&1 || echo "== teardown did not finish (is the Docker engine answering?)" >&2
    fi
  }
  trap cleanup EXIT

  NODES=3
  ((FIVE)) && NODES=5
  # Real agents start a container per task: a gentler pace keeps the engine (and the 2-core
  # machines this runs on) from starving Raft; `-- --workers N --think-ms A-B` overrides.
  if [[ $AGENTS == real && ${#EXTRA[@]} == 0 ]]; then
    EXTRA=(--workers 6 --think-ms 40-120)
  fi
  set +e
  "$CHAOS" "${MODE[@]}" --seed "$SEED" --nodes "$NODES" --agents "$AGENTS" \
    --snapshot-every "$BERTH_SNAPSHOT_EVERY" --keep-behind-snapshot "$BERTH_KEEP_BEHIND_SNAPSHOT" \
    --tls-dir "${BERTH_TLS_HOST_DIR:-deploy/.tls}" \
    --out "$OUT" --command "$CMDLINE" "${EXTRA[@]}"
  rc=$?
  set -e
  # The control nodes' own words (since their last start), for a diagnosis.
  for i in $(seq 1 "$NODES"); do
    timeout 60 docker logs "berth-control-$i" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$OUT/control-$i.log" || true
  done
  echo "== chaos run finished in $(( $(date +%s) - t0 ))s, exit $rc (report: $OUT/report.txt)"
  exit $rc
}

main "$@"
