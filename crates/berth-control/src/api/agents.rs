use std::sync::Arc;

use berth_proto::v1::agents_server::Agents;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::node::Node;

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
}
