use std::sync::Arc;

use berth_core::{quote, Outcome, TaskDefinitionStatus};
use berth_proto::v1::task_definitions_server::TaskDefinitions;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::{page, page_size, unexpected};
use crate::error::ApiError;
use crate::node::{Node, WriteRequest};

pub struct TaskDefinitionsApi {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl TaskDefinitions for TaskDefinitionsApi {
    async fn register(
        &self,
        req: Request<RegisterTaskDefinitionRequest>,
    ) -> Result<Response<RegisterTaskDefinitionResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let spec = req
            .into_inner()
            .task_definition
            .ok_or_else(|| ApiError::invalid("taskDefinition is required"))?;
        let mut spec: berth_core::TaskDefinitionSpec = spec.into();
        spec.family = super::qualify(&ns, "family", &spec.family)?;
        // Shape errors are caught here, before the leader is bothered; the leader checks
        // again against its settings (free sizing).
        berth_core::validate::task_definition(&spec, true).map_err(ApiError::from)?;
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::RegisterTaskDefinition(spec))
            .await?;
        match &outcome {
            Outcome::TaskDefinition(d) => Ok(Response::new(RegisterTaskDefinitionResponse {
                task_definition: Some(d.into()),
                revision,
            })),
            other => Err(unexpected("register", other)),
        }
    }

    async fn describe(
        &self,
        req: Request<DescribeTaskDefinitionRequest>,
    ) -> Result<Response<DescribeTaskDefinitionResponse>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        let (family, rev) = super::definition_ref(&ns, "taskDefinition", &req.task_definition)?;
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let def = s
            .state
            .task_definition(&family, rev)
            .map_err(ApiError::from)?;
        Ok(Response::new(DescribeTaskDefinitionResponse {
            task_definition: Some(def.into()),
            revision: s.state.revision(),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTaskDefinitionsRequest>,
    ) -> Result<Response<ListTaskDefinitionsResponse>, Status> {
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        let count = page_size(req.max_results)?;
        let status = match req.status.to_ascii_uppercase().as_str() {
            "" => None,
            "ACTIVE" => Some(TaskDefinitionStatus::Active),
            "INACTIVE" => Some(TaskDefinitionStatus::Inactive),
            _ => {
                return Err(ApiError::invalid(format!(
                    "status {} must be ACTIVE or INACTIVE",
                    quote(&req.status)
                ))
                .into())
            }
        };
        let after = if req.next_token.is_empty() {
            None
        } else {
            let (f, r) =
                super::definition_ref(&ns, "nextToken", &req.next_token).map_err(|_| {
                    ApiError::invalid(format!(
                        "nextToken {} was not issued by this API",
                        quote(&req.next_token)
                    ))
                })?;
            Some((f, r.unwrap_or(0)))
        };
        self.node.read_barrier(req.stale).await?;
        let s = self.node.state.read();
        let family = if req.family.is_empty() {
            None
        } else {
            Some(super::qualify(&ns, "family", &req.family)?)
        };
        let defs = s
            .state
            .task_definitions(family.as_deref(), status)
            .filter(|d| berth_core::namespace::of(&d.family) == ns)
            .filter(|d| {
                after
                    .as_ref()
                    .is_none_or(|(f, r)| (d.family.as_str(), d.revision) > (f.as_str(), *r))
            });
        let listed = page(defs.map(TaskDefinition::from), count);
        let next_token = match (listed.more, listed.items.last()) {
            (true, Some(last)) => format!("{}:{}", last.family, last.revision),
            _ => String::new(),
        };
        Ok(Response::new(ListTaskDefinitionsResponse {
            task_definitions: listed.items,
            next_token,
            revision: s.state.revision(),
        }))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterTaskDefinitionRequest>,
    ) -> Result<Response<DeregisterTaskDefinitionResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let req = req.into_inner();
        let (family, rev) = super::definition_ref(&ns, "taskDefinition", &req.task_definition)?;
        let revision = rev.ok_or_else(|| {
            ApiError::invalid(format!(
                "taskDefinition {}: deregister needs an explicit revision (family:revision)",
                quote(&req.task_definition)
            ))
        })?;
        let (rev, outcome) = self
            .node
            .write_by(
                by.as_ref(),
                WriteRequest::DeregisterTaskDefinition { family, revision },
            )
            .await?;
        match &outcome {
            Outcome::TaskDefinition(d) => Ok(Response::new(DeregisterTaskDefinitionResponse {
                task_definition: Some(d.into()),
                revision: rev,
            })),
            other => Err(unexpected("deregister", other)),
        }
    }
}
