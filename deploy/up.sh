#!/usr/bin/env bash
# Builds everything offline and brings up a Berth cluster with docker-compose: three control
# nodes (five with --five) and three agents in zones a, b and c, all on this host's engine.
#
# Usage: deploy/up.sh [--five] [--no-build] [--no-agents] [--timeout SECS]
#   --five        five control nodes (deploy/docker-compose.five.yml); start from a wiped
#                 cluster (deploy/down.sh --wipe): a running three-node cluster keeps its
#                 membership, and nodes 4 and 5 would wait for a bootstrap that never comes.
#   --no-build    use the release binary already built (or $BERTH_BIN when set).
#   --no-agents   control nodes only.
#   --timeout S   how long to wait for the control nodes to be healthy (default 180).
#
# Steps, each skipped when its result is already there (a re-run takes seconds):
#   1. `cargo build --release -p berth --locked` into $CARGO_TARGET_DIR (default target/).
#   2. The base image: $BERTH_BASE_IMAGE when set (e.g. debian:bookworm-slim from a registry);
#      otherwise berth/base:bookworm, made with debootstrap (minbase + iptables) from Debian's
#      mirror ($BERTH_DEBIAN_MIRROR, default debootstrap's own) and `docker import`.
#   3. berth/berth:latest from deploy/Dockerfile (rebuilt when the binary or the base changed).
#   4. berth/workload:latest, the task image (deploy/images/build.sh).
#   5. The cluster's certificates in deploy/.tls ($BERTH_TLS_HOST_DIR): a CA, control nodes
#      1-5 and agents compose-a/b/c (`berth tls`), and its first admin token (admin.token),
#      made once and kept.
#   6. docker-compose -p berth up -d, then wait until every control node is healthy.
#
# Host ports (loopback only): API 17400-17402 (-17404), raft 17500-17502 (-17504).
#   export BERTH_ENDPOINT=127.0.0.1:17400,127.0.0.1:17401,127.0.0.1:17402
#   export BERTH_TLS_CA=$PWD/deploy/.tls/ca.pem BERTH_TOKEN_FILE=$PWD/deploy/.tls/admin.token
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

FIVE=0
BUILD=1
AGENTS=1
TIMEOUT=180
while (($#)); do
  case "$1" in
    --five) FIVE=1 ;;
    --no-build) BUILD=0 ;;
    --no-agents) AGENTS=0 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

t0=$(date +%s)
step() { printf '== %s (+%ss)\n' "$1" "$(( $(date +%s) - t0 ))"; }
die() { echo "up.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker CLI not found"
command -v docker-compose >/dev/null || die "docker-compose not found (apt-get install docker-compose)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers"

# ---------------------------------------------------------------- 1. release binary
if ((BUILD)); then
  step "cargo build --release -p berth"
  cargo build --release -p berth --locked
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}
BIN=${BERTH_BIN:-$TARGET_DIR/release/berth}
[[ -x "$BIN" ]] || die "$BIN not built (run without --no-build)"

# ---------------------------------------------------------------- 2. base image
BASE=${BERTH_BASE_IMAGE:-berth/base:bookworm}
if [[ -n "${BERTH_BASE_IMAGE:-}" ]]; then
  docker image inspect "$BASE" >/dev/null 2>&1 || docker pull "$BASE" \
    || die "base image $BASE is neither here nor pullable (unset BERTH_BASE_IMAGE to make one)"
elif docker image inspect "$BASE" >/dev/null 2>&1; then
  step "base image $BASE present"
else
  step "base image $BASE: debootstrap bookworm (minbase + iptables)"
  [[ $(id -u) == 0 ]] || die "debootstrap needs root (or set BERTH_BASE_IMAGE to a Debian bookworm image)"
  if ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  fi
  ROOTFS=$(mktemp -d /tmp/berth-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS"' EXIT
  debootstrap --variant=minbase --include=iptables,iproute2 bookworm "$ROOTFS" \
    ${BERTH_DEBIAN_MIRROR:+"$BERTH_DEBIAN_MIRROR"} >/tmp/berth-debootstrap.log 2>&1 \
    || { tail -20 /tmp/berth-debootstrap.log >&2; die "debootstrap failed (log: /tmp/berth-debootstrap.log)"; }
  # What a container never needs: package lists, docs, man pages, translations.
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/var/log/*.log
  # An imported image has no environment of its own: give it PATH.
  tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' \
    -c 'LABEL berth.base=debootstrap-bookworm-minbase' \
    - "$BASE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
fi

# ---------------------------------------------------------------- 3. berth image
IMAGE=berth/berth:latest
want="$(sha256sum "$BIN" | cut -c1-16)-$(docker image inspect --format '{{.Id}}' "$BASE" | cut -c8-19)-$(cat deploy/Dockerfile deploy/berth-keep | sha256sum | cut -c1-8)"
have=$(docker image inspect --format '{{ index .Config.Labels "berth.build" }}' "$IMAGE" 2>/dev/null || true)
if [[ "$have" == "$want" ]]; then
  step "image $IMAGE up to date"
else
  step "image $IMAGE (base $BASE)"
  CTX=$(mktemp -d /tmp/berth-image.XXXXXX)
  cp "$BIN" "$CTX/berth"
  cp deploy/berth-keep "$CTX/berth-keep"
  docker build -q --build-arg BASE="$BASE" --label berth.build="$want" \
    -f deploy/Dockerfile -t "$IMAGE" "$CTX" >/tmp/berth-image-build.log 2>&1 \
    || { cat /tmp/berth-image-build.log >&2; die "docker build failed"; }
  rm -rf "$CTX"
fi

# ---------------------------------------------------------------- 4. task image
step "task image (deploy/images/build.sh)"
deploy/images/build.sh

# ---------------------------------------------------------------- 5. certificates
TLS_DIR=${BERTH_TLS_HOST_DIR:-$REPO/deploy/.tls}
export BERTH_TLS_HOST_DIR=$TLS_DIR
if [[ -f "$TLS_DIR/ca.pem" ]]; then
  step "certificates in $TLS_DIR present"
else
  step "certificates in $TLS_DIR (berth tls init)"
  "$BIN" tls init --out "$TLS_DIR" --control-ids 1,2,3,4,5 >/dev/null
fi
# Control nodes reach an agent (for task logs) at its host name, agent-a..c.
for z in a b c; do
  [[ -f "$TLS_DIR/agent-compose-$z.pem" ]] \
    || "$BIN" tls issue --dir "$TLS_DIR" --agent "compose-$z" --host "agent-$z" >/dev/null
done
# A directory made before API tokens gets its admin token; an existing one is kept.
"$BIN" tls admin-token --dir "$TLS_DIR" >/dev/null
# And, made before secrets, its secrets key.
"$BIN" tls secrets-key --dir "$TLS_DIR" >/dev/null
export BERTH_TLS_CA=$TLS_DIR/ca.pem BERTH_TOKEN_FILE=$TLS_DIR/admin.token

# ---------------------------------------------------------------- 6. compose up
FILES=(-f deploy/docker-compose.yml)
((FIVE)) && FILES+=(-f deploy/docker-compose.five.yml)
if ((FIVE)); then
  export BERTH_PEERS="1=control-1:7500,2=control-2:7500,3=control-3:7500,4=control-4:7500,5=control-5:7500"
fi
CONTROLS=(control-1 control-2 control-3)
((FIVE)) && CONTROLS+=(control-4 control-5)
step "docker-compose up (${#CONTROLS[@]} control nodes$( ((AGENTS)) && echo ', 3 agents'))"
if ((AGENTS)); then
  docker-compose -p berth "${FILES[@]}" up -d --no-build
else
  docker-compose -p berth "${FILES[@]}" up -d --no-build "${CONTROLS[@]}"
fi

step "waiting for the control nodes to be healthy"
deadline=$(( $(date +%s) + TIMEOUT ))
for c in "${CONTROLS[@]}"; do
  while :; do
    s=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "berth-${c}" 2>/dev/null || echo missing)
    [[ "$s" == healthy ]] && break
    (( $(date +%s) < deadline )) || { docker-compose -p berth "${FILES[@]}" logs --tail 30 "$c" >&2; die "$c is $s after ${TIMEOUT}s"; }
    sleep 1
  done
done

EP=127.0.0.1:17400,127.0.0.1:17401,127.0.0.1:17402
((FIVE)) && EP+=",127.0.0.1:17403,127.0.0.1:17404"
step "up in $(( $(date +%s) - t0 ))s"
"$BIN" cluster status --endpoint "$EP" || true
echo
echo "export BERTH_ENDPOINT=$EP BERTH_TLS_CA=$BERTH_TLS_CA BERTH_TOKEN_FILE=$BERTH_TOKEN_FILE"
