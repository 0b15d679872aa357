//! Deployments in the replicated state: which task definition a service launches, the
//! bounds a rollout keeps (re-checked at apply, whoever proposed), the circuit breaker, and
//! when a rollout is COMPLETED. Everything here runs inside `apply`, so a new leader finds a
//! deployment exactly where the old one left it.

use std::collections::BTreeMap;

use super::ClusterState;
use crate::limits::MAX_INACTIVE_DEPLOYMENTS;
use crate::model::{DesiredStatus, HealthStatus, Millis, StopCode, Task, TaskState};
use crate::service::*;

/// The stop reason of a service task replaced for failing its health check (ECS's words).
pub const UNHEALTHY_REASON: &str = "Task failed container health checks";

/// A service's live tasks counted the way its deployment bounds need them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Live tasks of the PRIMARY deployment on agents that take tasks (a task on a draining
    /// agent, or one whose engine does not answer, is replaced like an old deployment's).
    pub primary: u32,
    /// Live tasks of every deployment.
    pub total: u32,
    /// Live tasks that are ready ([`ClusterState::task_is_ready`]).
    pub ready: u32,
    /// Live tasks that count as healthy ([`ClusterState::task_is_healthy`]).
    pub healthy: u32,
}

impl Tally {
    /// Whether `t`, ready and healthy as given, may stop while `min` healthy tasks remain:
    /// neither the tasks RUNNING now nor those proven healthy may drop below `min`. (Only
    /// the second would let a young task stop whatever it leaves; only the first would let
    /// an old task stop for a replacement that has not yet stayed up.)
    pub fn keeps_min(&self, ready: bool, healthy: bool, min: u32) -> bool {
        (!ready || self.ready > min) && (!healthy || self.healthy > min)
    }

    /// Counts `t` as gone.
    pub fn remove(&mut self, ready: bool, healthy: bool) {
        self.total -= 1;
        self.ready -= u32::from(ready);
        self.healthy -= u32::from(healthy);
    }
}

/// Live and RUNNING tasks of one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentCount {
    pub running: u32,
    pub pending: u32,
}

/// Records when a task became ready (RUNNING, and HEALTHY where its definition gives an
/// essential container a health check), after a report changed it; not ready clears it.
pub(super) fn mark_ready(
    task: &mut Task,
    families: &super::Map<String, super::definitions::Family>,
    clock: Millis,
) {
    let checked = has_health_check(families, &task.family, task.revision);
    if !is_ready(task, checked) {
        task.ready_since = None;
    } else if task.ready_since.is_none() {
        task.ready_since = Some(clock);
    }
}

fn is_ready(t: &Task, checked: bool) -> bool {
    if t.last_status != TaskState::Running || t.desired_status != DesiredStatus::Running {
        return false;
    }
    match t.health_status {
        HealthStatus::Healthy => true,
        HealthStatus::Unhealthy => false,
        HealthStatus::Unknown => !checked,
    }
}

fn has_health_check(
    families: &super::Map<String, super::definitions::Family>,
    family: &str,
    revision: u32,
) -> bool {
    families
        .get(family)
        .and_then(|f| f.get(revision))
        .is_some_and(|d| {
            d.container_definitions
                .iter()
                .any(|c| c.is_essential() && c.health_check.is_some())
        })
}

impl ClusterState {
    /// Whether a live task is RUNNING and, where its definition gives an essential
    /// container a health check, HEALTHY (without one, RUNNING is enough). What ECS's
    /// steady state asks of a task.
    pub fn task_is_ready(&self, t: &Task) -> bool {
        is_ready(t, has_health_check(&self.families, &t.family, t.revision))
    }

    /// When a ready task counts as healthy: once it has been ready for its service's
    /// minimum healthy time. None while it is not ready.
    pub fn task_healthy_at(&self, t: &Task) -> Option<Millis> {
        if !self.task_is_ready(t) {
            return None;
        }
        let wait = service_of_group(&t.group)
            .and_then(|name| self.services.get(name))
            .map_or(0, |s| s.deployment_configuration.min_healthy_time_ms);
        // A task that turned ready before its readiness was recorded counts from then.
        let since = t.ready_since.unwrap_or(0);
        Some(since.saturating_add(u64::from(wait)))
    }

    /// Whether a live task counts toward a deployment's minimum healthy (and its
    /// completion): ready for at least its service's minimum healthy time, by the clock the
    /// applied batches carry — so the leader's scheduler and every replica's apply agree.
    pub fn task_is_healthy(&self, t: &Task) -> bool {
        self.task_healthy_at(t).is_some_and(|at| at <= self.clock)
    }

    /// The earliest time, after the state's clock, at which a live service task becomes
    /// healthy. Nothing is written just because time passes, so the leader proposes a
    /// [`Command::Tick`](crate::Command::Tick) once its own clock reaches this.
    pub fn next_healthy_at(&self) -> Option<Millis> {
        self.service_tasks
            .keys()
            .flat_map(|name| self.service_tasks(name))
            .filter_map(|t| self.task_healthy_at(t))
            .filter(|at| *at > self.clock)
            .min()
    }

    /// Time passed: rollouts whose tasks have now been healthy long enough complete.
    pub(super) fn tick(&mut self) {
        let names: Vec<String> = self.service_tasks.keys().cloned().collect();
        for name in names {
            self.settle_deployments(&name);
        }
    }

    /// Whether a live task counts toward its service's PRIMARY deployment: launched by it,
    /// on an agent that takes tasks. Every other live task (an older deployment's, or one on
    /// an agent that is draining or whose engine does not answer) is to be replaced.
    pub fn counts_for_primary(&self, t: &Task, primary_id: &str) -> bool {
        t.started_by == primary_id && self.agent_accepts_tasks(&t.agent_id)
    }

    pub fn tally(&self, name: &str) -> Tally {
        let primary = self
            .services
            .get(name)
            .and_then(Service::primary)
            .map(|d| d.id.as_str());
        let mut t = Tally::default();
        for task in self.service_tasks(name) {
            t.total += 1;
            if primary.is_some_and(|p| self.counts_for_primary(task, p)) {
                t.primary += 1;
            }
            if self.task_is_ready(task) {
                t.ready += 1;
            }
            if self.task_is_healthy(task) {
                t.healthy += 1;
            }
        }
        t
    }

    /// Per deployment id: its live tasks, RUNNING or not yet.
    pub fn deployment_counts(&self, name: &str) -> BTreeMap<String, DeploymentCount> {
        let mut counts: BTreeMap<String, DeploymentCount> = BTreeMap::new();
        for t in self.service_tasks(name) {
            let c = counts.entry(t.started_by.clone()).or_default();
            if t.last_status == TaskState::Running {
                c.running += 1;
            } else {
                c.pending += 1;
            }
        }
        counts
    }

    /// Makes `family:revision` the service's PRIMARY deployment; the previous primary
    /// becomes ACTIVE while it has tasks (they are replaced within the bounds), else
    /// INACTIVE.
    pub(super) fn start_deployment(&mut self, name: &str, family: &str, revision: u32, why: &str) {
        self.deployment_seq += 1;
        let id = format!("{DEPLOYMENT_ID_PREFIX}{}", self.deployment_seq);
        let counts = self.deployment_counts(name);
        let (clock, version) = (self.clock, self.revision);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let mut replaced = None;
        for d in &mut svc.deployments {
            if d.status == DeploymentStatus::Primary {
                replaced = Some(d.task_definition());
                d.status = if counts.contains_key(&d.id) {
                    DeploymentStatus::Active
                } else {
                    DeploymentStatus::Inactive
                };
                if d.rollout_state == RolloutState::InProgress {
                    d.rollout_state = RolloutState::Failed;
                    d.rollout_state_reason = format!("replaced by deployment {id}");
                }
                d.updated_at = clock;
            }
        }
        svc.deployments.insert(
            0,
            Deployment {
                id: id.clone(),
                family: family.to_string(),
                revision,
                status: DeploymentStatus::Primary,
                rollout_state: RolloutState::InProgress,
                rollout_state_reason: why.to_string(),
                failed_tasks: 0,
                created_at: clock,
                updated_at: clock,
            },
        );
        svc.family = family.to_string();
        svc.revision = revision;
        svc.updated_at = clock;
        svc.version = version;
        let message = match replaced {
            Some(old) => format!(
                "service {name} deployment {id} started: {family}:{revision} replaces {old} ({why})"
            ),
            None => format!("service {name} deployment {id} started: {family}:{revision}"),
        };
        self.service_event(name, message);
        self.settle_deployments(name);
    }

    /// Rollback to a deployment that still has tasks: it is PRIMARY again (IN_PROGRESS until
    /// it alone runs the desired count), the failed one ACTIVE until its tasks are gone.
    fn restore_deployment(&mut self, name: &str, back: &str, failed: &str) {
        let (clock, version) = (self.clock, self.revision);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let mut restored = None;
        for d in &mut svc.deployments {
            if d.id == back {
                d.status = DeploymentStatus::Primary;
                d.rollout_state = RolloutState::InProgress;
                d.rollout_state_reason = format!("rollback after deployment {failed} failed");
                d.updated_at = clock;
                restored = Some((d.family.clone(), d.revision));
            } else if d.id == failed {
                d.status = DeploymentStatus::Active;
                d.updated_at = clock;
            }
        }
        let Some((family, revision)) = restored else {
            return;
        };
        order(&mut svc.deployments);
        svc.family = family.clone();
        svc.revision = revision;
        svc.updated_at = clock;
        svc.version = version;
        self.service_event(
            name,
            format!(
                "service {name} rolled back to deployment {back} ({family}:{revision}) after \
                 deployment {failed} failed"
            ),
        );
        self.settle_deployments(name);
    }

    /// Brings a service's deployments up to date with its tasks: an ACTIVE deployment
    /// without tasks is INACTIVE; the PRIMARY is COMPLETED once it alone runs the desired
    /// count, every task healthy. Called after every change to the service or its tasks.
    pub(super) fn settle_deployments(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        if svc.status != ServiceStatus::Active {
            return;
        }
        let counts = self.deployment_counts(name);
        let primary_id = svc.primary().map(|d| d.id.clone());
        let others_live = counts.keys().any(|id| Some(id) != primary_id.as_ref());
        let complete = match &primary_id {
            Some(id) => {
                let mine: Vec<&Task> = self
                    .service_tasks(name)
                    .filter(|t| &t.started_by == id)
                    .collect();
                !others_live
                    && mine.len() == svc.desired_count as usize
                    && mine.iter().all(|t| self.task_is_healthy(t))
            }
            None => false,
        };
        let (clock, version) = (self.clock, self.revision);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let mut changed = false;
        let mut completed = None;
        for d in &mut svc.deployments {
            match d.status {
                DeploymentStatus::Active if !counts.contains_key(&d.id) => {
                    d.status = DeploymentStatus::Inactive;
                    d.updated_at = clock;
                    changed = true;
                }
                DeploymentStatus::Primary
                    if complete && d.rollout_state == RolloutState::InProgress =>
                {
                    d.rollout_state = RolloutState::Completed;
                    d.rollout_state_reason = "the service reached its desired count".into();
                    d.updated_at = clock;
                    completed = Some((d.id.clone(), d.task_definition()));
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            return;
        }
        order(&mut svc.deployments);
        let keep = svc
            .deployments
            .iter()
            .filter(|d| d.status != DeploymentStatus::Inactive)
            .count()
            + MAX_INACTIVE_DEPLOYMENTS;
        svc.deployments.truncate(keep);
        svc.version = version;
        if let Some((id, def)) = completed {
            self.service_event(
                name,
                format!("service {name} deployment {id} completed: {def} is running"),
            );
        }
    }

    /// A task of the service left its live set: a launch of the PRIMARY that failed (failed
    /// to start, its essential container exited, or it failed its health check) counts
    /// toward the circuit breaker.
    pub(super) fn count_failed_launch(&mut self, name: &str, task: &Task) {
        let failed = match task.stop_code {
            Some(StopCode::TaskFailedToStart) | Some(StopCode::EssentialContainerExited) => true,
            Some(StopCode::ServiceSchedulerInitiated) => {
                task.stopped_reason.as_deref() == Some(UNHEALTHY_REASON)
            }
            _ => false,
        };
        if !failed {
            return;
        }
        let (clock, version) = (self.clock, self.revision);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.status != ServiceStatus::Active {
            return;
        }
        let config = svc.deployment_configuration;
        let desired = svc.desired_count;
        let Some(d) = svc.deployments.iter_mut().find(|d| {
            d.id == task.started_by
                && d.status == DeploymentStatus::Primary
                && d.rollout_state == RolloutState::InProgress
        }) else {
            return;
        };
        d.failed_tasks = d.failed_tasks.saturating_add(1);
        d.updated_at = clock;
        svc.version = version;
        let threshold = breaker_threshold(desired);
        if !config.circuit_breaker || d.failed_tasks < threshold {
            return;
        }
        let (id, def, failed_tasks) = (d.id.clone(), d.task_definition(), d.failed_tasks);
        d.rollout_state = RolloutState::Failed;
        d.rollout_state_reason = format!(
            "circuit breaker: {failed_tasks} tasks failed to start or stay healthy (threshold \
             {threshold})"
        );
        let back_to = svc
            .deployments
            .iter()
            .find(|d| d.rollout_state == RolloutState::Completed)
            .map(|d| (d.id.clone(), d.family.clone(), d.revision, d.status));
        self.service_event(
            name,
            format!(
                "service {name} deployment {id} ({def}) failed: {failed_tasks} tasks failed \
                 (circuit breaker threshold {threshold})"
            ),
        );
        if !config.rollback {
            return;
        }
        match back_to {
            // Its tasks still run: it takes over again, and none of them is replaced.
            Some((back, _, _, DeploymentStatus::Active)) => {
                self.restore_deployment(name, &back, &id);
            }
            Some((back, family, revision, _)) => self.start_deployment(
                name,
                &family,
                revision,
                &format!("rollback to {family}:{revision} ({back}) after deployment {id} failed"),
            ),
            None => self.service_event(
                name,
                format!(
                    "service {name} has no COMPLETED deployment to roll back to; it launches \
                     no more tasks of {def}"
                ),
            ),
        }
    }
}

/// PRIMARY, then ACTIVE, then INACTIVE; newest first within each (the sort is stable and the
/// list is kept newest first).
fn order(deployments: &mut [Deployment]) {
    deployments.sort_by_key(|d| match d.status {
        DeploymentStatus::Primary => 0,
        DeploymentStatus::Active => 1,
        DeploymentStatus::Inactive => 2,
    });
}
