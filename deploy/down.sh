#!/usr/bin/env bash
# Tears down the cluster deploy/up.sh brought up: the compose project `berth` (control nodes
# 1-5, agents, network) and every task container its agents (compose-a, -b, -c) started.
# Usage: deploy/down.sh [--wipe]
#   --wipe  also removes the data volumes: the next up.sh founds a new, empty cluster.
# Images are kept (re-running up.sh is then quick); remove them with
#   docker rmi berth/berth:latest berth/base:bookworm
set -euo pipefail
cd "$(dirname "$0")/.."

WIPE=()
for arg in "$@"; do
  case "$arg" in
    --wipe) WIPE=(--volumes) ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "down.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# Paused containers cannot be stopped; a chaos run interrupted mid-fault may leave one.
for c in $(docker ps -q --filter label=com.docker.compose.project=berth --filter status=paused); do
  docker unpause "$c" >/dev/null 2>&1 || true
done
docker-compose -p berth -f deploy/docker-compose.yml -f deploy/docker-compose.five.yml \
  down --remove-orphans --timeout 5 "${WIPE[@]}"

# Task containers are made by the agents, not by compose: find them by their agent label.
for agent in compose-a compose-b compose-c; do
  ids=$(docker ps -aq --filter "label=berth.agent=$agent")
  [[ -z "$ids" ]] || docker rm -f $ids >/dev/null
done
echo "down.sh: cluster removed${WIPE:+ (volumes wiped)}"
