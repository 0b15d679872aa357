//! `ClusterState`: the replicated state and the one function that changes it.
//!
//! Invariants enforced here, on every replica:
//! - an agent's `used_*` equals the sum over tasks holding its capacity, and never exceeds
//!   its capacity (a placement that would oversubscribe is refused at apply, whatever the
//!   proposer believed);
//! - a task's `last_status` only moves forward;
//! - a client token maps to exactly one answer for an hour (the newest 100,000 tokens).

use std::collections::{BTreeMap, BTreeSet};

/// The state's top-level collections. Persistent maps: cloning one shares its nodes and a
/// later write copies only the path it touches, so a snapshot's copy of the whole state
/// takes microseconds however large it is, and apply is never held back by it.
pub(crate) type Map<K, V> = imbl::OrdMap<K, V>;
pub(crate) type Set<T> = imbl::OrdSet<T>;

/// Takes out of a (time, key) schedule every key due at `now`, oldest first.
fn take_due<K: Ord + Clone>(schedule: &mut Set<(Millis, K)>, now: Millis) -> Vec<K> {
    let mut due = Vec::new();
    while schedule.get_min().is_some_and(|(at, _)| *at <= now) {
        if let Some((_, key)) = schedule.remove_min() {
            due.push(key);
        }
    }
    due
}

use serde::{Deserialize, Serialize};

use crate::command::*;
use crate::error::Error;
use crate::limits::*;
use crate::model::*;
use crate::quote::quote;
use crate::service::Service;
use crate::validate;

/// A change to one object, published to watchers after apply.
// Mostly tasks: boxing them would add an allocation per change for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Task(Task),
    Agent(Agent),
    TaskDefinition(TaskDefinition),
    /// Something happened to a service, in the words of its event.
    ServiceEvent {
        service: String,
        message: String,
    },
    /// A write made with an API token, applied or refused at apply: who (the token's
    /// accessor and name) did what. The audit trail.
    Audit {
        accessor: String,
        name: String,
        action: String,
        /// Why apply refused it; None when it was applied.
        refused: Option<String>,
        /// The namespace it acted in; None for the cluster's own (tokens, namespaces).
        namespace: Option<String>,
    },
    /// The cluster's Raft membership changed (a node joined, left, or was promoted).
    Membership {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
}

/// A service launch past the service's desired count (a scheduler acting on a state that
/// was behind); the scheduler ignores it.
pub const SERVICE_FULL: &str = "SERVICE_AT_DESIRED_COUNT";

/// The first answer given to a client token, replayed on retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    fingerprint: u64,
    created_at: Millis,
    task_ids: Vec<String>,
    failures: Vec<Failure>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Log index of the last applied entry.
    revision: Revision,
    /// The newest time any applied batch carried. Leaders' clocks may disagree after a
    /// change of leader; taking the maximum keeps time monotonic inside the state.
    clock: Millis,
    settings: Settings,
    /// Family name → its revisions (INACTIVE ones until they are collected).
    families: Map<String, definitions::Family>,
    tasks: Map<String, Task>,
    agents: Map<String, Agent>,
    /// Agent id → ids of its tasks that hold capacity (not STOPPED).
    agent_tasks: Map<String, BTreeSet<String>>,
    /// Group → agent → tasks of that group there whose desired status is RUNNING; spread
    /// and distinctInstance read it instead of scanning every task.
    group_agents: Map<String, BTreeMap<String, u32>>,
    /// The same counts by agent first: agent → group → tasks, what the leader's placement
    /// engine reloads an agent from. Derived, so not written to snapshots.
    #[serde(skip)]
    agent_groups: Map<String, BTreeMap<String, u32>>,
    /// Agent id → revision of the last change to any of its tasks.
    agent_changed: Map<String, Revision>,
    tokens: Map<String, TokenRecord>,
    /// (expiry time, token): tokens leave in order of age.
    token_expiry: Set<(Millis, String)>,
    /// (collection time, task id): STOPPED tasks are collected after the retention.
    stopped_expiry: Set<(Millis, String)>,
    /// (collection time, (family, revision)): INACTIVE revisions are considered for
    /// collection after the retention. Derived from the revisions, so not written.
    #[serde(skip)]
    definition_expiry: Set<(Millis, (String, u32))>,
    /// INACTIVE revisions past their retention that a task or service still names; each
    /// collection pass looks at them again. Derived.
    #[serde(skip)]
    definitions_due: Set<(String, u32)>,
    /// (family, revision) → tasks in the state (STOPPED ones included) naming it. Derived.
    #[serde(skip)]
    revision_tasks: Map<(String, u32), u32>,
    /// (collection time, agent id): DOWN agents are collected after the retention. Derived
    /// from the agents (each DOWN one's `down_at`), so not written to snapshots.
    #[serde(skip)]
    down_expiry: Set<(Millis, String)>,
    /// Services by name, INACTIVE ones until they are collected.
    #[serde(default)]
    services: Map<String, Service>,
    /// Service → ids of its tasks whose desired status is RUNNING: what the scheduler
    /// compares with the desired count, and what apply re-checks a launch against.
    #[serde(default)]
    service_tasks: Map<String, BTreeSet<String>>,
    /// (collection time, name): INACTIVE services are collected after the retention.
    #[serde(default)]
    service_expiry: Set<(Millis, String)>,
    /// Task id → final usage of a stopped task, until folded into `usage_days`.
    #[serde(default)]
    usage_records: Map<String, crate::usage::UsageRecord>,
    /// (fold time, task id): records are folded after the retention.
    #[serde(default)]
    usage_expiry: Set<(Millis, String)>,
    /// UTC day (days since the epoch) → folded totals.
    #[serde(default)]
    usage_days: Map<u64, Vec<usage::UsageDay>>,
    /// Deployments ever started; the next one's id is `berth-svc/<this + 1>`.
    #[serde(default)]
    deployment_seq: u64,
    /// Task id → measured use, until the task is collected.
    #[serde(default)]
    utilization: Map<String, crate::utilization::TaskUtilization>,
    /// API access tokens by accessor, revoked ones included.
    #[serde(default)]
    access_tokens: Map<String, crate::access::AccessToken>,
    /// Secrets by qualified name, their values sealed.
    #[serde(default)]
    secrets: Map<String, crate::secret::Secret>,
    /// Namespaces made by an admin, and `default` once it has a quota.
    #[serde(default)]
    namespaces: Map<String, crate::namespace::Namespace>,
    /// Namespace → what its tasks that hold capacity hold. Derived from the tasks (and
    /// derived again by `rebuild_indexes` from a snapshot written before it existed).
    #[serde(default)]
    namespace_use: Map<String, crate::namespace::NamespaceUse>,
    /// Schedules by qualified name.
    #[serde(default)]
    schedules: Map<String, crate::schedule::Schedule>,
    /// Plain RunTasks' runs under a retry policy, by run id (the first attempt's task id).
    #[serde(default)]
    retried_runs: Map<String, crate::schedule::RetriedRun>,
    /// (collection time, run id): ended runs are collected after the stopped-task retention.
    #[serde(default)]
    retried_expiry: Set<(Millis, String)>,
    /// Changes made by the last `apply`, for watchers; not part of the replicated state.
    #[serde(skip)]
    changes: Vec<Change>,
}

/// Filters for listing tasks; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks of this namespace.
    pub namespace: Option<String>,
    pub family: Option<String>,
    pub desired_status: Option<DesiredStatus>,
    pub started_by: Option<String>,
    pub agent_id: Option<String>,
    pub group: Option<String>,
}

impl TaskFilter {
    fn matches(&self, t: &Task) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|n| crate::namespace::of(&t.family) == n)
            && self.family.as_ref().is_none_or(|f| &t.family == f)
            && self.desired_status.is_none_or(|d| t.desired_status == d)
            && self.started_by.as_ref().is_none_or(|s| &t.started_by == s)
            && self.agent_id.as_ref().is_none_or(|a| &t.agent_id == a)
            && self.group.as_ref().is_none_or(|g| &t.group == g)
    }
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn clock(&self) -> Millis {
        self.clock
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Recomputes the derived placement indexes from the tasks. Called on every state read
    /// from a snapshot, so a snapshot written by a release that derived them differently
    /// (the group index once counted stopping tasks) is read as this release derives them.
    pub fn rebuild_indexes(&mut self) {
        self.group_agents.clear();
        self.agent_groups.clear();
        self.service_tasks.clear();
        self.down_expiry = self
            .agents
            .values()
            .filter(|a| a.status == AgentStatus::Down)
            .map(|a| {
                (
                    a.down_at.unwrap_or(0) + DOWN_AGENT_RETENTION_MS,
                    a.id.clone(),
                )
            })
            .collect();
        self.namespace_use = self.count_namespace_use().into_iter().collect();
        self.rebuild_definition_indexes();
        for t in self.tasks.values() {
            if t.desired_status != DesiredStatus::Running {
                continue;
            }
            *self
                .group_agents
                .entry(t.group.clone())
                .or_default()
                .entry(t.agent_id.clone())
                .or_default() += 1;
            *self
                .agent_groups
                .entry(t.agent_id.clone())
                .or_default()
                .entry(t.group.clone())
                .or_default() += 1;
            if let Some(name) = crate::service::service_of_group(&t.group) {
                self.service_tasks
                    .entry(name.to_string())
                    .or_default()
                    .insert(t.id.clone());
            }
        }
    }

    /// Records that the entry at `revision` carried no command (Raft blank or membership
    /// entries), so reads report the index they reflect.
    pub fn advance(&mut self, revision: Revision) {
        debug_assert!(revision >= self.revision, "revision went backwards");
        self.revision = revision.max(self.revision);
    }

    /// Records a membership entry: nothing in the state changes, but watchers are told.
    pub fn note_membership(&mut self, revision: Revision, voters: Vec<u64>, learners: Vec<u64>) {
        self.advance(revision);
        self.changes.push(Change::Membership { voters, learners });
    }

    /// Applies one Raft entry's batch. One result per command, in order. A command that
    /// fails changes nothing; the rest of the batch still applies.
    pub fn apply(&mut self, revision: Revision, batch: &Batch) -> Vec<CommandResult> {
        self.advance(revision);
        self.clock = self.clock.max(batch.now);
        self.collect_expired();
        let results = batch.commands.iter().map(|c| self.apply_one(c)).collect();
        #[cfg(debug_assertions)]
        if let Err(e) = self.check_invariants() {
            panic!("state machine invariant broken at revision {revision}: {e}");
        }
        results
    }

    /// Records a change to a task, for watchers and for its agent's assignment stream.
    fn note_task(&mut self, task: Task) {
        self.agent_changed
            .insert(task.agent_id.clone(), self.revision);
        self.track_service_task(&task);
        if task.run.is_some() && task.last_status == TaskState::Stopped {
            self.settle_run_attempt(&task);
        }
        self.changes.push(Change::Task(task));
    }

    /// The revision at which any task of `agent_id` last changed (0: never). An agent whose
    /// assignment stream resumes from a later revision has missed nothing.
    pub fn agent_tasks_changed_at(&self, agent_id: &str) -> Revision {
        self.agent_changed.get(agent_id).copied().unwrap_or(0)
    }

    /// Changes made since the last call, for watchers.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn apply_one(&mut self, cmd: &Command) -> CommandResult {
        self.check_namespace_of(cmd)?;
        match cmd {
            Command::RegisterTaskDefinition { spec } => self.register_task_definition(spec),
            Command::DeregisterTaskDefinition { family, revision } => {
                self.deregister_task_definition(family, *revision)
            }
            Command::RunTasks(run) => self.run_tasks(run),
            Command::StopTask {
                task_id,
                reason,
                code,
                namespace,
            } => {
                let elsewhere = namespace.as_deref().is_some_and(|n| {
                    self.tasks
                        .get(task_id)
                        .is_some_and(|t| crate::namespace::of(&t.family) != n)
                });
                if elsewhere {
                    return Err(Error::not_found(format!("task {task_id} does not exist")));
                }
                self.stop_task(task_id, reason, *code)
            }
            Command::RegisterAgent(reg) => self.register_agent(reg),
            Command::SetAgentStatus {
                agent_id,
                status,
                reason,
            } => self.set_agent_status(agent_id, *status, reason),
            Command::ReportTasks {
                agent_id,
                epoch,
                reports,
            } => self.report_tasks(agent_id, *epoch, reports),
            Command::CreateService(c) => self.create_service(c),
            Command::UpdateService(u) => self.update_service(u),
            Command::DeleteService { name, force } => self.delete_service(name, *force),
            Command::NoteServiceEvent { name, message } => {
                if self.services.contains_key(name) {
                    self.service_event(name, message.clone());
                    Ok(Outcome::Reported)
                } else {
                    Err(Error::not_found(format!(
                        "service {} does not exist",
                        quote(name)
                    )))
                }
            }
            Command::StopServiceTasks {
                service,
                task_ids,
                unhealthy,
            } => self.stop_service_tasks(service, task_ids, *unhealthy),
            Command::SetAgentEngine {
                agent_id,
                epoch,
                error,
            } => self.set_agent_engine(agent_id, *epoch, error.as_deref()),
            Command::PutScalingPolicy { name, policy } => {
                self.put_scaling_policy(name, policy.as_ref())
            }
            Command::AutoscaleService {
                name,
                from,
                to,
                reason,
            } => self.autoscale_service(name, *from, *to, reason),
            Command::RecordUtilization {
                agent_id,
                epoch,
                windows,
            } => self.record_utilization(agent_id, *epoch, windows),
            Command::Tick => {
                self.tick();
                Ok(Outcome::Reported)
            }
            Command::BootstrapAccessToken(t) => self.bootstrap_access_token(t),
            // Only under `As`: a token is made by an admin.
            Command::CreateAccessToken(_) => Err(Error::invalid(
                "a token is made by an admin's token (`berth token create`)",
            )),
            Command::RevokeAccessToken { accessor } => self.revoke_access_token(accessor),
            Command::As { accessor, command } => self.apply_as(accessor, command),
            Command::CreateNamespace { name, quota } => self.create_namespace(name, quota),
            Command::SetNamespaceQuota { name, quota } => self.set_namespace_quota(name, quota),
            Command::DeleteNamespace { name } => self.delete_namespace(name),
            Command::PutSecret { name, sealed } => self.put_secret(name, sealed),
            Command::DeleteSecret { name } => self.delete_secret(name),
            Command::CreateSchedule(spec) => self.create_schedule(spec),
            Command::UpdateSchedule(spec) => self.update_schedule(spec),
            Command::SetSchedulePaused { name, paused } => self.set_schedule_paused(name, *paused),
            Command::DeleteSchedule { name } => self.delete_schedule(name),
            Command::FireSchedule(f) => self.fire_schedule(f),
            Command::RetryScheduleRun(r) => self.retry_schedule_run(r),
            Command::UpdateSettings(s) => {
                self.settings = s.clone();
                Ok(Outcome::Settings(s.clone()))
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Tasks

    /// The first answer given to `token`, if it is still remembered: the tasks as they
    /// are now, or a refusal when `fingerprint` says the request differs.
    pub fn replay_token(&self, token: &str, fingerprint: u64) -> Option<CommandResult> {
        let rec = self.tokens.get(token)?;
        if rec.fingerprint != fingerprint {
            return Some(Err(Error::invalid(format!(
                "clientToken {} was already used with different parameters; \
                 use a new token for a different request",
                quote(token)
            ))));
        }
        let tasks = rec
            .task_ids
            .iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect();
        Some(Ok(Outcome::Tasks {
            tasks,
            failures: rec.failures.clone(),
        }))
    }

    fn run_tasks(&mut self, run: &RunTasks) -> CommandResult {
        if let Some(token) = &run.client_token {
            if let Some(answer) = self.replay_token(token, run.fingerprint) {
                return answer;
            }
        }
        let def = self.task_definition(&run.family, Some(run.revision))?;
        if def.status != TaskDefinitionStatus::Active {
            return Err(Error::precondition(format!(
                "task definition {} is INACTIVE; register or choose an ACTIVE revision",
                def.name()
            )));
        }
        let (cpu, memory) = (def.cpu, def.memory);
        let timeouts = run.timeouts.over(def.timeouts);
        let containers: Vec<ContainerState> = def
            .container_definitions
            .iter()
            .map(|c| ContainerState {
                name: c.name.clone(),
                last_status: TaskState::Provisioning,
                exit_code: None,
                reason: None,
                health_status: c.health_check.as_ref().map(|_| HealthStatus::Unknown),
                network_bindings: vec![],
            })
            .collect();
        let room = self.service_room(run)?;
        let mut tasks = Vec::with_capacity(run.placements.len());
        let mut failures = run.failures.clone();
        for (i, p) in run.placements.iter().enumerate() {
            if i >= room {
                failures.push(Failure {
                    reason: SERVICE_FULL.into(),
                    detail: format!(
                        "service {} already has its desired count of tasks",
                        run.service.as_deref().unwrap_or_default()
                    ),
                });
                continue;
            }
            if let Err(f) = self.check_fits(&p.agent_id, cpu, memory) {
                failures.push(f);
                continue;
            }
            if let Some(f) = self.quota_refusal(&run.family, cpu, memory) {
                failures.push(f);
                continue;
            }
            if self.tasks.contains_key(&p.task_id) {
                failures.push(Failure {
                    reason: "INTERNAL".into(),
                    detail: format!("task id {} is already taken", p.task_id),
                });
                continue;
            }
            let task = Task {
                id: p.task_id.clone(),
                family: run.family.clone(),
                revision: run.revision,
                cpu,
                memory,
                agent_id: p.agent_id.clone(),
                last_status: TaskState::Provisioning,
                desired_status: DesiredStatus::Running,
                started_by: run.started_by.clone(),
                group: run.group.clone(),
                client_token: run.client_token.clone(),
                overrides: run.overrides.clone(),
                containers: containers.clone(),
                health_status: HealthStatus::Unknown,
                ready_since: None,
                stop_code: None,
                stopped_reason: None,
                created_at: self.clock,
                pull_started_at: None,
                started_at: None,
                stopping_at: None,
                stopped_at: None,
                version: self.revision,
                transitions: vec![Transition {
                    status: TaskState::Provisioning,
                    at: self.clock,
                }],
                run: run.run.clone(),
                timeouts,
            };
            let task = self.begin_retried_run(run, task);
            self.allocate(&task);
            self.count_revision_task(&task, true);
            self.tasks.insert(task.id.clone(), task.clone());
            self.note_task(task.clone());
            tasks.push(task);
        }
        if let Some(name) = &run.service {
            self.service_launched(name, &tasks);
        }
        if let Some(token) = &run.client_token {
            self.tokens.insert(
                token.clone(),
                TokenRecord {
                    fingerprint: run.fingerprint,
                    created_at: self.clock,
                    task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
                    failures: failures.clone(),
                },
            );
            self.token_expiry
                .insert((self.clock + CLIENT_TOKEN_TTL_MS, token.clone()));
            while self.tokens.len() > MAX_CLIENT_TOKENS {
                let Some((_, oldest)) = self.token_expiry.remove_min() else {
                    break;
                };
                self.tokens.remove(&oldest);
            }
        }
        Ok(Outcome::Tasks { tasks, failures })
    }

    /// The apply-time capacity check: the proposer may have placed against a state that
    /// has since changed (a new leader, an agent gone DOWN in the same batch).
    fn check_fits(&self, agent_id: &str, cpu: u32, memory: u32) -> Result<(), Failure> {
        let Some(agent) = self.agents.get(agent_id) else {
            return Err(Failure {
                reason: "AGENT_UNAVAILABLE".into(),
                detail: format!("agent {agent_id} is not registered"),
            });
        };
        if agent.status != AgentStatus::Ready {
            return Err(Failure {
                reason: "AGENT_UNAVAILABLE".into(),
                detail: format!("agent {agent_id} is {}", agent.status),
            });
        }
        if agent.free_cpu() < cpu {
            return Err(Failure {
                reason: "RESOURCE:CPU".into(),
                detail: format!(
                    "agent {agent_id} has {} CPU units free, the task needs {cpu}",
                    agent.free_cpu()
                ),
            });
        }
        if agent.free_memory() < memory {
            return Err(Failure {
                reason: "RESOURCE:MEMORY".into(),
                detail: format!(
                    "agent {agent_id} has {} MiB free, the task needs {memory}",
                    agent.free_memory()
                ),
            });
        }
        Ok(())
    }

    fn allocate(&mut self, task: &Task) {
        self.count_in_namespace(task, true);
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.used_cpu += task.cpu;
            agent.used_memory += task.memory;
            agent.task_count += 1;
            debug_assert!(agent.used_cpu <= agent.cpu && agent.used_memory <= agent.memory);
            self.changes.push(Change::Agent(agent.clone()));
        }
        self.agent_tasks
            .entry(task.agent_id.clone())
            .or_default()
            .insert(task.id.clone());
        *self
            .group_agents
            .entry(task.group.clone())
            .or_default()
            .entry(task.agent_id.clone())
            .or_default() += 1;
        *self
            .agent_groups
            .entry(task.agent_id.clone())
            .or_default()
            .entry(task.group.clone())
            .or_default() += 1;
    }

    fn release(&mut self, task: &Task) {
        self.count_in_namespace(task, false);
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            debug_assert!(agent.used_cpu >= task.cpu && agent.used_memory >= task.memory);
            agent.used_cpu = agent.used_cpu.saturating_sub(task.cpu);
            agent.used_memory = agent.used_memory.saturating_sub(task.memory);
            agent.task_count = agent.task_count.saturating_sub(1);
            self.changes.push(Change::Agent(agent.clone()));
        }
        if let Some(set) = self.agent_tasks.get_mut(&task.agent_id) {
            set.remove(&task.id);
            if set.is_empty() {
                self.agent_tasks.remove(&task.agent_id);
            }
        }
    }

    /// A task leaves its group's placement count when its desired status turns STOPPED, not
    /// when it has stopped: spread and distinctInstance place a replacement while the old
    /// task is still stopping, and must not count the leaving task against its agent.
    fn ungroup(&mut self, task_id: &str) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.desired_status != DesiredStatus::Running {
            return;
        }
        let (group, agent) = (task.group.clone(), task.agent_id.clone());
        if let Some(agents) = self.group_agents.get_mut(&group) {
            if let Some(n) = agents.get_mut(&agent) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    agents.remove(&agent);
                }
            }
            if agents.is_empty() {
                self.group_agents.remove(&group);
            }
        }
        if let Some(groups) = self.agent_groups.get_mut(&agent) {
            if let Some(n) = groups.get_mut(&group) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    groups.remove(&group);
                }
            }
            if groups.is_empty() {
                self.agent_groups.remove(&agent);
            }
        }
    }

    fn stop_task(&mut self, task_id: &str, reason: &str, code: StopCode) -> CommandResult {
        validate::reason(reason)?;
        let clock = self.clock;
        let revision = self.revision;
        if !self.tasks.contains_key(task_id) {
            return Err(Error::not_found(format!("task {task_id} does not exist")));
        }
        if self.tasks[task_id].last_status != TaskState::Stopped {
            self.ungroup(task_id);
        }
        let task = self
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| Error::not_found(format!("task {task_id} does not exist")))?;
        if task.desired_status == DesiredStatus::Stopped || task.last_status == TaskState::Stopped {
            return Ok(Outcome::Task(task.clone()));
        }
        task.desired_status = DesiredStatus::Stopped;
        task.stop_code = Some(code);
        task.stopped_reason = Some(if reason.is_empty() {
            "Task stopped by user".to_string()
        } else {
            reason.to_string()
        });
        task.stopping_at = Some(clock);
        task.version = revision;
        let task = task.clone();
        self.note_task(task.clone());
        Ok(Outcome::Task(task))
    }

    /// Moves a task to STOPPED: releases its capacity and schedules its collection.
    fn finish_task(&mut self, task_id: &str, code: StopCode, reason: &str) {
        let clock = self.clock;
        if let Some(t) = self.tasks.get_mut(task_id) {
            if t.last_status != TaskState::Stopped {
                t.transitions.push(Transition {
                    status: TaskState::Stopped,
                    at: clock,
                });
            }
        }
        self.finish_task_at(task_id, code, reason, clock);
    }

    fn finish_task_at(&mut self, task_id: &str, code: StopCode, reason: &str, stopped_at: Millis) {
        let clock = self.clock;
        let revision = self.revision;
        if self
            .tasks
            .get(task_id)
            .is_some_and(|t| t.last_status != TaskState::Stopped)
        {
            self.ungroup(task_id);
        }
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.last_status == TaskState::Stopped {
            return;
        }
        task.last_status = TaskState::Stopped;
        task.desired_status = DesiredStatus::Stopped;
        if task.stop_code.is_none() {
            task.stop_code = Some(code);
            task.stopped_reason = Some(reason.to_string());
        }
        for c in &mut task.containers {
            c.last_status = TaskState::Stopped;
        }
        task.stopped_at = Some(stopped_at);
        task.version = revision;
        let task = task.clone();
        self.release(&task);
        self.record_usage(&task);
        self.stopped_expiry
            .insert((clock + STOPPED_TASK_RETENTION_MS, task.id.clone()));
        self.note_task(task);
    }

    /// Whether an agent's reports would be accepted: the agent is registered under this
    /// epoch and holds every task it reports on. The leader asks before proposing, so a
    /// refused report costs no Raft round; apply asks again.
    /// Refuses what an agent sends under a registration that is not its current one.
    pub(crate) fn check_registration(
        &self,
        agent_id: &str,
        epoch: u64,
        what: &str,
    ) -> Result<(), Error> {
        let agent = self.agents.get(agent_id).ok_or_else(|| {
            Error::not_found(format!("agent {} is not registered", quote(agent_id)))
        })?;
        if agent.epoch != epoch {
            return Err(Error::precondition(format!(
                "agent {agent_id}: {what} carries registration {epoch}, the current one is {}; re-register",
                agent.epoch
            )));
        }
        Ok(())
    }

    pub fn check_reports(
        &self,
        agent_id: &str,
        epoch: u64,
        reports: &[TaskReport],
    ) -> Result<(), Error> {
        self.check_registration(agent_id, epoch, "report")?;
        for r in reports {
            validate::report(r)?;
            match self.tasks.get(&r.task_id) {
                None => {
                    return Err(Error::not_found(format!(
                        "agent {agent_id} reported task {} which does not exist",
                        quote(&r.task_id)
                    )))
                }
                Some(t) if t.agent_id != agent_id => {
                    return Err(Error::precondition(format!(
                        "agent {agent_id} reported task {} which is assigned to agent {}",
                        r.task_id, t.agent_id
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Applies an agent's reports. The whole batch is refused if the agent is unknown, the
    /// registration is stale, or any report is about a task the agent does not hold; a
    /// report that would move a task backwards is ignored (reports may arrive late or
    /// twice).
    fn report_tasks(
        &mut self,
        agent_id: &str,
        epoch: u64,
        reports: &[TaskReport],
    ) -> CommandResult {
        self.check_reports(agent_id, epoch, reports)?;
        let revision = self.revision;
        for r in reports {
            let Some(task) = self.tasks.get_mut(&r.task_id) else {
                continue;
            };
            if r.last_status < task.last_status || task.last_status == TaskState::Stopped {
                continue;
            }
            if !r.containers.is_empty() {
                task.containers = r.containers.clone();
                let def = self
                    .families
                    .get(&task.family)
                    .and_then(|f| f.get(task.revision));
                task.health_status = match def {
                    Some(def) => HealthStatus::of_task(task.containers.iter().map(|c| {
                        let essential = def
                            .container_definitions
                            .iter()
                            .find(|d| d.name == c.name)
                            .is_some_and(|d| d.is_essential());
                        (essential, c.health_status)
                    })),
                    None => HealthStatus::Unknown,
                };
            }
            if r.last_status == task.last_status {
                deployments::mark_ready(task, &self.families, self.clock);
                task.version = revision;
                let t = task.clone();
                self.note_task(t);
                continue;
            }
            // Report time is the agent's; never let it run before the task existed.
            let at = r.at.max(task.created_at);
            match r.last_status {
                TaskState::Pending | TaskState::Activating if task.pull_started_at.is_none() => {
                    task.pull_started_at = Some(at)
                }
                TaskState::Running => task.started_at = Some(at),
                TaskState::Deactivating | TaskState::Stopping if task.stopping_at.is_none() => {
                    task.stopping_at = Some(at)
                }
                _ => {}
            }
            if r.last_status == TaskState::Stopped {
                let code = r.stop_code.unwrap_or(StopCode::EssentialContainerExited);
                let reason = r
                    .stopped_reason
                    .clone()
                    .unwrap_or_else(|| "Task stopped".to_string());
                task.transitions.push(Transition {
                    status: TaskState::Stopped,
                    at,
                });
                let id = task.id.clone();
                self.finish_task_at(&id, code, &reason, at);
                continue;
            }
            task.last_status = r.last_status;
            task.transitions.push(Transition {
                status: r.last_status,
                at,
            });
            deployments::mark_ready(task, &self.families, self.clock);
            task.version = revision;
            let t = task.clone();
            self.note_task(t);
        }
        Ok(Outcome::Reported)
    }

    /// The tasks assigned to an agent that it must act on: every task not yet STOPPED.
    pub fn assigned_tasks<'a>(&'a self, agent_id: &str) -> impl Iterator<Item = AssignedTask> + 'a {
        self.agent_tasks
            .get(agent_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.tasks.get(id))
            .filter_map(|t| {
                let def = self.families.get(&t.family)?.get(t.revision)?;
                Some(AssignedTask {
                    task: t.clone(),
                    definition: def.clone(),
                })
            })
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// Tasks in id order, starting after `after` (for paging).
    pub fn tasks<'a>(
        &'a self,
        filter: &'a TaskFilter,
        after: Option<&str>,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        self.tasks
            .range((start, Bound::Unbounded))
            .map(|(_, t)| t)
            .filter(move |t| filter.matches(t))
    }

    /// Tasks per last status (STOPPED ones until they are collected).
    pub fn task_counts(&self) -> Vec<(TaskState, usize)> {
        let mut n = [0usize; TaskState::ALL.len()];
        for t in self.tasks.values() {
            if let Some(i) = TaskState::ALL.iter().position(|s| *s == t.last_status) {
                n[i] += 1;
            }
        }
        TaskState::ALL.into_iter().zip(n).collect()
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Client-token records held (bounded by `MAX_CLIENT_TOKENS`).
    pub fn client_token_count(&self) -> usize {
        self.tokens.len()
    }

    // -----------------------------------------------------------------------------------
    // Agents

    fn register_agent(&mut self, reg: &AgentRegistration) -> CommandResult {
        validate::agent(&reg.id, reg.cpu, reg.memory, &reg.attributes)?;
        let clock = self.clock;
        let agent = match self.agents.get_mut(&reg.id) {
            Some(a) => {
                if reg.cpu < a.used_cpu || reg.memory < a.used_memory {
                    return Err(Error::precondition(format!(
                        "agent {}: new capacity {} CPU / {} MiB is below what its tasks hold ({} / {}); stop tasks first",
                        reg.id, reg.cpu, reg.memory, a.used_cpu, a.used_memory
                    )));
                }
                a.cpu = reg.cpu;
                a.memory = reg.memory;
                a.attributes = reg.attributes.clone();
                a.address = reg.address.clone();
                a.registered_at = clock;
                a.epoch += 1;
                if a.status == AgentStatus::Down {
                    a.status = AgentStatus::Ready;
                    a.back_at = Some(clock);
                }
                a.clone()
            }
            None => {
                let a = Agent {
                    id: reg.id.clone(),
                    cpu: reg.cpu,
                    memory: reg.memory,
                    used_cpu: 0,
                    used_memory: 0,
                    task_count: 0,
                    attributes: reg.attributes.clone(),
                    status: AgentStatus::Ready,
                    address: reg.address.clone(),
                    registered_at: clock,
                    epoch: 1,
                    down_at: None,
                    back_at: None,
                    engine_error: None,
                    engine_error_since: None,
                };
                self.agents.insert(a.id.clone(), a.clone());
                a
            }
        };
        self.changes.push(Change::Agent(agent.clone()));
        Ok(Outcome::Agent(agent))
    }

    fn set_agent_status(
        &mut self,
        agent_id: &str,
        status: AgentStatus,
        reason: &str,
    ) -> CommandResult {
        let agent = self
            .agents
            .get_mut(agent_id)
            .ok_or_else(|| Error::not_found(format!("agent {agent_id} is not registered")))?;
        if agent.status == status {
            return Ok(Outcome::Agent(agent.clone()));
        }
        agent.status = status;
        if status == AgentStatus::Down {
            // A new epoch: whatever the agent sends under the old one (heartbeats, reports,
            // its assignment stream) is refused, so it registers again — which is what
            // brings it back to READY — and learns that its tasks are gone.
            agent.epoch += 1;
            agent.down_at = Some(self.clock);
            agent.back_at = None;
            self.down_expiry
                .insert((self.clock + DOWN_AGENT_RETENTION_MS, agent_id.to_string()));
            let ids: Vec<String> = self
                .agent_tasks
                .get(agent_id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let why = if reason.is_empty() {
                format!("agent {agent_id} stopped heartbeating")
            } else {
                reason.to_string()
            };
            for id in ids {
                self.finish_task(&id, StopCode::InfrastructureHealth, &why);
            }
        }
        let agent = self
            .agents
            .get(agent_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("agent {agent_id} is not registered")))?;
        self.changes.push(Change::Agent(agent.clone()));
        Ok(Outcome::Agent(agent))
    }

    fn set_agent_engine(
        &mut self,
        agent_id: &str,
        epoch: u64,
        error: Option<&str>,
    ) -> CommandResult {
        let clock = self.clock;
        let agent = self.agents.get_mut(agent_id).ok_or_else(|| {
            Error::not_found(format!("agent {} is not registered", quote(agent_id)))
        })?;
        if agent.epoch != epoch {
            return Err(Error::precondition(format!(
                "agent {agent_id}: engine report carries registration {epoch}, the current one is {}",
                agent.epoch
            )));
        }
        let error = error.map(|e| {
            let mut e = e.to_string();
            if e.len() > MAX_REASON_LEN {
                let mut end = MAX_REASON_LEN;
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                e.truncate(end);
            }
            e
        });
        if agent.engine_error.is_some() != error.is_some() {
            agent.engine_error_since = error.as_ref().map(|_| clock);
        }
        agent.engine_error = error;
        let agent = agent.clone();
        self.changes.push(Change::Agent(agent.clone()));
        Ok(Outcome::Agent(agent))
    }

    /// Whether an agent takes new tasks (READY, its engine answering).
    pub fn agent_accepts_tasks(&self, agent_id: &str) -> bool {
        self.agents.get(agent_id).is_some_and(Agent::accepts_tasks)
    }

    /// Agent id → running tasks of `group` there.
    pub fn group_placement(&self, group: &str) -> Option<&BTreeMap<String, u32>> {
        self.group_agents.get(group)
    }

    /// Group → tasks of it whose desired status is RUNNING on agent `agent_id`.
    pub fn agent_groups(&self, agent_id: &str) -> Option<&BTreeMap<String, u32>> {
        self.agent_groups.get(agent_id)
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    // -----------------------------------------------------------------------------------
    // Housekeeping

    /// Forgets client tokens past their hour, STOPPED tasks, DOWN agents and unused
    /// INACTIVE task definition revisions past their retention. Driven by the clock carried in batches, so every replica collects the
    /// same things at the same revision.
    fn collect_expired(&mut self) {
        let now = self.clock;
        for token in take_due(&mut self.token_expiry, now) {
            self.tokens.remove(&token);
        }
        for id in take_due(&mut self.stopped_expiry, now) {
            if let Some(t) = self.tasks.remove(&id) {
                self.count_revision_task(&t, false);
            }
            self.utilization.remove(&id);
        }
        for id in take_due(&mut self.down_expiry, now) {
            // Only if it is still DOWN since then: one that came back keeps its record.
            let collect = self.agents.get(&id).is_some_and(|a| {
                a.status == AgentStatus::Down
                    && a.down_at.unwrap_or(0) + DOWN_AGENT_RETENTION_MS <= now
                    && a.task_count == 0
            });
            if collect {
                self.agents.remove(&id);
                self.agent_tasks.remove(&id);
                self.agent_changed.remove(&id);
            }
        }
        for id in take_due(&mut self.retried_expiry, now) {
            self.retried_runs.remove(&id);
        }
        self.collect_services();
        self.collect_definitions();
        self.fold_usage();
    }

    /// A digest of the replicated state; equal digests at equal revisions mean equal
    /// states (the chaos suite compares them across nodes).
    pub fn digest(&self) -> u64 {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        crate::fnv1a(&bytes)
    }

    /// Recomputes every derived figure from the tasks and compares. Cheap enough for tests
    /// and debug builds; the chaos suite calls it on every node's state.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut used: BTreeMap<&str, (u64, u64, u32)> = BTreeMap::new();
        let mut groups: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
        for t in self.tasks.values() {
            if t.desired_status == DesiredStatus::Running {
                *groups
                    .entry(t.group.as_str())
                    .or_default()
                    .entry(t.agent_id.as_str())
                    .or_default() += 1;
            }
            if t.holds_capacity() {
                let e = used.entry(t.agent_id.as_str()).or_default();
                e.0 += u64::from(t.cpu);
                e.1 += u64::from(t.memory);
                e.2 += 1;
                let listed = self
                    .agent_tasks
                    .get(&t.agent_id)
                    .is_some_and(|s| s.contains(&t.id));
                if !listed {
                    return Err(format!(
                        "task {} holds capacity but is not indexed on its agent",
                        t.id
                    ));
                }
            }
        }
        for a in self.agents.values() {
            let (cpu, mem, n) = used.remove(a.id.as_str()).unwrap_or_default();
            if (
                u64::from(a.used_cpu),
                u64::from(a.used_memory),
                a.task_count,
            ) != (cpu, mem, n)
            {
                return Err(format!(
                    "agent {} records {} cpu / {} MiB / {} tasks used, its tasks hold {cpu} / {mem} / {n}",
                    a.id, a.used_cpu, a.used_memory, a.task_count
                ));
            }
            if a.used_cpu > a.cpu || a.used_memory > a.memory {
                return Err(format!(
                    "agent {} is oversubscribed: {}/{} cpu, {}/{} MiB",
                    a.id, a.used_cpu, a.cpu, a.used_memory, a.memory
                ));
            }
        }
        let in_namespaces = self.count_namespace_use();
        let recorded: BTreeMap<String, crate::namespace::NamespaceUse> = self
            .namespace_use
            .iter()
            .filter(|(_, u)| u.tasks > 0)
            .map(|(n, u)| (n.clone(), *u))
            .collect();
        if recorded != in_namespaces {
            return Err(format!(
                "namespaces record {recorded:?} held, their tasks hold {in_namespaces:?}"
            ));
        }
        if let Some((agent, _)) = used.into_iter().next() {
            return Err(format!("tasks hold capacity on unknown agent {agent}"));
        }
        let indexed: BTreeMap<&str, BTreeMap<&str, u32>> = self
            .group_agents
            .iter()
            .map(|(g, m)| {
                (
                    g.as_str(),
                    m.iter().map(|(a, n)| (a.as_str(), *n)).collect(),
                )
            })
            .collect();
        if indexed != groups {
            return Err("the group index disagrees with the tasks".into());
        }
        let mut by_agent: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
        for (g, m) in &groups {
            for (a, n) in m {
                by_agent.entry(*a).or_default().insert(*g, *n);
            }
        }
        let reverse: BTreeMap<&str, BTreeMap<&str, u32>> = self
            .agent_groups
            .iter()
            .map(|(a, m)| {
                (
                    a.as_str(),
                    m.iter().map(|(g, n)| (g.as_str(), *n)).collect(),
                )
            })
            .collect();
        if reverse != by_agent {
            return Err("the agent → group index disagrees with the tasks".into());
        }
        self.check_definition_index()?;
        self.check_service_index()
    }
}

mod access;
mod definitions;
mod deployments;
mod namespaces;
mod retries;
mod scaling;
mod schedules;
mod secrets;
mod services;
mod usage;
mod utilization;
pub use access::need_of;
pub use deployments::{DeploymentCount, Tally, UNHEALTHY_REASON};
pub use scaling::ServiceMetric;
pub use usage::{UsageDay, UsageLine, FOLDED};
#[cfg(test)]
mod tests;
