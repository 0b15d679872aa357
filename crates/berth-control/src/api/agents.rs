use std::sync::Arc;

use berth_proto::v1::agents_server::Agents;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use berth_core::{AgentStatus, Outcome};

use crate::error::ApiError;
use crate::node::{Node, WriteRequest};

pub struct AgentsApi {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Agents for AgentsApi {
    async fn list(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.node.read_barrier(req.into_inner().stale).await?;
        let s = self.node.state.read();
        Ok(Response::new(ListAgentsResponse {
            agents: s.state.agents().map(Into::into).collect(),
            revision: s.state.revision(),
        }))
    }

    async fn describe(
        &self,
        req: Request<DescribeAgentRequest>,
    ) -> Result<Response<DescribeAgentResponse>, Status> {
        let req = req.into_inner();
        if req.agent_id.is_empty() {
            return Err(ApiError::invalid("agentId must not be empty").into());
        }
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let agent = s.state.agent(&req.agent_id).ok_or_else(|| {
            ApiError::NotFound(format!("agent {} is not registered", req.agent_id))
        })?;
        Ok(Response::new(DescribeAgentResponse {
            agent: Some(agent.into()),
            revision: s.state.revision(),
        }))
    }

    async fn drain(
        &self,
        req: Request<DrainAgentRequest>,
    ) -> Result<Response<DrainAgentResponse>, Status> {
        let req = req.into_inner();
        if req.agent_id.is_empty() {
            return Err(ApiError::invalid("agentId must not be empty").into());
        }
        self.node.read_barrier(false).await?;
        let current = {
            let s = self.node.state.read();
            s.state
                .agent(&req.agent_id)
                .map(|a| a.status)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("agent {} is not registered", req.agent_id))
                })?
        };
        if current == AgentStatus::Down {
            return Err(ApiError::FailedPrecondition(format!(
                "agent {} is DOWN; it becomes READY again when it registers",
                req.agent_id
            ))
            .into());
        }
        let status = if req.drain {
            AgentStatus::Draining
        } else {
            AgentStatus::Ready
        };
        let (revision, outcome) = self
            .node
            .write(WriteRequest::SetAgentStatus {
                agent_id: req.agent_id,
                status,
                reason: String::new(),
            })
            .await?;
        match &outcome {
            Outcome::Agent(a) => Ok(Response::new(DrainAgentResponse {
                agent: Some(a.into()),
                revision,
            })),
            other => Err(super::unexpected("drain", other)),
        }
    }
}
