//! The container runtime: the few Docker Engine calls the agent makes, through bollard, with
//! errors turned into the reasons users read. Everything here is scoped to containers
//! labelled with this agent's id.

use std::collections::HashMap;
use std::time::Duration;

use berth_core::{HealthStatus, NetworkBinding};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerStateStatusEnum, EventMessage};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions,
};
use bollard::Docker;
use tokio_stream::{Stream, StreamExt};

use crate::spec::{ContainerPlan, LABEL_AGENT, LABEL_CONTAINER, LABEL_INDEX, LABEL_TASK};

/// Settings of the runtime; defaults in [`RuntimeOptions::default`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Processes one task may run, split evenly among its containers.
    pub pids_per_task: u32,
    /// Try to pull an image that is missing. Off on machines that can reach no registry, so
    /// a missing image fails at once instead of waiting on DNS or a firewall.
    pub pull: bool,
    /// Longest an image pull may take before the task fails to start.
    pub pull_timeout: Duration,
    /// Longest any other engine call may take to answer (bollard's request timeout).
    pub api_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            pids_per_task: 4096,
            pull: true,
            pull_timeout: Duration::from_secs(300),
            api_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no Docker engine reachable ({0}); start dockerd, or point DOCKER_HOST at its unix socket (unix:///var/run/docker.sock)")]
    Unreachable(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error("docker: {0}: no such container")]
    NotFound(String),
}

impl From<DockerError> for RuntimeError {
    fn from(e: DockerError) -> Self {
        RuntimeError::Docker(message(&e))
    }
}

/// The engine's own words for an error, without bollard's wrapping.
pub fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A task container found on the engine.
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: String,
    pub task_id: String,
    /// The definition's container name.
    pub container: String,
    pub index: usize,
    pub running: bool,
}

/// What an inspect tells about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    /// Created and never started.
    pub created: bool,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    /// The engine's error for a container that failed to start.
    pub error: Option<String>,
    /// What its health check says; `None` without one.
    pub health: Option<HealthStatus>,
    /// Ports published on the host.
    pub bindings: Vec<NetworkBinding>,
}

/// The engine's health status in ECS's words: `starting` is not decided yet.
pub fn health_of(status: &str) -> Option<HealthStatus> {
    match status {
        "healthy" => Some(HealthStatus::Healthy),
        "unhealthy" => Some(HealthStatus::Unhealthy),
        "starting" => Some(HealthStatus::Unknown),
        _ => None,
    }
}

/// Published ports from the engine's `"80/tcp" → [{HostIp, HostPort}]`, in a stable order.
fn bindings_of(ports: Option<bollard::models::PortMap>) -> Vec<NetworkBinding> {
    let mut out = Vec::new();
    for (key, bound) in ports.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u32>() else {
            continue;
        };
        for b in bound.unwrap_or_default() {
            let Some(host_port) = b.host_port.and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            out.push(NetworkBinding {
                bind_ip: b.host_ip.unwrap_or_default(),
                container_port,
                host_port,
                protocol: protocol.to_string(),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.container_port, &a.protocol, &a.bind_ip).cmp(&(
            b.container_port,
            &b.protocol,
            &b.bind_ip,
        ))
    });
    out
}

/// A container event the agent acts on.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub task_id: String,
    /// `die`, `oom`, `start`, `destroy`, `health_status: healthy|unhealthy`.
    pub action: String,
    /// Unix seconds, to resume the event stream after a reconnect.
    pub time: i64,
}

/// A handle on the local engine. Cheap to clone (bollard's client is shared).
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    agent_id: String,
    opts: RuntimeOptions,
    /// CPUs the engine sees: it refuses a CPU limit above them.
    host_cpus: u64,
}

impl Runtime {
    /// Connects to the engine (`DOCKER_HOST` if it names a unix socket, else
    /// `/var/run/docker.sock`), negotiates the API version down to the engine's and checks
    /// it answers.
    pub async fn connect(agent_id: &str, opts: RuntimeOptions) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .with_timeout(opts.api_timeout);
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| RuntimeError::Unreachable("the engine did not answer within 10 s".into()))?
            .map_err(|e| RuntimeError::Unreachable(message(&e)))?;
        let info = docker
            .info()
            .await
            .map_err(|e| RuntimeError::Unreachable(message(&e)))?;
        let host_cpus = info
            .ncpu
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        Ok(Runtime {
            docker,
            agent_id: agent_id.to_string(),
            opts,
            host_cpus,
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.opts
    }

    /// The largest CPU limit the engine accepts: all of its CPUs.
    pub fn max_nano_cpus(&self) -> u64 {
        self.host_cpus * crate::resources::NANO_CPUS_PER_VCPU
    }

    /// The bollard client, for callers (tests) that need more than the agent does.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn agent_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_AGENT}={}", self.agent_id)],
        )])
    }

    /// Every container labelled with this agent's id, running or not.
    pub async fn list_own(&self) -> Result<Vec<Observed>, RuntimeError> {
        self.list(self.agent_filter()).await
    }

    /// This agent's containers of one task.
    pub async fn list_task(&self, task_id: &str) -> Result<Vec<Observed>, RuntimeError> {
        let mut f = self.agent_filter();
        if let Some(labels) = f.get_mut("label") {
            labels.push(format!("{LABEL_TASK}={task_id}"));
        }
        self.list(f).await
    }

    async fn list(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // The filter asked for our label; check again rather than trust it.
                if labels.get(LABEL_AGENT) != Some(&self.agent_id) {
                    return None;
                }
                Some(Observed {
                    id: c.id?,
                    task_id: labels.get(LABEL_TASK)?.clone(),
                    container: labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                    index: labels
                        .get(LABEL_INDEX)
                        .and_then(|i| i.parse().ok())
                        .unwrap_or(usize::MAX),
                    running: matches!(
                        c.state,
                        Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                    ),
                })
            })
            .collect())
    }

    /// Makes `image` present: already there, or pulled (when pulling is on). The error is
    /// the task's stop reason, in ECS's words.
    pub async fn ensure_image(&self, image: &str) -> Result<(), String> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => {
                return Err(format!(
                    "CannotPullContainerError: inspect image \"{image}\": {}",
                    message(&e)
                ))
            }
        }
        if !self.opts.pull {
            return Err(format!(
                "CannotPullContainerError: image \"{image}\" is not present on agent {} and pulling is disabled",
                self.agent_id
            ));
        }
        let (from_image, tag) = split_reference(image);
        tracing::info!(image, "pulling image");
        let pull = async {
            let mut stream = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(from_image.to_string()),
                    tag: tag.map(str::to_string),
                    ..Default::default()
                }),
                None,
                None,
            );
            let mut last_status = String::new();
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| message(&e))?;
                // Progress goes to the agent's log, one line per change of phase.
                if let Some(status) = info.status {
                    if status != last_status {
                        tracing::debug!(image, status = %status, "pull progress");
                        last_status = status;
                    }
                }
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(self.opts.pull_timeout, pull).await {
            Ok(Ok(())) => {
                // A pull that "succeeds" without the image is still a failure.
                self.docker
                    .inspect_image(image)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        format!(
                            "CannotPullContainerError: pull image \"{image}\": {}",
                            message(&e)
                        )
                    })
            }
            Ok(Err(msg)) => Err(format!(
                "CannotPullContainerError: pull image \"{image}\": {msg}"
            )),
            Err(_) => Err(format!(
                "CannotPullContainerError: pull image \"{image}\": no result within {} s",
                self.opts.pull_timeout.as_secs()
            )),
        }
    }

    /// Makes the engine network of a Berth namespace unless it exists. Made once and kept:
    /// networks are not made and removed per task (this engine's network controller is
    /// the part that deadlocks under churn).
    pub async fn ensure_network(&self, name: &str, namespace: &str) -> Result<(), String> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(message(&e)),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            // The engine's, not one agent's: every agent on this engine shares it.
            labels: Some(HashMap::from([(
                "berth.namespace".to_string(),
                namespace.to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(()),
            // Made by another task of the namespace a moment ago.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(message(&e)),
        }
    }

    pub async fn create(&self, plan: &ContainerPlan) -> Result<String, String> {
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(plan.docker_name.clone()),
                    platform: String::new(),
                }),
                plan.body.clone(),
            )
            .await
            .map(|r| r.id)
            .map_err(|e| message(&e))
    }

    pub async fn start(&self, id: &str) -> Result<(), String> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| message(&e))
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let c = self.docker.inspect_container(id, None).await.map_err(|e| {
            if status_code(&e) == Some(404) {
                RuntimeError::NotFound(id.to_string())
            } else {
                e.into()
            }
        })?;
        let state = c.state.unwrap_or_default();
        let status = state.status;
        let health = state
            .health
            .and_then(|h| h.status)
            .and_then(|h| health_of(h.as_ref()));
        let bindings = bindings_of(c.network_settings.and_then(|n| n.ports));
        Ok(ContainerStatus {
            id: c.id.unwrap_or_else(|| id.to_string()),
            created: status == Some(ContainerStateStatusEnum::CREATED),
            running: state.running.unwrap_or(false)
                || status == Some(ContainerStateStatusEnum::RUNNING),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: state.started_at,
            error: state.error.filter(|e| !e.is_empty()),
            health,
            bindings,
        })
    }

    /// Sends a signal. A container that is not running (409) or gone (404) is not an
    /// error: whatever the signal was for has happened.
    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: signal.to_string(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container (and its anonymous volumes), killing it if it still runs. A
    /// container already gone is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            // 409: removal already in progress.
            Err(e) if status_code(&e) == Some(409) && message(&e).contains("in progress") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// This agent's container events (`die`, `oom`, `start`, `destroy`, health changes) from `since` (Unix
    /// seconds) on. The stream lasts until the connection to the engine does.
    pub fn events(
        &self,
        since: Option<i64>,
    ) -> impl Stream<Item = Result<ContainerEvent, RuntimeError>> {
        let mut filters = self.agent_filter();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            // `health_status` matches the engine's `health_status: healthy|unhealthy`.
            vec![
                "die".into(),
                "oom".into(),
                "start".into(),
                "destroy".into(),
                "health_status".into(),
            ],
        );
        self.docker
            .events(Some(EventsOptions {
                since: since.map(|s| s.to_string()),
                until: None,
                filters: Some(filters),
            }))
            .filter_map(|e: Result<EventMessage, DockerError>| match e {
                Err(e) => Some(Err(RuntimeError::from(e))),
                Ok(m) => {
                    let actor = m.actor?;
                    let attrs = actor.attributes.unwrap_or_default();
                    Some(Ok(ContainerEvent {
                        container_id: actor.id?,
                        task_id: attrs.get(LABEL_TASK)?.clone(),
                        action: m.action?,
                        time: m.time.unwrap_or(0),
                    }))
                }
            })
    }

    /// A container's output. `tail` 0 means all of it.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: u32,
    ) -> impl Stream<Item = Result<bollard::container::LogOutput, DockerError>> {
        self.docker.logs(
            id,
            Some(LogsOptions {
                follow,
                stdout: true,
                stderr: true,
                tail: if tail == 0 {
                    "all".to_string()
                } else {
                    tail.to_string()
                },
                ..Default::default()
            }),
        )
    }
}

/// Splits `repo[:tag]` for a pull: the engine pulls every tag of a repository given without
/// one, so an untagged name means `latest`. A digest reference is passed whole.
pub fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Some(&image[last_slash + i + 1..])),
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(
            split_reference("berth/workload:1"),
            ("berth/workload", Some("1"))
        );
        assert_eq!(
            split_reference("reg.local:5000/a/b"),
            ("reg.local:5000/a/b", Some("latest"))
        );
        assert_eq!(
            split_reference("reg.local:5000/a/b:v2"),
            ("reg.local:5000/a/b", Some("v2"))
        );
        assert_eq!(split_reference("a@sha256:00"), ("a@sha256:00", None));
    }
}
