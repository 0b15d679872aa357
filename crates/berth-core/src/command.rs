//! What goes through Raft: batches of commands, and what applying each one answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::*;
use crate::service::{Service, ServiceCreate, ServiceUpdate};

/// One Raft entry's payload. The leader groups concurrent writes into one batch (group
/// commit) and stamps it with its clock; `apply` never reads a clock of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub now: Millis,
    pub commands: Vec<Command>,
}

/// A state change, fully decided by the proposer: ids are generated and placements chosen
/// before the command enters the log, so applying it is deterministic. `apply` still
/// re-checks every invariant (capacity above all) against the state it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterTaskDefinition {
        spec: TaskDefinitionSpec,
    },
    DeregisterTaskDefinition {
        family: String,
        revision: u32,
    },
    RunTasks(RunTasks),
    StopTask {
        task_id: String,
        reason: String,
        code: StopCode,
        /// Stops the task only if it belongs to this namespace (the caller's); None for
        /// the cluster's own stops.
        #[serde(default)]
        namespace: Option<String>,
    },
    RegisterAgent(AgentRegistration),
    SetAgentStatus {
        agent_id: String,
        status: AgentStatus,
        reason: String,
    },
    UpdateSettings(Settings),
    /// An agent's container engine stopped answering (`error` set) or answers again.
    SetAgentEngine {
        agent_id: String,
        epoch: u64,
        error: Option<String>,
    },
    /// State changes an agent observed on its tasks, batched.
    ReportTasks {
        agent_id: String,
        epoch: u64,
        reports: Vec<TaskReport>,
    },
    CreateService(ServiceCreate),
    UpdateService(ServiceUpdate),
    DeleteService {
        name: String,
        force: bool,
    },
    /// Something the leader's service scheduler could not do, for the service's events.
    NoteServiceEvent {
        name: String,
        message: String,
    },
    /// Stops by the service scheduler — scale-in, old deployments' tasks, unhealthy tasks.
    /// Apply re-checks each against the service's bounds (never below the desired count on
    /// scale-in, never under the minimum healthy while replacing; `unhealthy` stops only
    /// tasks that are UNHEALTHY), so a stale proposal cannot stop too many.
    StopServiceTasks {
        service: String,
        task_ids: Vec<String>,
        #[serde(default)]
        unhealthy: bool,
    },
    /// The leader's clock reached the time a service task turns healthy
    /// ([`ClusterState::next_healthy_at`](crate::ClusterState::next_healthy_at)); the batch
    /// carries that time, and rollouts it completes are settled.
    Tick,
    /// The first admin token; applies only while the cluster has no token.
    BootstrapAccessToken(crate::access::AccessToken),
    /// A new token (made by an admin, under `As`).
    CreateAccessToken(crate::access::AccessToken),
    /// Revokes a token from this entry's revision on.
    RevokeAccessToken {
        accessor: String,
    },
    /// `command`, made by the holder of token `accessor`: applies only if that token is
    /// live at this point of the log and its role allows the command.
    As {
        accessor: String,
        command: Box<Command>,
    },
    CreateNamespace {
        name: String,
        quota: crate::namespace::Quota,
    },
    SetNamespaceQuota {
        name: String,
        quota: crate::namespace::Quota,
    },
    /// Deletes a namespace that holds nothing.
    DeleteNamespace {
        name: String,
    },
    /// Makes a secret or gives it a new value; `sealed` by the node that took the call.
    PutSecret {
        name: String,
        sealed: String,
    },
    DeleteSecret {
        name: String,
    },
    /// Sets (or, with none, removes) a service's autoscaling policy.
    PutScalingPolicy {
        name: String,
        policy: Option<crate::scaling::ScalingPolicy>,
    },
    /// The leader's autoscaler: the desired count from `from` to `to`, for the reason given
    /// (the figures behind it). Re-checked at apply against the policy and its cooldowns.
    AutoscaleService {
        name: String,
        from: u32,
        to: u32,
        reason: String,
    },
    CreateSchedule(crate::schedule::ScheduleSpec),
    /// Replaces a schedule's definition (its runs and last fired time stay).
    UpdateSchedule(crate::schedule::ScheduleSpec),
    SetSchedulePaused {
        name: String,
        paused: bool,
    },
    DeleteSchedule {
        name: String,
    },
    /// The leader's schedule firing (see [`crate::schedule`]).
    FireSchedule(crate::schedule::ScheduleFire),
    RetryScheduleRun(crate::schedule::ScheduleRetry),
    /// Measured use of an agent's tasks, one window per task.
    RecordUtilization {
        agent_id: String,
        epoch: u64,
        windows: Vec<crate::utilization::Window>,
    },
}

impl Command {
    /// The call the command carries out and on what, by the API's names, for the audit
    /// trail: names and ids, never a token's text or an environment's values.
    pub fn summary(&self) -> String {
        match self {
            Command::RegisterTaskDefinition { spec } => {
                format!("RegisterTaskDefinition {}", spec.family)
            }
            Command::DeregisterTaskDefinition { family, revision } => {
                format!("DeregisterTaskDefinition {family}:{revision}")
            }
            Command::RunTasks(r) => {
                let ids: Vec<&str> = r.placements.iter().map(|p| p.task_id.as_str()).collect();
                format!(
                    "RunTask {}:{}, {} task(s){}{}",
                    r.family,
                    r.revision,
                    r.placements.len(),
                    if ids.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", ids.join(", "))
                    },
                    if r.failures.is_empty() {
                        String::new()
                    } else {
                        format!("; {} not placed", r.failures.len())
                    }
                )
            }
            Command::StopTask { task_id, .. } => format!("StopTask {task_id}"),
            Command::SetAgentStatus {
                agent_id, status, ..
            } => format!("DrainAgent {agent_id} to {status}"),
            Command::UpdateSettings(_) => "UpdateSettings".into(),
            Command::CreateService(c) => format!("CreateService {}", c.name),
            Command::UpdateService(u) => format!("UpdateService {}", u.name),
            Command::DeleteService { name, force } => format!(
                "DeleteService {name}{}",
                if *force { " (forced)" } else { "" }
            ),
            Command::PutScalingPolicy { name, policy } => format!(
                "PutScalingPolicy {name}{}",
                if policy.is_none() { " (removed)" } else { "" }
            ),
            Command::CreateAccessToken(t) => format!(
                "CreateToken {} ({}, {})",
                t.accessor,
                t.name,
                t.role.as_str()
            ),
            Command::RevokeAccessToken { accessor } => format!("RevokeToken {accessor}"),
            Command::CreateNamespace { name, .. } => format!("CreateNamespace {name}"),
            Command::SetNamespaceQuota { name, .. } => format!("SetNamespaceQuota {name}"),
            Command::DeleteNamespace { name } => format!("DeleteNamespace {name}"),
            Command::PutSecret { name, .. } => format!("PutSecret {name}"),
            Command::DeleteSecret { name } => format!("DeleteSecret {name}"),
            Command::CreateSchedule(s) => format!("CreateSchedule {}", s.name),
            Command::UpdateSchedule(s) => format!("UpdateSchedule {}", s.name),
            Command::SetSchedulePaused { name, paused } => format!(
                "{} {name}",
                if *paused {
                    "PauseSchedule"
                } else {
                    "ResumeSchedule"
                }
            ),
            Command::DeleteSchedule { name } => format!("DeleteSchedule {name}"),
            Command::As { command, .. } => command.summary(),
            // Not made with tokens (agents' and the leader's own): named by their variant.
            other => format!("{other:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// Tasks this command would create; the batcher bounds a batch by it.
    pub fn weight(&self) -> usize {
        match self {
            Command::RunTasks(r) => r.placements.len().max(1),
            _ => 1,
        }
    }
}

/// A RunTask call after placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTasks {
    pub family: String,
    pub revision: u32,
    pub client_token: Option<String>,
    /// Fingerprint of the request as the client sent it (see [`RunTaskRequest::fingerprint`]),
    /// so a reused token with a different request is told apart at apply time too.
    pub fingerprint: u64,
    pub started_by: String,
    pub group: String,
    pub overrides: Vec<ContainerOverride>,
    pub placements: Vec<Placement>,
    /// Tasks the placement engine could not place; kept with the token's answer.
    pub failures: Vec<Failure>,
    /// The service these tasks are launched for (only the service scheduler sets it); apply
    /// launches no more than the service's desired count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The schedule run these tasks are an attempt of (only the leader's schedule firing
    /// sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::schedule::TaskRun>,
    /// Overrides of the definition's time limits.
    #[serde(default, skip_serializing_if = "crate::model::Timeouts::is_empty")]
    pub timeouts: crate::model::Timeouts,
    /// A plain RunTask's retry policy: each task started becomes a run whose failed
    /// attempts are launched again (only the API sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<crate::schedule::RetryLaunch>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub task_id: String,
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRegistration {
    pub id: String,
    pub cpu: u32,
    pub memory: u32,
    pub attributes: BTreeMap<String, String>,
    pub address: String,
}

/// A placement strategy as ECS spells it: `{"type": "binpack", "field": "memory"}`,
/// `{"type": "spread", "field": "attribute:zone"}`, `{"type": "random"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// A placement constraint as ECS spells it: `{"type": "distinctInstance"}` or
/// `{"type": "memberOf", "expression": "attribute:zone in [a, b]"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
}

/// RunTask as the client asked for it, before placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    /// `family` or `family:revision`.
    pub task_definition: String,
    pub count: u32,
    pub client_token: Option<String>,
    pub started_by: String,
    pub group: String,
    pub overrides: Vec<ContainerOverride>,
    pub placement_strategy: Vec<PlacementStrategy>,
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Set by the service scheduler, never from the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Overrides of the definition's time limits.
    #[serde(default, skip_serializing_if = "crate::model::Timeouts::is_empty")]
    pub timeouts: crate::model::Timeouts,
    /// Retry each task's failure: a new task, placed afresh, after a back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::schedule::RetryPolicy>,
}

impl RunTaskRequest {
    /// A stable hash of everything but the token: the same token with the same request
    /// returns the first answer; with a different one it is refused.
    pub fn fingerprint(&self) -> u64 {
        let mut canonical = self.clone();
        canonical.client_token = None;
        crate::fingerprint(&canonical)
    }
}

/// What applying a command produced.
// Answers are built once and moved to the caller; boxing the large variant would add an
// allocation per answer to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    TaskDefinition(TaskDefinition),
    Tasks {
        tasks: Vec<Task>,
        failures: Vec<Failure>,
    },
    Task(Task),
    Agent(Agent),
    Settings(Settings),
    Service(Service),
    /// An agent's reports were applied.
    Reported,
    AccessToken(crate::access::AccessToken),
    Namespace(crate::namespace::Namespace),
    Secret(crate::secret::Secret),
    Schedule(Box<crate::schedule::Schedule>),
    /// A plain RunTask's run after a retry was launched.
    RetriedRun(Box<crate::schedule::RetriedRun>),
}

pub type CommandResult = Result<Outcome, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_token_but_not_parameters() {
        let a = RunTaskRequest {
            task_definition: "web".into(),
            count: 2,
            client_token: Some("t1".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        b.client_token = Some("t2".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.count = 3;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
