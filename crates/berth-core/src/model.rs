//! The objects users and agents talk about. Field names follow ECS (camelCase on the wire
//! of task-definition files) so a Fargate user recognises them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Time only ever enters the state machine inside a
/// command, stamped by the leader that proposed it.
pub type Millis = u64;

/// The Raft log index of the last command applied; every read answer carries one.
pub type Revision = u64;

// ---------------------------------------------------------------------------------------
// Task definitions

/// What a user registers: a family's next revision. Parsed from JSON or YAML by the CLI,
/// carried over gRPC, validated by [`crate::validate::task_definition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionSpec {
    pub family: String,
    /// Task CPU units (1024 = one vCPU). Absent means the smallest size, 256.
    #[serde(default, deserialize_with = "crate::size::de_opt_units")]
    pub cpu: Option<u32>,
    /// Task memory in MiB. Absent means the smallest memory for the CPU size.
    #[serde(default, deserialize_with = "crate::size::de_opt_units")]
    pub memory: Option<u32>,
    /// `bridge` (absent means bridge) or `none`, as ECS's `networkMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    pub container_definitions: Vec<ContainerDefinition>,
    /// Time limits on the definition's tasks; a RunTask or schedule may override them.
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
}

/// Time limits on a task (ECS has none: a stuck task runs, and bills, forever). Seconds;
/// absent fields take the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// From placement to RUNNING (an image pull that hangs, an engine that does not
    /// answer); default 600. Past it the task stops with `TaskFailedToStart`,
    /// "StartTimeout: …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<u32>,
    /// From the containers' start; default none. Past it the containers get SIGTERM, then
    /// SIGKILL after their stopTimeout, and the reason says "Timeout: …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<u32>,
}

impl Timeouts {
    pub fn is_empty(&self) -> bool {
        self.start_timeout.is_none() && self.max_runtime.is_none()
    }
    /// These, with what they leave out taken from `base`.
    pub fn over(self, base: Timeouts) -> Timeouts {
        Timeouts {
            start_timeout: self.start_timeout.or(base.start_timeout),
            max_runtime: self.max_runtime.or(base.max_runtime),
        }
    }
    /// The start timeout in effect, in milliseconds.
    pub fn start_timeout_ms(&self) -> u64 {
        u64::from(
            self.start_timeout
                .unwrap_or(crate::limits::DEFAULT_START_TIMEOUT_S),
        ) * 1000
    }
    pub fn max_runtime_ms(&self) -> Option<u64> {
        self.max_runtime.map(|s| u64::from(s) * 1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// When an essential container exits, the whole task stops. Default true, as in ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Seconds between SIGTERM and SIGKILL. Default 30, at most 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// This container's share of the task's CPU units; unset containers split the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Hard memory limit (MiB) for this container within the task's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// The container's root filesystem is mounted read-only (ECS's
    /// `readonlyRootFilesystem`); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    /// Who the container's processes run as, ECS's `user`: `user`, `uid`, `user:group`,
    /// `uid:gid`, `user:gid` or `uid:group` (names resolved in the image); default the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment variables whose values come from the namespace's secrets (ECS's
    /// `secrets`): resolved for the agent that runs the task, never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secret::SecretRef>,
}

impl ContainerDefinition {
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }
    pub fn stop_timeout_s(&self) -> u32 {
        self.stop_timeout
            .unwrap_or(crate::limits::DEFAULT_STOP_TIMEOUT_S)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u32,
    /// 0 or absent: no fixed host port.
    #[serde(default)]
    pub host_port: u32,
    /// "tcp" (default) or "udp".
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `["CMD", "prog", "arg"]` or `["CMD-SHELL", "shell command"]`, as in ECS.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

impl HealthCheck {
    /// Seconds between checks; ECS's default 30.
    pub fn interval_s(&self) -> u32 {
        self.interval
            .unwrap_or(crate::limits::DEFAULT_HEALTH_INTERVAL_S)
    }
    /// Seconds one check may take; ECS's default 5 (the engine's own would be 30).
    pub fn timeout_s(&self) -> u32 {
        self.timeout
            .unwrap_or(crate::limits::DEFAULT_HEALTH_TIMEOUT_S)
    }
    /// Consecutive failures that make the container UNHEALTHY; ECS's default 3.
    pub fn retries_n(&self) -> u32 {
        self.retries
            .unwrap_or(crate::limits::DEFAULT_HEALTH_RETRIES)
    }
    /// Seconds after start during which failures do not count; default 0.
    pub fn start_period_s(&self) -> u32 {
        self.start_period.unwrap_or(0)
    }
}

/// How a task's containers reach the network. The task's first container owns the network
/// namespace and the others join it, in either mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace on the engine's default bridge, ports mapped on the host.
    #[default]
    Bridge,
    /// A namespace with loopback only: no address, no route, no published ports.
    None,
}

impl NetworkMode {
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s {
            "bridge" => Some(NetworkMode::Bridge),
            "none" => Some(NetworkMode::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    Active,
    Inactive,
}

/// A registered, immutable revision of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    pub revision: u32,
    /// Resolved task size (defaults filled in).
    pub cpu: u32,
    pub memory: u32,
    /// Revisions registered before network modes existed read as bridge.
    #[serde(default)]
    pub network_mode: NetworkMode,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    pub status: TaskDefinitionStatus,
    pub registered_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<Millis>,
}

impl TaskDefinition {
    /// `family:revision`, the name users pass to `task run`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

// ---------------------------------------------------------------------------------------
// Tasks

/// A task's lifecycle. The order of the variants is the order of the lifecycle: a task's
/// `last_status` only ever moves to a later variant (checked at apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Provisioning,
        TaskState::Pending,
        TaskState::Activating,
        TaskState::Running,
        TaskState::Deactivating,
        TaskState::Stopping,
        TaskState::Deprovisioning,
        TaskState::Stopped,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Provisioning => "PROVISIONING",
            TaskState::Pending => "PENDING",
            TaskState::Activating => "ACTIVATING",
            TaskState::Running => "RUNNING",
            TaskState::Deactivating => "DEACTIVATING",
            TaskState::Stopping => "STOPPING",
            TaskState::Deprovisioning => "DEPROVISIONING",
            TaskState::Stopped => "STOPPED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Some(DesiredStatus::Running),
            "STOPPED" => Some(DesiredStatus::Stopped),
            _ => None,
        }
    }
}

impl fmt::Display for DesiredStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task stopped, as ECS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    InfrastructureHealth,
}

impl StopCode {
    pub const ALL: [StopCode; 5] = [
        StopCode::TaskFailedToStart,
        StopCode::EssentialContainerExited,
        StopCode::UserInitiated,
        StopCode::ServiceSchedulerInitiated,
        StopCode::InfrastructureHealth,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            StopCode::TaskFailedToStart => "TaskFailedToStart",
            StopCode::EssentialContainerExited => "EssentialContainerExited",
            StopCode::UserInitiated => "UserInitiated",
            StopCode::ServiceSchedulerInitiated => "ServiceSchedulerInitiated",
            StopCode::InfrastructureHealth => "InfrastructureHealth",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for StopCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-container overrides accepted by RunTask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
}

/// What one container of a task is doing, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    pub last_status: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the engine's health check last said; `None` for a container without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// Ports the engine published for it (ECS's `networkBindings`), reported once running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_bindings: Vec<NetworkBinding>,
}

/// A container port published on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    pub bind_ip: String,
    pub container_port: u32,
    pub host_port: u32,
    pub protocol: String,
}

/// A container's or a task's health, as ECS names it. A container's comes from the engine
/// running its `healthCheck`; a task's is derived from its essential containers: UNHEALTHY if
/// any is, HEALTHY if every one with a check is (and at least one has one), else UNKNOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    /// No check, or a check that has not passed or failed yet (the start period).
    #[default]
    Unknown,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            HealthStatus::Healthy,
            HealthStatus::Unhealthy,
            HealthStatus::Unknown,
        ]
        .into_iter()
        .find(|h| h.as_str().eq_ignore_ascii_case(s))
    }

    /// A task's health from its containers' and whether each is essential.
    pub fn of_task(containers: impl IntoIterator<Item = (bool, Option<HealthStatus>)>) -> Self {
        let mut checked = 0;
        let mut healthy = 0;
        for (essential, h) in containers {
            let Some(h) = h.filter(|_| essential) else {
                continue;
            };
            checked += 1;
            match h {
                HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
                HealthStatus::Healthy => healthy += 1,
                HealthStatus::Unknown => {}
            }
        }
        if checked > 0 && healthy == checked {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a task definition on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub family: String,
    pub revision: u32,
    pub cpu: u32,
    pub memory: u32,
    pub agent_id: String,
    pub last_status: TaskState,
    pub desired_status: DesiredStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ContainerOverride>,
    pub containers: Vec<ContainerState>,
    /// Derived at apply from the containers' health and the definition's essential flags.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// When (the leader's clock) the task last became RUNNING and, where its definition
    /// gives an essential container a health check, HEALTHY; none while it is neither. A
    /// service task counts as healthy once this is its service's minimum healthy time old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Millis>,
    /// Revision of the last change to this task; watchers resume from it.
    pub version: Revision,
    /// Every lifecycle state the task reached, with the time it was reached (agent's
    /// clock for reported states, the leader's for the rest), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// The schedule run this task is an attempt of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::schedule::TaskRun>,
    /// The time limits in effect (the definition's, under the RunTask's overrides).
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
}

/// A task reaching a lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub status: TaskState,
    pub at: Millis,
}

/// What an agent reports about one task: the state it reached and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_id: String,
    pub last_status: TaskState,
    /// When the agent saw the task reach `last_status`.
    pub at: Millis,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

/// A task as its agent needs it: the task and the revision of the definition it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedTask {
    pub task: Task,
    pub definition: TaskDefinition,
}

impl Task {
    pub fn task_definition(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
    /// A task holds its agent's capacity from placement until it is STOPPED.
    pub fn holds_capacity(&self) -> bool {
        self.last_status != TaskState::Stopped
    }
}

// ---------------------------------------------------------------------------------------
// Agents

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    /// Heartbeating and eligible for new tasks.
    Ready,
    /// Heartbeating, keeps its tasks, takes no new ones.
    Draining,
    /// Missed heartbeats past the TTL; its tasks are stopped and its capacity freed.
    Down,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Ready => "READY",
            AgentStatus::Draining => "DRAINING",
            AgentStatus::Down => "DOWN",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker host and what it has to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    /// Capacity offered to tasks: CPU units and MiB.
    pub cpu: u32,
    pub memory: u32,
    /// Capacity held by tasks that are not yet STOPPED (kept in step by `apply`).
    pub used_cpu: u32,
    pub used_memory: u32,
    /// Tasks holding capacity here.
    pub task_count: u32,
    pub attributes: BTreeMap<String, String>,
    pub status: AgentStatus,
    /// Where the agent can be reached (for logs); informative only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub registered_at: Millis,
    /// Bumped by every registration and by being marked DOWN, so a heartbeat, report or
    /// assignment stream from before either is told apart from the current one.
    pub epoch: u64,
    /// When the control plane last marked the agent DOWN; kept after it returns, so an
    /// operator can see that it was gone and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_at: Option<Millis>,
    /// When it last came back from DOWN (registered again); `None` while it is DOWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_at: Option<Millis>,
    /// Set while the agent reports that its container engine does not answer: it takes no
    /// new task and its service tasks are replaced elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_error_since: Option<Millis>,
}

impl Agent {
    /// READY, and its engine answering.
    pub fn accepts_tasks(&self) -> bool {
        self.status == AgentStatus::Ready && self.engine_error.is_none()
    }
    pub fn free_cpu(&self) -> u32 {
        self.cpu.saturating_sub(self.used_cpu)
    }
    pub fn free_memory(&self) -> u32 {
        self.memory.saturating_sub(self.used_memory)
    }
}

/// What RunTask could not place, and why, in ECS's vocabulary (`RESOURCE:MEMORY`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub reason: String,
    pub detail: String,
}

/// Cluster-wide settings, replicated like everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Accept any CPU/memory pair within bounds instead of Fargate's table.
    pub free_sizing: bool,
    /// What usage costs.
    #[serde(default)]
    pub prices: crate::usage::Prices,
}
