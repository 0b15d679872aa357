use std::sync::Arc;

use berth_core::namespace::{self as ns, Quota};
use berth_core::{ClusterState, Outcome};
use berth_proto::v1::namespaces_server::Namespaces;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::error::ApiResult;
use crate::node::{Node, WriteRequest};

pub struct NamespacesApi {
    pub node: Arc<Node>,
}

fn quota_from_wire(q: Option<NamespaceQuota>) -> Quota {
    let q = q.unwrap_or_default();
    Quota {
        cpu: q.cpu,
        memory: q.memory,
        tasks: q.tasks,
    }
}

fn to_wire(state: &ClusterState, n: &ns::Namespace) -> Namespace {
    let used = state.namespace_use(&n.name);
    Namespace {
        name: n.name.clone(),
        quota: Some(NamespaceQuota {
            cpu: n.quota.cpu,
            memory: n.quota.memory,
            tasks: n.quota.tasks,
        }),
        used_cpu: used.cpu,
        used_memory: used.memory,
        used_tasks: used.tasks,
        created_at_ms: n.created_at,
    }
}

impl NamespacesApi {
    async fn write(
        &self,
        by: Option<crate::auth::Caller>,
        req: WriteRequest,
    ) -> Result<Response<NamespaceResponse>, Status> {
        let (revision, outcome) = self.node.write_by(by.as_ref(), req).await?;
        let Outcome::Namespace(n) = outcome else {
            return Err(super::unexpected("namespace", &outcome));
        };
        let s = self.node.state.read();
        Ok(Response::new(NamespaceResponse {
            namespace: Some(to_wire(&s.state, &n)),
            revision,
        }))
    }
}

fn name(n: &str) -> ApiResult<String> {
    ns::check_name("name", n)?;
    Ok(n.to_string())
}

#[tonic::async_trait]
impl Namespaces for NamespacesApi {
    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<NamespaceResponse>, Status> {
        let by = super::caller(&req);
        let r = req.into_inner();
        let name = name(&r.name)?;
        tracing::info!(namespace = %name, "creating namespace");
        self.write(
            by,
            WriteRequest::CreateNamespace {
                name,
                quota: quota_from_wire(r.quota),
            },
        )
        .await
    }

    async fn list(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        // A token sees the namespaces it may use, and nothing of the others.
        let token = caller.and_then(|c| s.state.access_token(&c.accessor).cloned());
        let namespaces = s
            .state
            .namespaces()
            .iter()
            .filter(|n| token.as_ref().is_none_or(|t| t.allows_namespace(&n.name)))
            .map(|n| to_wire(&s.state, n))
            .collect();
        Ok(Response::new(ListNamespacesResponse {
            namespaces,
            revision: s.state.revision(),
        }))
    }

    async fn set_quota(
        &self,
        req: Request<SetNamespaceQuotaRequest>,
    ) -> Result<Response<NamespaceResponse>, Status> {
        let by = super::caller(&req);
        let r = req.into_inner();
        let name = name(&r.name)?;
        self.write(
            by,
            WriteRequest::SetNamespaceQuota {
                name,
                quota: quota_from_wire(r.quota),
            },
        )
        .await
    }

    async fn delete(
        &self,
        req: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<NamespaceResponse>, Status> {
        let by = super::caller(&req);
        let name = name(&req.into_inner().name)?;
        self.write(by, WriteRequest::DeleteNamespace { name }).await
    }
}
