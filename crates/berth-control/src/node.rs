//! The control node's shared core: the Raft handle, the applied state, and the two paths
//! every API call takes — to the leader (writes and other leader-only requests) and to a
//! linearizable read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::command::AgentRegistration;
use berth_core::command::RunTaskRequest;
use berth_core::{CommandResult, Revision, TaskDefinitionSpec};
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{ForwardRequest, ReadIndexRequest};
use berth_raft::store::StateHandle;
use berth_raft::{BerthNode, NodeId, Raft};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::batcher::Pending;
use crate::config::NodeConfig;
use crate::error::{ApiError, ApiResult};
use crate::shutdown::Shutdown;

/// A write to the replicated state, as the API received it (before placement and ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    RegisterTaskDefinition(TaskDefinitionSpec),
    DeregisterTaskDefinition {
        family: String,
        revision: u32,
    },
    RunTask(RunTaskRequest),
    StopTask {
        task_id: String,
        reason: String,
        /// The caller's namespace: another's task is answered as missing.
        #[serde(default = "berth_core::namespace::default_name")]
        namespace: String,
    },
    RegisterAgent(AgentRegistration),
    UpdateSettings(SettingsUpdate),
    SetAgentStatus {
        agent_id: String,
        status: berth_core::AgentStatus,
        reason: String,
    },
    /// From the leader's monitor: an agent's engine stopped or resumed answering.
    SetAgentEngine {
        agent_id: String,
        epoch: u64,
        error: Option<String>,
    },
    ReportTasks {
        agent_id: String,
        epoch: u64,
        reports: Vec<berth_core::TaskReport>,
    },
    CreateService(CreateService),
    UpdateService(UpdateService),
    DeleteService {
        name: String,
        force: bool,
    },
    /// From the leader's service scheduler.
    NoteServiceEvent {
        name: String,
        message: String,
    },
    StopServiceTasks {
        service: String,
        task_ids: Vec<String>,
        unhealthy: bool,
    },
    /// From the leader's service scheduler: its clock reached the time a task turns healthy.
    Tick,
    PutScalingPolicy {
        name: String,
        policy: Option<berth_core::scaling::ScalingPolicy>,
    },
    /// From the leader's autoscaler.
    AutoscaleService {
        name: String,
        from: u32,
        to: u32,
        reason: String,
    },
    RecordUtilization {
        agent_id: String,
        epoch: u64,
        windows: Vec<berth_core::utilization::Window>,
    },
    /// The first admin token (only while the cluster has none).
    BootstrapAccessToken(berth_core::access::AccessToken),
    /// A token an admin makes (under `As`).
    CreateAccessToken(berth_core::access::AccessToken),
    RevokeAccessToken {
        accessor: String,
    },
    CreateNamespace {
        name: String,
        quota: berth_core::namespace::Quota,
    },
    SetNamespaceQuota {
        name: String,
        quota: berth_core::namespace::Quota,
    },
    DeleteNamespace {
        name: String,
    },
    /// A secret, sealed by the node that took the call.
    PutSecret {
        name: String,
        sealed: String,
    },
    DeleteSecret {
        name: String,
    },
    /// From the leader's timeout backstop: a task its agent did not stop at its limit.
    StopOverdueTask {
        task_id: String,
        code: berth_core::StopCode,
        reason: String,
    },
    CreateSchedule(Box<berth_core::schedule::ScheduleSpec>),
    UpdateSchedule(Box<berth_core::schedule::ScheduleSpec>),
    SetSchedulePaused {
        name: String,
        paused: bool,
    },
    DeleteSchedule {
        name: String,
    },
    /// From the leader's schedule firing: the times decided, and the launch of the one
    /// run (placed by the batcher like a RunTask).
    FireSchedule {
        fire: Box<berth_core::schedule::ScheduleFire>,
        #[allow(clippy::type_complexity)]
        run: Option<
            Box<(
                u64,
                berth_core::command::RunTaskRequest,
                berth_core::schedule::TaskRun,
            )>,
        >,
    },
    /// From the leader's schedule firing: the next attempt of a failed run.
    RetryScheduleRun(
        Box<(
            berth_core::schedule::TaskRun,
            berth_core::command::RunTaskRequest,
        )>,
    ),
    /// `request`, made by the holder of API token `accessor`: refused here unless that
    /// token is live and its role allows it, and checked again where it applies.
    As {
        accessor: String,
        request: Box<WriteRequest>,
    },
}

/// UpdateSettings: fields not given keep the cluster's (merged by the leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SettingsUpdate {
    pub free_sizing: Option<bool>,
    pub vcpu_hour_nanos: Option<u64>,
    pub gib_hour_nanos: Option<u64>,
}

/// UpdateService as the client asked for it; the leader resolves the task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateService {
    pub name: String,
    pub desired_count: Option<u32>,
    /// "family" or "family:revision".
    pub task_definition: Option<String>,
    pub force_new_deployment: bool,
    pub deployment_configuration: Option<berth_core::service::DeploymentConfiguration>,
}

/// CreateService as the client asked for it; the leader resolves the task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateService {
    pub name: String,
    pub task_definition: String,
    pub desired_count: u32,
    pub client_token: Option<String>,
    pub placement_strategy: Vec<berth_core::command::PlacementStrategy>,
    pub placement_constraints: Vec<berth_core::command::PlacementConstraint>,
    pub deployment_configuration: berth_core::service::DeploymentConfiguration,
}

impl CreateService {
    /// A stable hash of everything but the token (as RunTask's).
    pub fn fingerprint(&self) -> u64 {
        let mut canonical = self.clone();
        canonical.client_token = None;
        berth_core::fingerprint(&canonical)
    }
}

impl WriteRequest {
    /// Whether running it twice has the effect of running it once. RunTask and
    /// CreateService qualify because they carry a client token by the time they are
    /// forwarded; a second delete would find the service already deleted, and a second
    /// forced deployment would replace every task twice.
    fn retry_safe(&self) -> bool {
        match self {
            WriteRequest::RegisterTaskDefinition(_)
            | WriteRequest::DeleteService { .. }
            | WriteRequest::DeleteSchedule { .. } => false,
            WriteRequest::UpdateService(u) => !u.force_new_deployment,
            _ => true,
        }
    }
}

/// Anything only the leader may answer. Followers forward these over the raft port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderRequest {
    Write(WriteRequest),
    Heartbeat {
        agent_id: String,
        epoch: u64,
        #[serde(default)]
        engine_error: Option<String>,
    },
    Join {
        id: NodeId,
        node: BerthNode,
    },
    Leave {
        id: NodeId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderResponse {
    /// The revision the write applied at, and what applying it answered.
    Written {
        revision: Revision,
        result: Box<CommandResult>,
    },
    Heartbeat {
        ttl_ms: u64,
    },
    Membership,
}

/// One control node. Shared by every service through an `Arc`.
pub struct Node {
    pub id: NodeId,
    pub cfg: NodeConfig,
    pub raft: Raft,
    pub state: StateHandle,
    pub shutdown: Shutdown,
    pub(crate) batcher: mpsc::Sender<Pending>,
    /// Channels to peers' raft ports, one per address.
    channels: berth_raft::network::Channels,
    /// Leader only: each agent's last heartbeat, under which registration (epoch) and
    /// when. A monotonic clock, because a step of the wall clock must neither declare
    /// agents DOWN early nor stretch the margin fencing relies on. In memory by design —
    /// heartbeats never go through Raft; only a status change does.
    pub(crate) heartbeats: Mutex<HashMap<String, (u64, Instant)>>,
    /// What each agent's last heartbeat said of its engine (under which epoch); the monitor
    /// writes a difference from the agent's record through Raft.
    pub(crate) engine_reports: Mutex<HashMap<String, (u64, Option<String>)>>,
    /// The recent applied changes as events, for the Events stream.
    pub(crate) events: crate::events::EventLog,
    /// Routes applied changes to the agents' assignment streams, each its own agent's.
    pub(crate) assignments: Arc<crate::assignments::Hub>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Leader only: confirms leadership for linearizable reads, one round for all the
    /// reads waiting when it starts (its own and those followers ask for).
    pub(crate) read_index: Arc<crate::read_index::ReadIndex>,
}

/// Timeout for one forwarded request. Commits take milliseconds; this bounds a stuck peer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a joining node may take to catch up as a learner before the join gives up
/// (it then stays a learner; the same join later promotes it). Below the CLI's 30 s per
/// call, so the caller hears why.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// A learner that has taken no entry at all by then is taken out again.
const JOIN_NO_PROGRESS: Duration = Duration::from_secs(10);
/// A learner is promoted once it is at most this many entries behind the leader (and has
/// everything up to the entry that added it): close enough that, as a voter, it does not
/// hold up commits while it closes the gap.
pub const JOIN_MAX_LAG: u64 = 1_000;
/// How long the joining node has to say who it is (it may have just been started).
const JOIN_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a learner's catch-up ended.
enum CatchUp {
    Done,
    /// It took no entry at all.
    Never,
    /// It has `matched` of the leader's `last`.
    Behind {
        matched: u64,
        last: u64,
    },
}

impl Node {
    pub(crate) fn new(
        cfg: NodeConfig,
        raft: Raft,
        state: StateHandle,
        shutdown: Shutdown,
        batcher: mpsc::Sender<Pending>,
        channels: berth_raft::network::Channels,
    ) -> Self {
        let raft_for_reads = raft.clone();
        Node {
            id: cfg.id,
            cfg,
            raft,
            state: state.clone(),
            shutdown,
            batcher,
            channels,
            heartbeats: Mutex::new(HashMap::new()),
            engine_reports: Mutex::new(HashMap::new()),
            events: crate::events::EventLog::default(),
            assignments: Arc::new(crate::assignments::Hub::new(state.subscribe())),
            metrics: Arc::default(),
            read_index: Arc::new(crate::read_index::ReadIndex::new(move || {
                let raft = raft_for_reads.clone();
                async move {
                    let (read_log_id, _) =
                        raft.get_read_log_id().await.map_err(|e| e.to_string())?;
                    Ok(read_log_id.map(|l| l.index).unwrap_or(0))
                }
            })),
        }
    }

    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    /// How long this node has led without a majority acknowledging it, once that is
    /// longer than `limit`. openraft 0.9 keeps such a leader leading until it hears a
    /// higher term, so without this check it would hold every call it is sent until the
    /// call's own deadline, and keep acknowledging agents' heartbeats while the majority
    /// elects a leader that declares them DOWN and replaces their tasks.
    fn cut_off_longer_than(&self, limit: Duration) -> Option<Duration> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        // None until the first acknowledgement of a new term: not evidence of a cut.
        let since = Duration::from_millis(m.millis_since_quorum_ack?);
        (since > limit).then_some(since)
    }

    /// Cut off past the followers' lease (`election-max`): they may have elected someone
    /// else, so nothing sent here can be relied on to commit.
    pub fn cut_off_for(&self) -> Option<Duration> {
        self.cut_off_longer_than(self.cfg.tuning.election_max)
    }

    /// Heartbeats are refused later than calls, at half the agent TTL: an agent that loses
    /// its acknowledgements fences itself 3.5 s after the last one, and a control plane
    /// whose disks stall for a few seconds must not make every agent stop its tasks. Half
    /// the TTL still leaves the agent time to reach the new leader (or to fence) well
    /// before that leader's post-election grace runs out and it declares agents DOWN.
    fn cut_off_for_heartbeats(&self) -> Option<Duration> {
        self.cut_off_longer_than(self.cfg.agent_ttl / 2)
    }

    fn cut_off(&self, since: Duration) -> ApiError {
        ApiError::unavailable(format!(
            "node {} is the leader, but no majority has acknowledged it for {} ms (is it cut \
             off from the others?); nothing can commit through it — retry through another node",
            self.id,
            since.as_millis()
        ))
    }

    /// The membership's record of a node, if it is a member.
    pub fn member(&self, id: NodeId) -> Option<BerthNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().get_node(&id).cloned()
    }

    pub(crate) fn channel(&self, raft_addr: &str) -> ApiResult<Channel> {
        self.channels
            .get(raft_addr)
            .ok_or_else(|| ApiError::Internal(format!("peer address `{raft_addr}` is not valid")))
    }

    fn no_leader(&self, last: Option<NodeId>) -> ApiError {
        let wait = self.cfg.leader_wait;
        match last.and_then(|l| self.member(l).map(|n| (l, n))) {
            Some((l, n)) => ApiError::unavailable(format!(
                "no leader answered within {wait:?}; the last known leader is node {l} at {} (api {}); \
                 the cluster may have lost its majority — retry, or check `berth cluster status`",
                n.raft_addr, n.api_addr
            )),
            None => ApiError::unavailable(format!(
                "no leader within {wait:?} and none known yet; the cluster may still be forming \
                 (every initial peer must be started once) — retry shortly"
            )),
        }
    }

    /// Runs a leader-only request on the leader, wherever it is: locally, or forwarded.
    /// Retries across leader changes until `leader_wait` runs out, or the node stops: a
    /// call left waiting for a leader held a graceful stop for the whole leader wait (5 s,
    /// and past `docker stop`'s grace into a SIGKILL when calls kept coming).
    pub async fn leader_call(&self, req: LeaderRequest) -> ApiResult<LeaderResponse> {
        tokio::select! {
            r = self.leader_call_until_stopped(req) => r,
            _ = self.shutdown.wait() => Err(ApiError::unavailable(
                "this node is shutting down; the call may or may not have taken effect — \
                 retry through another node (a RunTask with the same clientToken)",
            )),
        }
    }

    async fn leader_call_until_stopped(&self, req: LeaderRequest) -> ApiResult<LeaderResponse> {
        let deadline = Instant::now() + self.cfg.leader_wait;
        let mut last_leader = None;
        let mut pause = Duration::from_millis(20);
        loop {
            let leader = self.current_leader();
            last_leader = leader.or(last_leader);
            let outcome = match leader {
                Some(l) if l == self.id => Some(self.handle_as_leader(req.clone()).await),
                Some(l) => match self.member(l) {
                    Some(node) => self.forward(l, &node, &req).await,
                    None => None,
                },
                None => None,
            };
            match outcome {
                Some(Err(ApiError::NotLeader { leader })) => last_leader = leader.or(last_leader),
                Some(other) => return other,
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader(last_leader));
            }
            self.leader_change_or(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Waits until the known leader changes or `pause` passes, whichever is first: a
    /// request waiting out an election should go the moment a leader is known.
    async fn leader_change_or(&self, pause: Duration) {
        let mut m = self.raft.metrics();
        let before = m.borrow().current_leader;
        let _ = tokio::time::timeout(
            pause,
            m.wait_for(|x| x.current_leader != before && x.current_leader.is_some()),
        )
        .await;
    }

    /// Completes once this node knows of a leader other than `old`.
    async fn leader_replaced(&self, old: NodeId) {
        let mut m = self.raft.metrics();
        let _ = m
            .wait_for(|x| x.current_leader.is_some_and(|l| l != old))
            .await;
    }

    /// Sends a request to the leader's raft port. `None` means "try again": nothing was
    /// done, or the request is safe to repeat.
    async fn forward(
        &self,
        leader_id: NodeId,
        leader: &BerthNode,
        req: &LeaderRequest,
    ) -> Option<ApiResult<LeaderResponse>> {
        let json = match serde_json::to_vec(req) {
            Ok(j) => j,
            Err(e) => {
                return Some(Err(ApiError::Internal(format!(
                    "cannot encode request: {e}"
                ))))
            }
        };
        let channel = match self.channel(&leader.raft_addr) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let mut client = NodeClient::new(channel);
        let limit = match req {
            LeaderRequest::Join { .. } => JOIN_TIMEOUT + FORWARD_TIMEOUT,
            _ => FORWARD_TIMEOUT,
        };
        let retry_safe = match req {
            LeaderRequest::Write(w) => w.retry_safe(),
            _ => true,
        };
        let call = tokio::time::timeout(limit, client.forward(ForwardRequest { json }));
        let answer = if retry_safe {
            // A leader that was cut off or died may hold the call until its deadline; once
            // another leader is known, a call that is safe to repeat goes there instead.
            tokio::select! {
                a = call => a,
                _ = self.leader_replaced(leader_id) => {
                    tracing::debug!(old = leader_id, "the leader changed while a forwarded call waited; sending it to the new one");
                    return None;
                }
            }
        } else {
            call.await
        };
        match answer {
            Ok(Ok(resp)) => {
                match serde_json::from_slice::<ApiResult<LeaderResponse>>(&resp.into_inner().json) {
                    Ok(r) => Some(r),
                    Err(e) => Some(Err(ApiError::Internal(format!(
                        "malformed answer from the leader: {e}"
                    )))),
                }
            }
            failure => {
                let never_sent = matches!(&failure, Ok(Err(s)) if connect_failed(s));
                if retry_safe || never_sent {
                    tracing::debug!(?failure, leader = %leader.raft_addr, "forward failed; retrying");
                    None
                } else {
                    Some(Err(ApiError::unavailable(format!(
                        "the leader at {} did not confirm the write ({}); it may or may not have \
                         been applied — check before retrying",
                        leader.raft_addr,
                        match failure {
                            Ok(Err(s)) => s.message().to_string(),
                            _ => "timed out".to_string(),
                        }
                    ))))
                }
            }
        }
    }

    /// The leader's side of a leader-only request (also what a forwarded request runs).
    pub async fn handle_as_leader(&self, req: LeaderRequest) -> ApiResult<LeaderResponse> {
        if !self.is_leader() {
            return Err(ApiError::NotLeader {
                leader: self.current_leader(),
            });
        }
        // Fail at once: the caller can reach the majority through another node.
        let cut_off = match req {
            LeaderRequest::Heartbeat { .. } => self.cut_off_for_heartbeats(),
            _ => self.cut_off_for(),
        };
        if let Some(since) = cut_off {
            return Err(self.cut_off(since));
        }
        match req {
            LeaderRequest::Write(w) => {
                let (tx, rx) = oneshot::channel();
                self.batcher
                    .send(Pending { req: w, reply: tx })
                    .await
                    .map_err(|_| ApiError::unavailable("this node is shutting down"))?;
                let (revision, result) = rx
                    .await
                    .map_err(|_| ApiError::unavailable("this node is shutting down"))??;
                Ok(LeaderResponse::Written {
                    revision,
                    result: Box::new(result),
                })
            }
            LeaderRequest::Heartbeat {
                agent_id,
                epoch,
                engine_error,
            } => self.heartbeat(&agent_id, epoch, engine_error),
            LeaderRequest::Join { id, node } => self.join(id, node).await,
            LeaderRequest::Leave { id } => self.leave(id).await,
        }
    }

    /// Submits a write wherever the leader is, and returns what it answered.
    pub async fn write(&self, req: WriteRequest) -> ApiResult<(Revision, berth_core::Outcome)> {
        match self.leader_call(LeaderRequest::Write(req)).await? {
            LeaderResponse::Written { revision, result } => Ok((revision, (*result)?)),
            other => Err(ApiError::Internal(format!(
                "unexpected answer to a write: {other:?}"
            ))),
        }
    }

    fn heartbeat(
        &self,
        agent_id: &str,
        epoch: u64,
        engine_error: Option<String>,
    ) -> ApiResult<LeaderResponse> {
        {
            let s = self.state.read();
            let agent = s.state.agent(agent_id).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "agent {} is not registered; register first",
                    berth_core::quote(agent_id)
                ))
            })?;
            if agent.epoch != epoch {
                return Err(ApiError::FailedPrecondition(format!(
                    "agent {agent_id}: heartbeat carries registration {epoch}, the current one is {}; re-register",
                    agent.epoch
                )));
            }
            // Marking an agent DOWN retires its epoch, so this only catches a state written
            // before that rule: such an agent must register again to come back.
            if agent.status == berth_core::AgentStatus::Down {
                return Err(ApiError::FailedPrecondition(format!(
                    "agent {agent_id} was marked DOWN; re-register to become READY again"
                )));
            }
        }
        self.heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent_id.to_string(), (epoch, Instant::now()));
        self.engine_reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent_id.to_string(), (epoch, engine_error));
        Ok(LeaderResponse::Heartbeat {
            ttl_ms: self.cfg.agent_ttl.as_millis() as u64,
        })
    }

    /// Adds a node as a learner, waits until it has caught up, then makes it a voter. A
    /// node that does not answer, answers under another id, or does not catch up never
    /// becomes a voter: one would raise the quorum and cost the cluster a failure it could
    /// otherwise survive.
    async fn join(&self, id: NodeId, node: BerthNode) -> ApiResult<LeaderResponse> {
        use openraft::ChangeMembers;
        use std::collections::BTreeSet;
        let metrics = self.raft.metrics();
        let already_voter = metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        if already_voter {
            return Ok(LeaderResponse::Membership);
        }
        let addr = node.raft_addr.clone();
        self.check_joining_node(id, &addr).await?;
        // Learner first: it catches up (by snapshot if the log was compacted) without
        // counting towards the quorum; only then does it become a voter.
        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| raft_err("add learner", e))?;
        let joined_at = added.log_id.index;
        match self.wait_caught_up(id, joined_at).await {
            CatchUp::Done => {}
            CatchUp::Never => {
                // It took nothing: take it out again rather than leave the leader
                // replicating to a node that cannot follow.
                if let Err(e) = self
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                {
                    tracing::warn!(node = id, error = %e, "could not remove a learner that never caught up");
                }
                return Err(ApiError::FailedPrecondition(format!(
                    "node {id} at {addr} answered but took none of the log within {JOIN_NO_PROGRESS:?}; \
                     it was removed again and the voters are unchanged — check its log and that it \
                     can reach this cluster's raft addresses"
                )));
            }
            CatchUp::Behind { matched, last } => {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {id} at {addr} did not catch up within {JOIN_TIMEOUT:?} (it has entry \
                     {matched} of {last}); it stays a learner, which counts for no quorum, and \
                     the voters are unchanged — run the same join again to promote it once it \
                     has caught up, or remove it with `berth cluster leave {id}`"
                )));
            }
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| raft_err("promote to voter", e))?;
        Ok(LeaderResponse::Membership)
    }

    /// Asks the joining node who it is before it goes into the membership: a typo in an
    /// address must cost nothing.
    async fn check_joining_node(&self, id: NodeId, addr: &str) -> ApiResult<()> {
        let mut client = NodeClient::new(self.channel(addr)?);
        // A node started a moment ago may not listen yet: ask again for a few seconds.
        let deadline = Instant::now() + JOIN_PROBE_TIMEOUT;
        let info = loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(1),
                client.info(berth_proto::internal::InfoRequest { digest: false }),
            )
            .await;
            let why = match answer {
                Ok(Ok(r)) => break r.into_inner(),
                Ok(Err(s)) if s.code() != tonic::Code::Unavailable => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "what answers at {addr} is not a Berth control node's raft port ({}); \
                         nothing was changed",
                        s.message()
                    )))
                }
                Ok(Err(s)) => s.message().to_string(),
                Err(_) => "no answer".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ApiError::FailedPrecondition(format!(
                    "no Berth control node answered at {addr} within {JOIN_PROBE_TIMEOUT:?} ({why}); \
                     start `berth control --id {id}` with that raft address first — nothing was changed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if info.id != id {
            return Err(ApiError::FailedPrecondition(format!(
                "the control node at {addr} is node {}, not node {id}; nothing was changed",
                info.id
            )));
        }
        if let Some(other) = info.leader_id.filter(|l| *l != self.id) {
            if info.state == "leader" || self.member(other).is_none() {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {id} at {addr} belongs to another cluster (its leader is node {other}); \
                     stop it and empty its data directory to join it here — nothing was changed"
                )));
            }
        }
        Ok(())
    }

    /// Waits until learner `id` holds every entry up to `joined_at` (the one that added
    /// it) and is within `JOIN_MAX_LAG` entries of this leader's log.
    async fn wait_caught_up(&self, id: NodeId, joined_at: u64) -> CatchUp {
        let started = Instant::now();
        let mut metrics = self.raft.metrics();
        loop {
            let (matched, last) = {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                (matched, m.last_log_index.unwrap_or(0))
            };
            if let Some(matched) = matched {
                if matched >= joined_at && last.saturating_sub(matched) <= JOIN_MAX_LAG {
                    return CatchUp::Done;
                }
            }
            let waited = started.elapsed();
            if matched.is_none() && waited >= JOIN_NO_PROGRESS {
                return CatchUp::Never;
            }
            if waited >= JOIN_TIMEOUT {
                return CatchUp::Behind {
                    matched: matched.unwrap_or(0),
                    last,
                };
            }
            let left = JOIN_TIMEOUT
                .saturating_sub(waited)
                .min(Duration::from_millis(500));
            let _ = tokio::time::timeout(left, metrics.changed()).await;
        }
    }

    async fn leave(&self, id: NodeId) -> ApiResult<LeaderResponse> {
        use openraft::ChangeMembers;
        use std::collections::BTreeSet;
        let (is_voter, is_member, voters) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            (
                mem.voter_ids().any(|v| v == id),
                mem.get_node(&id).is_some(),
                mem.voter_ids().count(),
            )
        };
        if !is_member {
            return Err(ApiError::NotFound(format!(
                "node {id} is not a member of the cluster"
            )));
        }
        if is_voter && voters <= 1 {
            return Err(ApiError::FailedPrecondition(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| raft_err("remove member", e))?;
        Ok(LeaderResponse::Membership)
    }

    /// Waits until this node's state reflects every write acknowledged before the call
    /// (leader read-index; followers ask the leader for it). `stale` skips the wait.
    ///
    /// An API call's token is then checked again, on the state the call will read: the
    /// gate checked it on whatever this node had applied, and a revocation acknowledged
    /// before the call must refuse it here too.
    pub async fn read_barrier(&self, stale: bool) -> ApiResult<()> {
        if !stale {
            tokio::select! {
                r = self.read_barrier_until_stopped() => r?,
                _ = self.shutdown.wait() => return Err(ApiError::unavailable(
                    "this node is shutting down; retry through another node",
                )),
            }
        }
        if let Ok((accessor, need, ns)) = crate::auth::CALLER.try_with(|c| c.clone()) {
            let s = self.state.read();
            let token = s.state.authorize(&accessor, need)?;
            crate::auth::check_namespace(token, &ns)?;
        }
        Ok(())
    }

    /// Submits a write made by `caller` (an API call's token, when the cluster takes
    /// tokens): it applies only if that token allows it at its place in the log.
    pub async fn write_by(
        &self,
        caller: Option<&crate::auth::Caller>,
        req: WriteRequest,
    ) -> ApiResult<(Revision, berth_core::Outcome)> {
        match caller {
            None => self.write(req).await,
            Some(c) => {
                self.write(WriteRequest::As {
                    accessor: c.accessor.clone(),
                    request: Box::new(req),
                })
                .await
            }
        }
    }

    async fn read_barrier_until_stopped(&self) -> ApiResult<()> {
        let deadline = Instant::now() + self.cfg.leader_wait;
        let mut last_leader = None;
        loop {
            let leader = self.current_leader();
            last_leader = leader.or(last_leader);
            let index = match leader {
                Some(l) if l == self.id => {
                    if let Some(since) = self.cut_off_for() {
                        return Err(self.cut_off(since));
                    }
                    // Bounded like everything else: a leader cut off from the others
                    // cannot confirm itself, and must not hold the reader forever.
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.read_index.read_index()).await {
                        Ok(Ok(index)) => Some(index),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "read index as leader failed");
                            None
                        }
                        Err(_) => None,
                    }
                }
                Some(l) => match self.member(l) {
                    Some(node) => self.remote_read_index(&node).await,
                    None => None,
                },
                None => None,
            };
            if let Some(index) = index {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                return self
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        ApiError::unavailable(format!(
                            "this node could not catch up with the leader: {e}"
                        ))
                    });
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader(last_leader));
            }
            self.leader_change_or(Duration::from_millis(50)).await;
        }
    }

    async fn remote_read_index(&self, leader: &BerthNode) -> Option<u64> {
        let channel = self.channel(&leader.raft_addr).ok()?;
        let mut client = NodeClient::new(channel);
        match tokio::time::timeout(
            Duration::from_secs(2),
            client.read_index(ReadIndexRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => Some(r.into_inner().index),
            _ => None,
        }
    }
}

/// The connection to the peer was never made, so the request cannot have run there.
fn connect_failed(s: &tonic::Status) -> bool {
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    let m = s.message().to_ascii_lowercase();
    m.contains("connect") || m.contains("connection refused")
}

pub(crate) fn raft_err(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("{what}: {e}"))
}

/// Wall-clock time for the state's timestamps (what users read); never for timeouts.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
