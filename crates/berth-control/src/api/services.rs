use std::sync::Arc;

use berth_core::limits::MAX_DESCRIBE_SERVICES;
use berth_core::service::DeploymentConfiguration;
use berth_core::{quote, ClusterState, Outcome, ServiceStatus};
use berth_proto::convert::{
    constraints_from_wire, deployment_configuration_from_wire, service_to_wire,
    strategies_from_wire, ServiceView,
};
use berth_proto::v1::services_server::Services;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::{page, page_size, unexpected};
use crate::error::ApiError;
use crate::node::{CreateService, Node, UpdateService, WriteRequest};

pub struct ServicesApi {
    pub node: Arc<Node>,
}

/// A service as the API shows it, its counts taken from its live tasks; `describe` adds
/// its events and its tasks with their endpoints.
fn wire(state: &ClusterState, s: &berth_core::Service, describe: bool) -> berth_proto::v1::Service {
    let per_deployment = state.deployment_counts(&s.name);
    let running = per_deployment.values().map(|c| c.running).sum();
    let pending = per_deployment.values().map(|c| c.pending).sum();
    let tasks = if describe {
        state
            .service_tasks(&s.name)
            .map(|t| ServiceTask {
                task_id: t.id.clone(),
                agent_id: t.agent_id.clone(),
                deployment_id: t.started_by.clone(),
                last_status: t.last_status.as_str().into(),
                health_status: t.health_status.as_str().into(),
                endpoints: endpoints(state, t),
            })
            .collect()
    } else {
        Vec::new()
    };
    service_to_wire(
        s,
        ServiceView {
            running,
            pending,
            per_deployment: &per_deployment,
            events: describe,
            tasks,
        },
    )
}

/// `host:port` of every port the task's containers published, the host taken from the
/// agent's address (where it serves logs, so reachable from the control plane).
fn endpoints(state: &ClusterState, t: &berth_core::Task) -> Vec<String> {
    let host = state
        .agent(&t.agent_id)
        .map(|a| agent_host(&a.address).to_string())
        .unwrap_or_default();
    t.containers
        .iter()
        .flat_map(|c| &c.network_bindings)
        // One endpoint per port: the engine may bind it on IPv4 and IPv6 alike.
        .filter(|b| !b.bind_ip.contains(':'))
        .map(|b| {
            let host = if host.is_empty() {
                b.bind_ip.as_str()
            } else {
                host.as_str()
            };
            format!("{host}:{}", b.host_port)
        })
        .collect()
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
fn agent_host(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    }
}

/// A user's service name, checked, as the state names it in namespace `ns`.
fn service_name(ns: &str, field: &str, name: &str) -> Result<String, ApiError> {
    berth_core::validate::name(field, name)?;
    super::qualify(ns, field, name)
}

/// A user's `family[:revision]`, its family qualified by namespace `ns`.
fn definition(ns: &str, r: &str) -> Result<String, ApiError> {
    let (family, revision) = super::definition_ref(ns, "taskDefinition", r)?;
    Ok(match revision {
        Some(rev) => format!("{family}:{rev}"),
        None => family,
    })
}

impl ServicesApi {
    /// The answer to a write that returns a service, with its counts as of the applied
    /// state.
    fn answer(
        &self,
        outcome: &Outcome,
        what: &str,
    ) -> Result<(berth_proto::v1::Service, u64), Status> {
        match outcome {
            Outcome::Service(svc) => {
                let s = self.node.state.read();
                Ok((wire(&s.state, svc, true), s.state.revision()))
            }
            other => Err(unexpected(what, other)),
        }
    }
}

#[tonic::async_trait]
impl Services for ServicesApi {
    async fn create(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let name = service_name(&ns, "serviceName", &r.service_name)?;
        let desired_count =
            berth_core::service::desired_count(r.desired_count).map_err(ApiError::from)?;
        if r.task_definition.is_empty() {
            return Err(ApiError::invalid(
                "taskDefinition is required (family or family:revision)",
            )
            .into());
        }
        let mut placement_strategy = strategies_from_wire(r.placement_strategy);
        if placement_strategy.is_empty() {
            // Services keep running through the loss of a zone, then pack what is left.
            placement_strategy = vec![
                berth_core::command::PlacementStrategy {
                    kind: "spread".into(),
                    field: "attribute:zone".into(),
                },
                berth_core::command::PlacementStrategy {
                    kind: "binpack".into(),
                    field: "memory".into(),
                },
            ];
        }
        let create = CreateService {
            name,
            task_definition: definition(&ns, &r.task_definition)?,
            desired_count,
            // A token from here on, so that this node may retry across a leader change
            // and get the service it created rather than ALREADY_EXISTS.
            client_token: Some(if r.client_token.is_empty() {
                format!("auto-{}", crate::batcher::new_task_id())
            } else {
                r.client_token
            }),
            placement_strategy,
            placement_constraints: constraints_from_wire(r.placement_constraints),
            deployment_configuration: deployment_configuration_from_wire(
                r.deployment_configuration,
                DeploymentConfiguration::default(),
            ),
        };
        let (_, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::CreateService(create))
            .await?;
        let (service, revision) = self.answer(&outcome, "create service")?;
        tracing::info!(service = %service.service_name, revision, "service created");
        Ok(Response::new(CreateServiceResponse {
            service: Some(service),
            revision,
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let name = service_name(&ns, "service", &r.service)?;
        let task_definition = r
            .task_definition
            .as_deref()
            .map(|t| definition(&ns, t))
            .transpose()?;
        let desired_count = match r.desired_count {
            Some(n) => Some(berth_core::service::desired_count(n).map_err(ApiError::from)?),
            None => None,
        };
        if desired_count.is_none()
            && r.task_definition.is_none()
            && !r.force_new_deployment
            && r.deployment_configuration.is_none()
        {
            return Err(ApiError::invalid(
                "nothing to update: give desiredCount, taskDefinition, forceNewDeployment or \
                 deploymentConfiguration",
            )
            .into());
        }
        // Fields not given keep the service's; the state machine checks the result.
        let deployment_configuration = match r.deployment_configuration {
            None => None,
            Some(c) => {
                let s = self.node.state.read();
                let base = s
                    .state
                    .service(&name)
                    .map(|svc| svc.deployment_configuration)
                    .unwrap_or_default();
                Some(deployment_configuration_from_wire(Some(c), base))
            }
        };
        let (_, outcome) = self
            .node
            .write_by(
                by.as_ref(),
                WriteRequest::UpdateService(UpdateService {
                    name,
                    desired_count,
                    task_definition,
                    force_new_deployment: r.force_new_deployment,
                    deployment_configuration,
                }),
            )
            .await?;
        let (service, revision) = self.answer(&outcome, "update service")?;
        tracing::info!(service = %service.service_name, revision, "service updated");
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service),
            revision,
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteServiceRequest>,
    ) -> Result<Response<DeleteServiceResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let name = service_name(&ns, "service", &r.service)?;
        let (_, outcome) = self
            .node
            .write_by(
                by.as_ref(),
                WriteRequest::DeleteService {
                    name,
                    force: r.force,
                },
            )
            .await?;
        let (service, revision) = self.answer(&outcome, "delete service")?;
        tracing::info!(service = %service.service_name, revision, "service deleted");
        Ok(Response::new(DeleteServiceResponse {
            service: Some(service),
            revision,
        }))
    }

    async fn put_scaling_policy(
        &self,
        req: Request<PutScalingPolicyRequest>,
    ) -> Result<Response<PutScalingPolicyResponse>, Status> {
        let by = super::caller(&req);
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let name = service_name(&ns, "serviceName", &r.service_name)?;
        let policy = r
            .policy
            .map(berth_proto::convert::scaling_policy_from_wire)
            .transpose()
            .map_err(ApiError::from)?;
        let (_, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::PutScalingPolicy { name, policy })
            .await?;
        let (service, revision) = self.answer(&outcome, "put scaling policy")?;
        tracing::info!(service = %service.service_name, revision, "service autoscaling set");
        Ok(Response::new(PutScalingPolicyResponse {
            service: Some(service),
            revision,
        }))
    }

    async fn describe(
        &self,
        req: Request<DescribeServicesRequest>,
    ) -> Result<Response<DescribeServicesResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        if r.services.is_empty() || r.services.len() > MAX_DESCRIBE_SERVICES {
            return Err(ApiError::invalid(format!(
                "services has {} names; give 1..={MAX_DESCRIBE_SERVICES}",
                r.services.len()
            ))
            .into());
        }
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for name in &r.services {
            // A name with `/` names no service of this namespace: missing, like any other.
            let found = berth_core::namespace::qualify(&ns, "services", name)
                .ok()
                .and_then(|q| s.state.service(&q));
            match found {
                Some(svc) => services.push(wire(&s.state, svc, true)),
                None => failures.push(Failure {
                    reason: "MISSING".into(),
                    detail: format!("service {} does not exist", quote(name)),
                    arn: berth_core::quote::prefix(name).to_string(),
                }),
            }
        }
        Ok(Response::new(DescribeServicesResponse {
            services,
            failures,
            revision: s.state.revision(),
        }))
    }

    async fn list(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let ns = super::namespace(&req)?;
        let r = req.into_inner();
        let count = page_size(r.max_results)?;
        let after = if r.next_token.is_empty() {
            String::new()
        } else {
            service_name(&ns, "nextToken", &r.next_token)?
        };
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        let items = s
            .state
            .services()
            .filter(|svc| berth_core::namespace::of(&svc.name) == ns)
            .filter(|svc| svc.name > after)
            .filter(|svc| r.include_inactive || svc.status != ServiceStatus::Inactive)
            .map(|svc| wire(&s.state, svc, false));
        let p = page(items, count);
        let next_token = if p.more {
            p.items
                .last()
                .map(|x| x.service_name.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListServicesResponse {
            services: p.items,
            next_token,
            revision: s.state.revision(),
        }))
    }
}
