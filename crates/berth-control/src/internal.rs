//! Services on the raft port besides Raft itself: node-to-node calls and the agent
//! protocol.

use std::sync::Arc;

use berth_core::command::AgentRegistration;
use berth_core::Outcome;
use berth_proto::internal::agent_protocol_server::AgentProtocol;
use berth_proto::internal::node_server::Node as NodeRpc;
use berth_proto::internal::*;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};
use crate::node::{LeaderRequest, LeaderResponse, Node, WriteRequest};

pub fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// This node's own figures.
pub fn local_info(node: &Node, digest: bool) -> NodeInfo {
    let m = node.raft.metrics().borrow().clone();
    let (revision, state_digest) = {
        let s = node.state.read();
        (
            s.state.revision(),
            if digest { s.state.digest() } else { 0 },
        )
    };
    NodeInfo {
        id: node.id,
        raft_address: node.cfg.raft_advertise.clone(),
        api_address: node.cfg.api_advertise.clone(),
        initialized: m.vote.leader_id().term > 0 || m.last_log_index.is_some(),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        state: role(m.state).to_string(),
        leader_id: m.current_leader,
        state_digest,
        revision,
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
    }
}

pub struct NodeService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<NodeInfo>, Status> {
        Ok(Response::new(local_info(
            &self.node,
            req.into_inner().digest,
        )))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let req: LeaderRequest = serde_json::from_slice(&req.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("malformed forwarded request: {e}")))?;
        let result: ApiResult<LeaderResponse> = self.node.handle_as_leader(req).await;
        let json = serde_json::to_vec(&result)
            .map_err(|e| Status::internal(format!("cannot encode answer: {e}")))?;
        Ok(Response::new(ForwardResponse { json }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let (read_log_id, _) = self
            .node
            .raft
            .get_read_log_id()
            .await
            .map_err(|e| Status::unavailable(format!("not able to serve a read index: {e}")))?;
        Ok(Response::new(ReadIndexResponse {
            index: read_log_id.map(|l| l.index).unwrap_or(0),
        }))
    }
}

pub struct AgentProtocolService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl AgentProtocol for AgentProtocolService {
    async fn register(
        &self,
        req: Request<AgentRegisterRequest>,
    ) -> Result<Response<AgentRegisterResponse>, Status> {
        let r = req.into_inner();
        let reg = AgentRegistration {
            id: r.agent_id,
            cpu: r.cpu,
            memory: r.memory,
            attributes: r.attributes.into_iter().collect(),
            address: r.address,
        };
        berth_core::validate::agent(&reg.id, reg.cpu, reg.memory, &reg.attributes)
            .map_err(ApiError::from)?;
        let (revision, outcome) = self.node.write(WriteRequest::RegisterAgent(reg)).await?;
        match outcome {
            Outcome::Agent(a) => Ok(Response::new(AgentRegisterResponse {
                epoch: a.epoch,
                heartbeat_interval_ms: self.node.cfg.heartbeat_interval.as_millis() as u64,
                revision,
            })),
            other => Err(Status::internal(format!(
                "register: unexpected outcome {other:?}"
            ))),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        if r.agent_id.is_empty() {
            return Err(ApiError::invalid("agentId must not be empty").into());
        }
        match self
            .node
            .leader_call(LeaderRequest::Heartbeat {
                agent_id: r.agent_id,
                epoch: r.epoch,
            })
            .await?
        {
            LeaderResponse::Heartbeat { ttl_ms } => Ok(Response::new(HeartbeatResponse { ttl_ms })),
            other => Err(Status::internal(format!(
                "heartbeat: unexpected answer {other:?}"
            ))),
        }
    }
}
