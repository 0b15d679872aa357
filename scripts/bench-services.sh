#!/usr/bin/env bash
# Berth services side by side with Docker Swarm services on the same Docker engine.
#
# Usage: scripts/bench-services.sh [--runs N] [--tasks N] [--timeout SECONDS]
#                                  [--swarm-network host|bridge] [--berth-network none|bridge]
#                                  [--swarm-restart-delay DURATION] [--build] [--keep]
#
#   --runs N                 repeat every scenario N times (default 3); every run and the median
#                            are reported
#   --tasks N                the service's desired count (default 20)
#   --timeout SECONDS        give up on one scenario after this long (default 180)
#   --swarm-network MODE     host (default): `docker service create --network host`, no network
#                            endpoint per task, the closest Swarm has to Berth's `none`
#                            (`--network none` is refused by Swarm: "network none not found");
#                            bridge: Swarm's default, every task on the engine's docker0 bridge
#   --berth-network MODE     the task definition's networkMode: none (default) or bridge
#   --swarm-restart-delay D  pass --restart-delay D to `docker service create` (default: not
#                            passed, so Swarm's default of 5 s applies)
#   --build                  run `cargo build --release -p berth --locked` first even when
#                            target/release/berth exists (it is built when missing)
#   --keep                   keep the work directory (logs of every process) afterwards
#
# Scenarios, each for Berth and for Swarm, same image (berth/workload:latest) and command
# (`sleep 3600`), cpu 256 / memory 512 for Berth's tasks, stop timeout 2 s on both:
#   1. create -> N tasks RUNNING
#   2. `docker kill` of one task container -> the count restored (the killed task replaced,
#      N RUNNING)
#   3. rolling update of all N tasks to `sleep 3601`, minimum healthy 100 % / maximum 200 %
#      (Swarm: --update-parallelism N --update-order start-first) -> N tasks of the new
#      revision RUNNING; also until the last old container is gone, and until the update is
#      declared done (Berth: the deployment COMPLETED; Swarm: the blocking
#      `docker service update` returned). Both wait 5 s by default before that: Berth's
#      minimum healthy time, Swarm's update monitor.
#   4. Berth only: SIGKILL of an agent holding service tasks -> N RUNNING on the other agent.
#      A one-engine swarm has no second node to lose: reported as not measurable.
#
# Berth runs as three `berth control` processes and two `berth agent` processes (zones a and
# b) on loopback, with default timings. The swarm is made with `docker swarm init` and left
# again at the end; the script refuses to run on an engine that is already in a swarm it did
# not make. Everything it started is stopped and every container it caused is removed on exit.
# Needs: docker, jq, cargo (when target/release/berth is missing), bash 5.
set -Eeuo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

COMMAND_LINE="scripts/bench-services.sh${*:+ $*}"
RUNS=3
TASKS=20
TIMEOUT=180
SWARM_NET=host
BERTH_NET=none
SWARM_RESTART_DELAY=""
KEEP=0
BUILD=0
SETTLE=11          # s; Berth counts a task that stops within 10 s of RUNNING as a failed launch
DOCKER_TIMEOUT=30  # s; this engine sometimes deadlocks and its CLI then never returns
POLL_US=100000     # poll every 100 ms (start to start)
SERVICE=bench
IMAGE=berth/workload:latest
SWARM_MARKER=${TMPDIR:-/tmp}/berth-bench-services.swarm

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while (($#)); do
  case "$1" in
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --tasks) TASKS=${2:?--tasks needs a number}; shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    --swarm-network) SWARM_NET=${2:?}; shift 2 ;;
    --berth-network) BERTH_NET=${2:?}; shift 2 ;;
    --swarm-restart-delay) SWARM_RESTART_DELAY=${2:?}; shift 2 ;;
    --build) BUILD=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-services: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench-services: --runs must be a positive integer" >&2; exit 2; }
[[ $TASKS =~ ^[1-9][0-9]*$ ]] && ((TASKS <= 1000)) || { echo "bench-services: --tasks must be 1..1000" >&2; exit 2; }
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "bench-services: --timeout must be a positive integer" >&2; exit 2; }
[[ $SWARM_NET == host || $SWARM_NET == bridge ]] || { echo "bench-services: --swarm-network is host or bridge" >&2; exit 2; }
[[ $BERTH_NET == none || $BERTH_NET == bridge ]] || { echo "bench-services: --berth-network is none or bridge" >&2; exit 2; }

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for tool in docker jq timeout; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
((BASH_VERSINFO[0] >= 5)) || die "needs bash 5 (EPOCHREALTIME)"
# Nothing from the caller's environment changes Berth's defaults.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^BERTH_' || true)

# ---------------------------------------------------------------------------------------------
# State the clean-up needs; filled in as things are started.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-services.XXXXXX")
declare -a PIDS=()          # every process this script started
declare -A AGENT_PID=()     # agent id -> pid
declare -a AGENT_IDS=()     # every agent id used (their containers are removed at the end)
declare -a SWARM_SIDS=()    # every Swarm service id created
SWARM_OURS=0                # 1 once this script ran `docker swarm init` (or adopted its own)
GWBRIDGE_OURS=0             # docker_gwbridge did not exist before the swarm was made
FINISHED=0

# A process of ours that has ended: never signalled again (its pid may be reused).
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# docker with a bound: a call that does not return within DOCKER_TIMEOUT marks the engine wedged.
dk() {
  local rc=0
  timeout "$DOCKER_TIMEOUT" docker "$@" || rc=$?
  if ((rc == 124)); then
    : >"$WORK/wedged"
    say "docker $1 did not return within ${DOCKER_TIMEOUT} s"
  fi
  return "$rc"
}
check_wedged() {
  if [[ -e $WORK/wedged ]]; then
    if timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
      && timeout 15 docker ps -q >/dev/null 2>&1; then
      rm -f "$WORK/wedged"
      say "the engine answers again after a docker call timed out; going on"
      return 0
    fi
    die "the Docker engine is wedged (docker calls do not return within ${DOCKER_TIMEOUT} s; the known 20.10 network-controller deadlock?). Stopping; dockerd was NOT restarted. Logs: $WORK"
  fi
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  say "cleaning up"
  local pid
  # The background `docker service update` (under `timeout`, which passes the signal on).
  [[ -s $WORK/swarm-update.pid ]] && PIDS+=("$(cat "$WORK/swarm-update.pid")")
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.5
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done

  local engine_ok=1
  if ! timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || ! timeout 15 docker ps -q >/dev/null 2>&1; then
    engine_ok=0
  fi
  if ((engine_ok)); then
    local id ids
    for id in "${AGENT_IDS[@]}"; do
      ids=$(timeout 30 docker ps -aq --filter "label=berth.agent=$id")
      [[ -n $ids ]] && timeout 60 docker rm -f $ids >/dev/null
    done
    if ((SWARM_OURS)); then
      timeout 30 docker service rm "$SERVICE" >/dev/null 2>&1
      local sid
      for _ in $(seq 1 60); do
        ids=""
        for sid in "${SWARM_SIDS[@]}"; do
          ids+=$(timeout 30 docker ps -aq --filter "label=com.docker.swarm.service.id=$sid")
        done
        [[ -z $ids ]] && break
        sleep 0.5
      done
      timeout 60 docker swarm leave --force >/dev/null 2>&1 || say "docker swarm leave --force failed"
      for sid in "${SWARM_SIDS[@]}"; do
        ids=$(timeout 30 docker ps -aq --filter "label=com.docker.swarm.service.id=$sid")
        [[ -n $ids ]] && timeout 60 docker rm -f $ids >/dev/null
      done
      if ((GWBRIDGE_OURS)) && timeout 30 docker network inspect docker_gwbridge >/dev/null 2>&1; then
        timeout 30 docker network rm docker_gwbridge >/dev/null 2>&1 \
          || say "could not remove docker_gwbridge (made by the swarm)"
      fi
      rm -f "$SWARM_MARKER"
    fi
  else
    say "the Docker engine does not answer: nothing removed from it. Left to clean by hand once it answers:"
    say "  containers labelled berth.agent=${AGENT_IDS[*]:-none}"
    ((SWARM_OURS)) && say "  docker service rm $SERVICE; docker swarm leave --force (made by this script)"
  fi
  if [[ -n $(ls -A "$WORK" 2>/dev/null) ]] && { ((KEEP)) || ((rc != 0 && FINISHED == 0)); }; then
    say "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Time and polling.
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
declare -A POLL_N=() POLL_SUM=() POLL_MAX=()
WAIT_END=0
# wait_until SYSTEM START_US COND [ARGS…]: polls COND every 100 ms (start to start) until it holds;
# WAIT_END is the end of the poll that saw it. Fails after TIMEOUT seconds.
wait_until() {
  local sys=$1 start=$2
  shift 2
  local deadline=$((start + TIMEOUT * 1000000)) t p next
  local last=""
  while :; do
    t=$(now_us)
    if [[ -n $last ]]; then
      p=$((t - last))
      POLL_N[$sys]=$((${POLL_N[$sys]:-0} + 1))
      POLL_SUM[$sys]=$((${POLL_SUM[$sys]:-0} + p))
      ((p > ${POLL_MAX[$sys]:-0})) && POLL_MAX[$sys]=$p
    fi
    last=$t
    if "$@"; then
      WAIT_END=$(now_us)
      return 0
    fi
    check_wedged
    t=$(now_us)
    ((t > deadline)) && return 1
    next=$((last + POLL_US - t))
    ((next > 0)) && sleep "0.$(printf '%06d' "$next")"
  done
}

# ---------------------------------------------------------------------------------------------
# Results: RES[key] holds one value per run (ms, or "F" when the scenario did not finish).
declare -A RES=()
declare -a NOTES=()
record() { RES[$1]="${RES[$1]:-} $2"; }
ms_since() { echo $((($2 - $1) / 1000)); }
fmt_s() { awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }'; }

# ---------------------------------------------------------------------------------------------
# Pre-flight: the engine, and the swarm state (a user's swarm is never touched).
timeout 30 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker engine answers within 30 s (DOCKER_HOST=${DOCKER_HOST:-unset})"
timeout 30 docker ps -q >/dev/null 2>&1 || die "docker ps does not return within 30 s: the engine looks wedged"
ENGINE_VERSION=$(dk version --format '{{.Server.Version}}')
STORAGE_DRIVER=$(dk info --format '{{.Driver}}')
SWARM_STATE=$(dk info --format '{{.Swarm.LocalNodeState}}')
if [[ $SWARM_STATE != inactive ]]; then
  node_id=$(dk info --format '{{.Swarm.NodeID}}')
  if [[ $SWARM_STATE == active && -s $SWARM_MARKER && $(cat "$SWARM_MARKER") == "$node_id" ]]; then
    say "the engine is in a swarm an earlier run of this script made (node $node_id); using it and leaving it at the end"
    SWARM_OURS=1
    GWBRIDGE_OURS=1
    dk service rm "$SERVICE" >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [[ -z $(dk ps -aq --filter "label=com.docker.swarm.service.name=$SERVICE") ]] && break
      sleep 0.5
    done
  else
    echo "bench-services: this Docker engine's swarm state is '$SWARM_STATE' and this script did not make it;" >&2
    echo "  it will not touch a swarm it did not make. Run it on an engine that is not in a swarm." >&2
    exit 1
  fi
fi

# ---------------------------------------------------------------------------------------------
# Build and images.
BIN=${CARGO_TARGET_DIR:-target}/release/berth
if [[ ! -x $BIN ]] || ((BUILD)); then
  say "building $BIN (cargo build --release -p berth --locked)"
  cargo build --release -p berth --locked >&2
fi
BIN=$(realpath "$BIN")
deploy/images/build.sh >&2
GIT_REV="HEAD $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n $(git status --porcelain --untracked-files=no -- crates proto Cargo.toml Cargo.lock 2>/dev/null) ]] \
  && GIT_REV+=" with uncommitted changes in crates/ or proto/"
BIN_BUILT=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')
if [[ -n $(find crates proto Cargo.toml Cargo.lock -newer "$BIN" -type f 2>/dev/null | head -n1) ]]; then
  BIN_BUILT+=", older than some of the sources (--build rebuilds it)"
  say "warning: $BIN is older than some of the sources; --build rebuilds it"
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The swarm.
if ((SWARM_OURS == 0)); then
  dk network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_OURS=1
  say "docker swarm init (on loopback)"
  SWARM_OURS=1  # from here on the clean-up leaves it, even if init half-failed
  dk swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >"$WORK/swarm-init.log" 2>&1 \
    || { cat "$WORK/swarm-init.log" >&2; die "docker swarm init failed"; }
  dk info --format '{{.Swarm.NodeID}}' >"$SWARM_MARKER"
fi

# ---------------------------------------------------------------------------------------------
# The Berth cluster: three control processes, two agents.
declare -A PORT_TAKEN=()
PORT=0
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))  # below the ephemeral range
    [[ -n ${PORT_TAKEN[$p]:-} ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
      && [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then
      PORT_TAKEN[$p]=1
      PORT=$p
      return
    fi
  done
}
declare -a API=() RAFT=()
for i in 1 2 3; do
  pick_port; API[i]=$PORT
  pick_port; RAFT[i]=$PORT
done
PEERS="1=127.0.0.1:${RAFT[1]},2=127.0.0.1:${RAFT[2]},3=127.0.0.1:${RAFT[3]}"
CONTROL="127.0.0.1:${RAFT[1]},127.0.0.1:${RAFT[2]},127.0.0.1:${RAFT[3]}"
export BERTH_ENDPOINT="127.0.0.1:${API[1]},127.0.0.1:${API[2]},127.0.0.1:${API[3]}"
berth() { timeout 30 "$BIN" "$@"; }
# On TLS, as every Berth cluster runs by default: a CA, the three nodes, and agents' certificates
# made as each agent starts.
TLS="$WORK/tls"
"$BIN" tls init --out "$TLS" >/dev/null
export BERTH_TLS_CA="$TLS/ca.pem" BERTH_TOKEN_FILE="$TLS/admin.token" BERTH_CONFIG=/nonexistent

say "starting three berth control processes (api ${API[*]}, raft ${RAFT[*]})"
for i in 1 2 3; do
  "$BIN" control --id "$i" --api "127.0.0.1:${API[i]}" --raft "127.0.0.1:${RAFT[i]}" \
    --data "$WORK/control-$i" --peers "$PEERS" --tls-dir "$TLS" >"$WORK/control-$i.log" 2>&1 &
  PIDS+=($!)
  disown
done
leader_known() { berth cluster status -o json 2>/dev/null | jq -e '(.leaderId // 0) > 0' >/dev/null 2>&1; }
wait_until setup "$(now_us)" leader_known || die "the control cluster elected no leader within ${TIMEOUT} s (logs: $WORK)"

# Each agent offers room for 2 × TASKS tasks of 256/512, so one agent can hold the whole service
# (scenario 4) and either can hold its share of a rollout at 200 %. Both share this one engine.
AGENT_CPU=$((2 * TASKS * 256))
AGENT_MEM=$((2 * TASKS * 512))
AGENT_SEQ=0
declare -A AGENT_ZONE=()
agent_ready() {
  berth agent ls -o json 2>/dev/null \
    | jq -e --arg id "$1" 'any(.[]; .agentId == $id and .status == "READY")' >/dev/null 2>&1
}
start_agent() {  # start_agent ZONE -> AGENT (its id)
  local zone=$1
  AGENT_SEQ=$((AGENT_SEQ + 1))
  local id="bench-$$-$zone$AGENT_SEQ"
  pick_port
  AGENT_IDS+=("$id")
  "$BIN" tls issue --dir "$TLS" --agent "$id" >/dev/null
  "$BIN" agent --control "$CONTROL" --id "$id" --cpu "$AGENT_CPU" --memory "$AGENT_MEM" \
    --attr "zone=$zone" --data "$WORK/agent-$id" --listen "127.0.0.1:$PORT" --tls-dir "$TLS" \
    >"$WORK/agent-$id.log" 2>&1 &
  PIDS+=($!)
  AGENT_PID[$id]=$!
  disown
  AGENT_ZONE[$id]=$zone
  wait_until setup "$(now_us)" agent_ready "$id" || die "agent $id was not READY within ${TIMEOUT} s (log: $WORK/agent-$id.log)"
  AGENT=$id
}
AGENT=""
start_agent a; AGENT_A=$AGENT
start_agent b; AGENT_B=$AGENT
say "agents $AGENT_A (zone a) and $AGENT_B (zone b) READY"

FAMILY="bench-svc-$$"
taskdef() {  # taskdef SECONDS -> JSON
  jq -n --arg family "$FAMILY" --arg net "$BERTH_NET" --arg image "$IMAGE" --arg secs "$1" '{
    family: $family, cpu: 256, memory: 512, networkMode: $net,
    containerDefinitions: [{name: "app", image: $image, command: ["sleep", $secs], stopTimeout: 2}]
  }'
}
taskdef 3600 >"$WORK/taskdef-1.json"
taskdef 3601 >"$WORK/taskdef-2.json"
REV1=$(berth taskdef register "$WORK/taskdef-1.json" -o json | jq -r '.taskDefinition.revision') \
  || die "taskdef register (sleep 3600) failed"
REV2=$(berth taskdef register "$WORK/taskdef-2.json" -o json | jq -r '.taskDefinition.revision') \
  || die "taskdef register (sleep 3601) failed"
[[ $REV1 =~ ^[0-9]+$ && $REV2 =~ ^[0-9]+$ && $REV1 != "$REV2" ]] \
  || die "registering the task definitions gave revisions '$REV1' and '$REV2'"
TD1="$FAMILY:$REV1" TD2="$FAMILY:$REV2"

# ---------------------------------------------------------------------------------------------
# Berth: conditions read from `berth service describe -o json` (its service and its tasks whose
# desired status is RUNNING).
DESC=""
berth_describe() { DESC=$(berth service describe "$SERVICE" -o json 2>/dev/null); }
# berth_running N AGENT_OR_EMPTY EXCLUDED_TASK_OR_EMPTY: exactly N live tasks, all RUNNING, none
# the excluded one, all on AGENT when given.
berth_running() {
  berth_describe || return 1
  jq -e --argjson n "$1" --arg on "$2" --arg not "$3" '
    (.tasks | length) == $n
    and all(.tasks[]; .lastStatus == "RUNNING" and ($on == "" or .agentId == $on) and .taskId != $not)
  ' <<<"$DESC" >/dev/null 2>&1
}
# N tasks of the PRIMARY deployment (on revision 2) RUNNING.
berth_new_running() {
  berth_describe || return 1
  jq -e --arg td "$TD2" --argjson n "$1" '
    (.service.deployments | map(select(.status == "PRIMARY" and .taskDefinition == $td)) | first | .id) as $d
    | $d != null and ([.tasks[] | select(.startedBy == $d and .lastStatus == "RUNNING")] | length) == $n
  ' <<<"$DESC" >/dev/null 2>&1
}
# The PRIMARY deployment (on revision 2) COMPLETED and no other deployment ACTIVE.
berth_rolled() {
  berth_describe || return 1
  jq -e --arg td "$TD2" '
    (.service.deployments | map(select(.status == "PRIMARY" and .rolloutState == "COMPLETED" and .taskDefinition == $td)) | length) == 1
    and (.service.deployments | map(select(.status == "ACTIVE")) | length) == 0
  ' <<<"$DESC" >/dev/null 2>&1
}
no_running_containers() {  # no_running_containers LABEL=VALUE
  local out
  out=$(dk ps -q --filter "label=$1" --filter status=running 2>/dev/null) || return 1
  [[ -z $out ]]
}
berth_gone() {
  local st
  st=$(berth service describe "$SERVICE" -o json 2>/dev/null | jq -r '.service.status') || return 1
  [[ $st == INACTIVE ]] && no_running_containers "berth.definition=$TD1" \
    && no_running_containers "berth.definition=$TD2"
}

declare -A RUN_DONE=()
fill_missing() {  # records "did not finish" for every key this run has no value for
  local k
  for k in "$@"; do [[ -n ${RUN_DONE[$k]:-} ]] || record "$k" F; done
  RUN_DONE=()
}
measured() {  # measured KEY START_US WHAT: records WAIT_END - START and says so
  record "$1" "$(ms_since "$2" "$WAIT_END")"
  RUN_DONE[$1]=1
  say "$3 after $(fmt_s "$(ms_since "$2" "$WAIT_END")")"
}

KILLED_AGENT=""
# The scenarios of one Berth run; returns at the first one that does not finish.
berth_scenarios() {
  local run=$1 t0 vid cid
  say "berth run $run: service create $SERVICE --desired $TASKS"
  t0=$(now_us)
  if ! berth service create "$SERVICE" --taskdef "$TD1" --desired "$TASKS" >"$WORK/berth-create.log" 2>&1; then
    NOTES+=("berth run $run: service create failed: $(tail -n1 "$WORK/berth-create.log")"); return 1
  fi
  wait_until berth "$t0" berth_running "$TASKS" "" "" \
    || { NOTES+=("berth run $run: create did not reach $TASKS RUNNING within ${TIMEOUT} s"); return 1; }
  measured berth.create "$t0" "berth run $run: $TASKS RUNNING"

  sleep "$SETTLE"
  berth_describe || { NOTES+=("berth run $run: service describe failed"); return 1; }
  vid=$(jq -r '.tasks[0].taskId' <<<"$DESC")
  cid=$(dk ps -q --filter "label=berth.task=$vid" | head -n1)
  [[ -n $cid ]] || { NOTES+=("berth run $run: no container found for task $vid"); return 1; }
  t0=$(now_us)
  dk kill "$cid" >/dev/null || { NOTES+=("berth run $run: docker kill failed"); return 1; }
  wait_until berth "$t0" berth_running "$TASKS" "" "$vid" \
    || { NOTES+=("berth run $run: the killed task was not replaced within ${TIMEOUT} s"); return 1; }
  measured berth.kill "$t0" "berth run $run: container of task $vid killed; $TASKS RUNNING again"

  sleep "$SETTLE"
  t0=$(now_us)
  if ! berth service update "$SERVICE" --taskdef "$TD2" --min-healthy-percent 100 --max-percent 200 \
    >"$WORK/berth-update.log" 2>&1; then
    NOTES+=("berth run $run: service update failed: $(tail -n1 "$WORK/berth-update.log")"); return 1
  fi
  wait_until berth "$t0" berth_new_running "$TASKS" \
    || { NOTES+=("berth run $run: not $TASKS tasks of $TD2 RUNNING within ${TIMEOUT} s"); return 1; }
  measured berth.update "$t0" "berth run $run: $TASKS tasks of $TD2 RUNNING"
  wait_until berth "$t0" no_running_containers "berth.definition=$TD1" \
    || { NOTES+=("berth run $run: containers of $TD1 still running ${TIMEOUT} s after the update"); return 1; }
  measured berth.update_gone "$t0" "berth run $run: last $TD1 container gone"
  wait_until berth "$t0" berth_rolled \
    || { NOTES+=("berth run $run: the rollout did not complete within ${TIMEOUT} s"); return 1; }
  measured berth.update_done "$t0" "berth run $run: rollout to $TD2 COMPLETED"

  sleep "$SETTLE"
  berth_describe || { NOTES+=("berth run $run: service describe failed"); return 1; }
  local on_a dead survivor held
  on_a=$(jq --arg a "$AGENT_A" '[.tasks[] | select(.agentId == $a)] | length' <<<"$DESC")
  if ((on_a > 0)); then
    dead=$AGENT_A survivor=$AGENT_B held=$on_a
  else
    dead=$AGENT_B survivor=$AGENT_A
    held=$(jq --arg b "$AGENT_B" '[.tasks[] | select(.agentId == $b)] | length' <<<"$DESC")
  fi
  KILLED_AGENT=$dead
  t0=$(now_us)
  kill -KILL "${AGENT_PID[$dead]}"
  forget_pid "${AGENT_PID[$dead]}"
  NOTES+=("berth run $run: the SIGKILLed agent held $held of the $TASKS tasks")
  wait_until berth "$t0" berth_running "$TASKS" "$survivor" "" \
    || { NOTES+=("berth run $run: not $TASKS RUNNING on $survivor within ${TIMEOUT} s of the agent SIGKILL"); return 1; }
  measured berth.agent "$t0" "berth run $run: agent $dead ($held tasks) SIGKILLed; $TASKS RUNNING on $survivor"
}

berth_run() {
  local run=$1 ids
  KILLED_AGENT=""
  berth_scenarios "$run" || true
  check_wedged
  fill_missing berth.create berth.kill berth.update berth.update_gone berth.update_done berth.agent
  if [[ -n $KILLED_AGENT ]]; then
    # Its containers outlive it: remove them, and put a fresh agent in its zone.
    ids=$(dk ps -aq --filter "label=berth.agent=$KILLED_AGENT") || true
    [[ -n $ids ]] && { dk rm -f $ids >/dev/null || true; }
  fi
  berth service delete "$SERVICE" --force >/dev/null 2>&1 || true
  wait_until setup "$(now_us)" berth_gone \
    || say "berth run $run: the service did not drain within ${TIMEOUT} s"
  if [[ -n $KILLED_AGENT ]]; then
    local zone=${AGENT_ZONE[$KILLED_AGENT]}
    start_agent "$zone"
    if [[ $zone == a ]]; then AGENT_A=$AGENT; else AGENT_B=$AGENT; fi
  fi
}

# ---------------------------------------------------------------------------------------------
# Swarm: conditions read from `docker service ps` (the tasks whose desired state is running).
SWARM_SID=""
# swarm_running N EXCLUDED_TASK_IDS: exactly N tasks desired running, all Running, none excluded.
swarm_running() {
  local out
  out=$(dk service ps "$SERVICE" --filter desired-state=running --no-trunc --format '{{.ID}} {{.CurrentState}}' 2>/dev/null) || return 1
  awk -v n="$1" -v excl="$2" '
    BEGIN { split(excl, e, " "); for (i in e) skip[e[i]] = 1 }
    NF { total++; if ($2 == "Running" && !($1 in skip)) ok++ }
    END { exit !(total == n && ok == n) }' <<<"$out"
}
# No running container of the service belongs to one of the given task ids.
swarm_old_gone() {
  local out
  out=$(dk ps --filter "label=com.docker.swarm.service.id=$SWARM_SID" --filter status=running \
    --format '{{.Label "com.docker.swarm.task.id"}}' 2>/dev/null) || return 1
  awk -v excl="$1" '
    BEGIN { split(excl, e, " "); for (i in e) old[e[i]] = 1 }
    ($1 in old) { found = 1 }
    END { exit found }' <<<"$out"
}
swarm_gone() {
  local out
  out=$(dk ps -aq --filter "label=com.docker.swarm.service.id=$SWARM_SID" 2>/dev/null) || return 1
  [[ -z $out ]]
}

swarm_scenarios() {
  local run=$1 t0 line cid vid old
  local -a args=(service create --detach --name "$SERVICE" --replicas "$TASKS" --no-resolve-image
    --stop-grace-period 2s)
  [[ $SWARM_NET == host ]] && args+=(--network host)
  [[ -n $SWARM_RESTART_DELAY ]] && args+=(--restart-delay "$SWARM_RESTART_DELAY")
  args+=("$IMAGE" sleep 3600)

  say "swarm run $run: docker service create --replicas $TASKS"
  t0=$(now_us)
  if ! SWARM_SID=$(dk "${args[@]}" 2>"$WORK/swarm-create.err"); then
    NOTES+=("swarm run $run: docker service create failed: $(tail -n1 "$WORK/swarm-create.err")"); return 1
  fi
  SWARM_SID=$(tail -n1 <<<"$SWARM_SID")
  SWARM_SIDS+=("$SWARM_SID")
  wait_until swarm "$t0" swarm_running "$TASKS" "" \
    || { NOTES+=("swarm run $run: create did not reach $TASKS Running within ${TIMEOUT} s"); return 1; }
  measured swarm.create "$t0" "swarm run $run: $TASKS Running"

  sleep "$SETTLE"
  line=$(dk ps --filter "label=com.docker.swarm.service.id=$SWARM_SID" --filter status=running \
    --format '{{.ID}} {{.Label "com.docker.swarm.task.id"}}' | head -n1)
  cid=${line%% *} vid=${line#* }
  [[ -n $cid ]] || { NOTES+=("swarm run $run: no running container found"); return 1; }
  t0=$(now_us)
  dk kill "$cid" >/dev/null || { NOTES+=("swarm run $run: docker kill failed"); return 1; }
  wait_until swarm "$t0" swarm_running "$TASKS" "$vid" \
    || { NOTES+=("swarm run $run: the killed task was not replaced within ${TIMEOUT} s"); return 1; }
  measured swarm.kill "$t0" "swarm run $run: container of task $vid killed; $TASKS Running again"

  sleep "$SETTLE"
  old=$(dk service ps "$SERVICE" --filter desired-state=running --no-trunc --format '{{.ID}}' | tr '\n' ' ')
  rm -f "$WORK/swarm-update.end" "$WORK/swarm-update.rc" "$WORK/swarm-update.pid"
  t0=$(now_us)
  (
    rc=0
    timeout $((TIMEOUT + 60)) docker service update --update-parallelism "$TASKS" --update-order start-first \
      --args "sleep 3601" "$SERVICE" >"$WORK/swarm-update-run$run.log" 2>&1 &
    echo "$!" >"$WORK/swarm-update.pid"
    wait "$!" || rc=$?
    now_us >"$WORK/swarm-update.end"
    echo "$rc" >"$WORK/swarm-update.rc"
  ) &
  local upid=$!
  PIDS+=("$upid")
  local ok=1
  if wait_until swarm "$t0" swarm_running "$TASKS" "$old"; then
    measured swarm.update "$t0" "swarm run $run: $TASKS new tasks Running"
    if wait_until swarm "$t0" swarm_old_gone "$old"; then
      measured swarm.update_gone "$t0" "swarm run $run: last old container gone"
    else
      NOTES+=("swarm run $run: old containers still running ${TIMEOUT} s after the update"); ok=0
    fi
  else
    NOTES+=("swarm run $run: the update did not converge within ${TIMEOUT} s"); ok=0
  fi
  wait "$upid" 2>/dev/null || true
  forget_pid "$upid"
  rm -f "$WORK/swarm-update.pid"
  if [[ -s $WORK/swarm-update.rc && $(cat "$WORK/swarm-update.rc") == 0 ]]; then
    WAIT_END=$(cat "$WORK/swarm-update.end")
    measured swarm.update_cli "$t0" "swarm run $run: docker service update returned"
  else
    NOTES+=("swarm run $run: docker service update exited $(cat "$WORK/swarm-update.rc" 2>/dev/null || echo '?'): $(tail -n2 "$WORK/swarm-update-run$run.log" | tr '\n' ' ')")
    ok=0
  fi
  ((ok))
}

swarm_run() {
  local run=$1 ids
  SWARM_SID=""
  swarm_scenarios "$run" || true
  check_wedged
  fill_missing swarm.create swarm.kill swarm.update swarm.update_gone swarm.update_cli
  [[ -n $SWARM_SID ]] || return 0
  dk service rm "$SERVICE" >/dev/null 2>&1 || true
  if ! wait_until setup "$(now_us)" swarm_gone; then
    say "swarm run $run: the service's containers were not removed within ${TIMEOUT} s; removing them"
    ids=$(dk ps -aq --filter "label=com.docker.swarm.service.id=$SWARM_SID") || true
    [[ -n $ids ]] && { dk rm -f $ids >/dev/null || true; }
  fi
}

# ---------------------------------------------------------------------------------------------
# The runs: Berth first in odd runs, Swarm first in even runs.
T_START=$(now_us)
for ((run = 1; run <= RUNS; run++)); do
  if ((run % 2)); then
    berth_run "$run"; check_wedged; swarm_run "$run"; check_wedged
  else
    swarm_run "$run"; check_wedged; berth_run "$run"; check_wedged
  fi
done
T_END=$(now_us)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.
cells() {  # cells KEY -> "| v1 | v2 | … | median |"
  local out="" v ok=()
  for v in ${RES[$1]:-}; do
    if [[ $v == F ]]; then out+=" did not finish |"; else out+=" $(fmt_s "$v") |"; ok+=("$v"); fi
  done
  if ((${#ok[@]})); then
    local med
    med=$(printf '%s\n' "${ok[@]}" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    out+=" $(fmt_s "$med")"
    ((${#ok[@]} < RUNS)) && out+=" (of ${#ok[@]})"
    out+=" |"
  else
    out+=" — |"
  fi
  echo "$out"
}
na_cells() { local out="" i; for ((i = 1; i <= RUNS; i++)); do out+=" — |"; done; echo "$out $1 |"; }
poll_note() {
  local s=$1
  ((${POLL_N[$s]:-0} > 0)) || { echo "no polls"; return; }
  awk -v n="${POLL_N[$s]}" -v sum="${POLL_SUM[$s]}" -v max="${POLL_MAX[$s]}" \
    'BEGIN { printf "%d polls, mean %.0f ms apart, longest %.0f ms", n, sum / n / 1000, max / 1000 }'
}

header="| scenario | system |"
sep="| --- | --- |"
for ((i = 1; i <= RUNS; i++)); do header+=" run $i |"; sep+=" --- |"; done
header+=" median |"; sep+=" --- |"
restart_desc="5 s (Swarm's default)"
[[ -n $SWARM_RESTART_DELAY ]] && restart_desc="\`--restart-delay $SWARM_RESTART_DELAY\`"
verify_desc="it waits for the update to be verified stable, not only for the tasks to run"
if grep -qs 'verify: Waiting 5 seconds' "$WORK"/swarm-update-run*.log; then
  verify_desc="its progress output ends with \"verify: Waiting 5 seconds to verify that tasks are stable\" before \"Service bench converged\""
fi
if [[ $SWARM_NET == host ]]; then
  swarm_net_desc="\`--network host\` (Swarm refuses \`--network none\`: \"network none not found\"; without \`--network\` its tasks go on the docker0 bridge)"
else
  swarm_net_desc="Swarm's default: each task on the engine's docker0 bridge (no published ports, so not on ingress)"
fi

FINISHED=1
cat <<EOF

## Berth services vs Docker Swarm, same engine

Command: \`$COMMAND_LINE\`

- When: $(date -u '+%Y-%m-%d %H:%M UTC'); $(((T_END - T_START) / 1000000)) s of runs; machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); load average before $LOAD_BEFORE, after $LOAD_AFTER
- Docker engine $ENGINE_VERSION, storage driver $STORAGE_DRIVER; Berth: \`$BIN\` built $BIN_BUILT; work tree at $GIT_REV
- Both: image \`$IMAGE\`, command \`sleep 3600\` (update: \`sleep 3601\`), $TASKS tasks, stop timeout 2 s (\`stopTimeout: 2\` / \`--stop-grace-period 2s\`)
- Berth: three \`berth control\` processes and two \`berth agent\` processes (zones a and b, ${AGENT_CPU} CPU / ${AGENT_MEM} MiB offered each) on loopback, default timings (agent TTL 5 s); tasks cpu 256 / memory 512, \`networkMode: $BERTH_NET\`; default placement (spread over zone, binpack memory)
- Swarm: one-node swarm made by this script (\`docker swarm init\`), \`docker service create --detach --no-resolve-image\`, network $swarm_net_desc; restart delay $restart_desc
- Runs alternate which system goes first; each scenario waits ${SETTLE} s after the previous one (Berth treats a task that stops within 10 s of RUNNING as a failed launch and backs off)

$header
$sep
| 1. create → $TASKS RUNNING | Berth |$(cells berth.create)
| | Swarm |$(cells swarm.create)
| 2. \`docker kill\` of one task's container → count restored | Berth |$(cells berth.kill)
| | Swarm |$(cells swarm.kill)
| 3. rolling update, min 100 % / max 200 % → every task on the new revision | Berth |$(cells berth.update)
| | Swarm |$(cells swarm.update)
| 3b. … → last old container gone | Berth |$(cells berth.update_gone)
| | Swarm |$(cells swarm.update_gone)
| 3c. … → update declared done (Berth: deployment COMPLETED; Swarm: blocking \`docker service update\` returned) | Berth |$(cells berth.update_done)
| | Swarm |$(cells swarm.update_cli)
| 4. SIGKILL of an agent holding service tasks → $TASKS RUNNING on the other agent | Berth |$(cells berth.agent)
| | Swarm |$(na_cells "not measurable on one engine")

What each figure is, from the moment the action was issued (the CLI call, \`docker kill\`, \`kill -9\`) to the end of the first poll that saw the goal:
1. Berth: \`berth service describe $SERVICE -o json\` lists $TASKS tasks (desired RUNNING), all \`RUNNING\`. Swarm: \`docker service ps $SERVICE --filter desired-state=running\` lists $TASKS tasks, all \`Running\`.
2. The same, with the killed task no longer among them (Berth: the task whose container carried \`berth.task=ID\`; Swarm: the task of the killed container; Swarm starts the replacement after its restart delay).
3. Berth: \`berth service update $SERVICE --taskdef FAMILY:2 --min-healthy-percent 100 --max-percent 200\` (minimum healthy time left at its default, 5 s), until $TASKS tasks of the new PRIMARY deployment are \`RUNNING\`. Swarm: \`docker service update --update-parallelism $TASKS --update-order start-first --args "sleep 3601"\` (started in the background; update monitor left at its default, 5 s), until $TASKS tasks are desired running, all \`Running\`, none of them a task from before the update. 3b: until \`docker ps\` shows no running container of the old revision / old tasks (Berth stops an old task only once its replacement has stayed RUNNING for the minimum healthy time). 3c: Berth: the PRIMARY deployment is \`COMPLETED\` and no deployment is \`ACTIVE\`; Swarm: the blocking CLI call returned ($verify_desc).
4. Berth: \`berth service describe\` lists $TASKS tasks, all \`RUNNING\`, all on the surviving agent. A one-node swarm has no second node to move tasks to, so there is nothing to measure for Swarm.

Resolution: polls 100 ms apart when a poll is quicker than that. Berth: $(poll_note berth). Swarm: $(poll_note swarm).
EOF
if ((${#NOTES[@]})); then
  echo
  echo "Notes:"
  for n in "${NOTES[@]}"; do echo "- $n"; done
fi
