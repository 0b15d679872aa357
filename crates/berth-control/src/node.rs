//! The control node's shared core: the Raft handle, the applied state, and the two paths
//! every API call takes — to the leader (writes and other leader-only requests) and to a
//! linearizable read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::command::AgentRegistration;
use berth_core::command::RunTaskRequest;
use berth_core::{CommandResult, Revision, Settings, TaskDefinitionSpec};
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
    },
    RegisterAgent(AgentRegistration),
    UpdateSettings(Settings),
    SetAgentStatus {
        agent_id: String,
        status: berth_core::AgentStatus,
        reason: String,
    },
    ReportTasks {
        agent_id: String,
        epoch: u64,
        reports: Vec<berth_core::TaskReport>,
    },
}

impl WriteRequest {
    /// Whether running it twice has the effect of running it once. RunTask qualifies
    /// because every RunTask carries a client token by the time it is forwarded.
    fn retry_safe(&self) -> bool {
        !matches!(self, WriteRequest::RegisterTaskDefinition(_))
    }
}

/// Anything only the leader may answer. Followers forward these over the raft port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderRequest {
    Write(WriteRequest),
    Heartbeat { agent_id: String, epoch: u64 },
    Join { id: NodeId, node: BerthNode },
    Leave { id: NodeId },
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
    /// Leader only: when each agent last heartbeated (wall-clock ms, comparable with the
    /// registration time in the state). In memory by design — heartbeats never go through
    /// Raft; only a status change does.
    pub(crate) heartbeats: Mutex<HashMap<String, u64>>,
}

/// Timeout for one forwarded request. Commits take milliseconds; this bounds a stuck peer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a joining node may take to catch up as a learner before the join gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Node {
    pub(crate) fn new(
        cfg: NodeConfig,
        raft: Raft,
        state: StateHandle,
        shutdown: Shutdown,
        batcher: mpsc::Sender<Pending>,
    ) -> Self {
        Node {
            id: cfg.id,
            cfg,
            raft,
            state,
            shutdown,
            batcher,
            channels: Default::default(),
            heartbeats: Mutex::new(HashMap::new()),
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
    /// Retries across leader changes until `leader_wait` runs out.
    pub async fn leader_call(&self, req: LeaderRequest) -> ApiResult<LeaderResponse> {
        let deadline = Instant::now() + self.cfg.leader_wait;
        let mut last_leader = None;
        let mut pause = Duration::from_millis(20);
        loop {
            let leader = self.current_leader();
            last_leader = leader.or(last_leader);
            let outcome = match leader {
                Some(l) if l == self.id => Some(self.handle_as_leader(req.clone()).await),
                Some(l) => match self.member(l) {
                    Some(node) => self.forward(&node, &req).await,
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

    /// Sends a request to the leader's raft port. `None` means "try again": nothing was
    /// done, or the request is safe to repeat.
    async fn forward(
        &self,
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
        match tokio::time::timeout(limit, client.forward(ForwardRequest { json })).await {
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
                let retry_safe = never_sent
                    || match req {
                        LeaderRequest::Write(w) => w.retry_safe(),
                        _ => true,
                    };
                if retry_safe {
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
            LeaderRequest::Heartbeat { agent_id, epoch } => self.heartbeat(&agent_id, epoch),
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

    fn heartbeat(&self, agent_id: &str, epoch: u64) -> ApiResult<LeaderResponse> {
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
        }
        self.heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent_id.to_string(), now_ms());
        Ok(LeaderResponse::Heartbeat {
            ttl_ms: self.cfg.agent_ttl.as_millis() as u64,
        })
    }

    async fn join(&self, id: NodeId, node: BerthNode) -> ApiResult<LeaderResponse> {
        use openraft::ChangeMembers;
        use std::collections::BTreeSet;
        let already_voter = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id)
        };
        if already_voter {
            return Ok(LeaderResponse::Membership);
        }
        // Learner first: it catches up (by snapshot if the log was compacted) without
        // counting towards the quorum; only then does it become a voter.
        let addr = node.raft_addr.clone();
        match tokio::time::timeout(JOIN_TIMEOUT, self.raft.add_learner(id, node, true)).await {
            Ok(r) => r.map_err(|e| raft_err("add learner", e))?,
            Err(_) => {
                return Err(ApiError::unavailable(format!(
                    "node {id} did not catch up within {JOIN_TIMEOUT:?}; is it running and reachable at {addr}? \
                     It stays a learner until it catches up or is removed with `berth cluster leave {id}`"
                )))
            }
        };
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| raft_err("promote to voter", e))?;
        Ok(LeaderResponse::Membership)
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
    pub async fn read_barrier(&self, stale: bool) -> ApiResult<()> {
        if stale {
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.leader_wait;
        let mut last_leader = None;
        loop {
            let leader = self.current_leader();
            last_leader = leader.or(last_leader);
            let index = match leader {
                Some(l) if l == self.id => {
                    // Bounded like everything else: a leader cut off from the others
                    // cannot confirm itself, and must not hold the reader forever.
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
                        Ok(Ok(_)) => return Ok(()),
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
