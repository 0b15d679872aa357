use std::sync::Arc;

use berth_proto::convert::agent_to_wire;
use berth_proto::v1::agents_server::Agents;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use berth_core::{quote, AgentStatus, Outcome};

use super::{page, page_size};
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
        let req = req.into_inner();
        let count = page_size(req.max_results)?;
        // The token is the last agent id of the previous page; anything an agent could
        // not be called was not issued here.
        if !req.next_token.is_empty() {
            berth_core::validate::name("nextToken", &req.next_token).map_err(|_| {
                ApiError::invalid(format!(
                    "nextToken {} was not issued by this API",
                    quote(&req.next_token)
                ))
            })?;
        }
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let now = crate::node::now_ms();
        let after = req.next_token.as_str();
        let agents = s
            .state
            .agents()
            .skip_while(|a| !after.is_empty() && a.id.as_str() <= after)
            .map(|a| agent_to_wire(&s.state, a, now));
        let listed = page(agents, count);
        let next_token = match (listed.more, listed.items.last()) {
            (true, Some(last)) => last.agent_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListAgentsResponse {
            agents: listed.items,
            revision: s.state.revision(),
            next_token,
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
            ApiError::NotFound(format!("agent {} is not registered", quote(&req.agent_id)))
        })?;
        Ok(Response::new(DescribeAgentResponse {
            agent: Some(agent_to_wire(&s.state, agent, crate::node::now_ms())),
            revision: s.state.revision(),
        }))
    }

    async fn drain(
        &self,
        req: Request<DrainAgentRequest>,
    ) -> Result<Response<DrainAgentResponse>, Status> {
        let by = super::caller(&req);
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
                    ApiError::NotFound(format!("agent {} is not registered", quote(&req.agent_id)))
                })?
        };
        if current == AgentStatus::Down {
            return Err(ApiError::FailedPrecondition(format!(
                "agent {} is DOWN; it becomes READY again when it registers",
                quote(&req.agent_id)
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
            .write_by(
                by.as_ref(),
                WriteRequest::SetAgentStatus {
                    agent_id: req.agent_id,
                    status,
                    reason: String::new(),
                },
            )
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
