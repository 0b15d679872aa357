//! Services in the replicated state: create, update, delete, their events, and the index of
//! each service's live tasks that the scheduler counts and apply re-checks.

use std::collections::BTreeSet;

use super::deployments::UNHEALTHY_REASON;
use super::{take_due, ClusterState};
use crate::command::{CommandResult, Outcome, RunTasks};
use crate::error::Error;
use crate::limits::*;
use crate::model::{DesiredStatus, HealthStatus, StopCode, Task, TaskDefinitionStatus, TaskState};
use crate::quote::quote;
use crate::service::*;

impl ClusterState {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// Every service, INACTIVE ones included, by name.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Ids of the service's tasks whose desired status is RUNNING, oldest id order.
    pub fn service_tasks(&self, name: &str) -> impl Iterator<Item = &Task> {
        self.service_tasks
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    fn live_count(&self, name: &str) -> usize {
        self.service_tasks.get(name).map_or(0, BTreeSet::len)
    }

    pub(super) fn create_service(&mut self, c: &ServiceCreate) -> CommandResult {
        validate_name(&c.name)?;
        if let Some(existing) = self.services.get(&c.name) {
            if existing.status != ServiceStatus::Inactive {
                if c.client_token.is_some() && existing.client_token == c.client_token {
                    if existing.fingerprint == c.fingerprint {
                        return Ok(Outcome::Service(existing.clone()));
                    }
                    return Err(Error::invalid(format!(
                        "clientToken {} was used to create service {} with other parameters",
                        quote(c.client_token.as_deref().unwrap_or_default()),
                        c.name
                    )));
                }
                return Err(Error::AlreadyExists(format!(
                    "service {} already exists ({}); update it, or delete it first",
                    c.name, existing.status
                )));
            }
        }
        let live = self
            .services
            .values()
            .filter(|s| s.status != ServiceStatus::Inactive)
            .count();
        if live >= MAX_SERVICES {
            return Err(Error::precondition(format!(
                "the cluster has {live} services; the limit is {MAX_SERVICES}"
            )));
        }
        desired_count(i64::from(c.desired_count))?;
        c.deployment_configuration.check(c.desired_count)?;
        let def = self.task_definition(&c.family, Some(c.revision))?;
        let def_name = def.name();
        if def.status != TaskDefinitionStatus::Active {
            return Err(Error::precondition(format!(
                "task definition {def_name} is INACTIVE; a service runs an ACTIVE revision"
            )));
        }
        let svc = Service {
            name: c.name.clone(),
            family: c.family.clone(),
            revision: c.revision,
            desired_count: c.desired_count,
            placement_strategy: c.placement_strategy.clone(),
            placement_constraints: c.placement_constraints.clone(),
            deployment_configuration: c.deployment_configuration,
            deployments: Vec::new(),
            status: ServiceStatus::Active,
            client_token: c.client_token.clone(),
            fingerprint: c.fingerprint,
            created_at: self.clock,
            updated_at: self.clock,
            inactive_at: None,
            events: Vec::new(),
            version: self.revision,
            scaling: None,
        };
        self.services.insert(svc.name.clone(), svc);
        self.service_event(
            &c.name,
            format!(
                "service {} was created with {} at desired count {}",
                c.name, def_name, c.desired_count
            ),
        );
        self.start_deployment(&c.name, &c.family, c.revision, "service created");
        Ok(Outcome::Service(self.services[&c.name].clone()))
    }

    pub(super) fn active_service_mut(&mut self, name: &str) -> Result<&mut Service, Error> {
        let svc = self
            .services
            .get_mut(name)
            .ok_or_else(|| Error::not_found(format!("service {} does not exist", quote(name))))?;
        match svc.status {
            ServiceStatus::Active => Ok(svc),
            other => Err(Error::precondition(format!(
                "service {name} is {other} (deleted); create it again to run it"
            ))),
        }
    }

    pub(super) fn update_service(&mut self, u: &ServiceUpdate) -> CommandResult {
        let name = u.name.as_str();
        let (clock, revision) = (self.clock, self.revision);
        let svc = self.active_service_mut(name)?;
        let desired = match u.desired_count {
            Some(n) => desired_count(i64::from(n))?,
            None => svc.desired_count,
        };
        let config = u
            .deployment_configuration
            .unwrap_or(svc.deployment_configuration);
        config.check(desired)?;
        let current = (svc.family.clone(), svc.revision);
        let target = match &u.task_definition {
            Some((family, rev)) => (family.clone(), *rev),
            None => current.clone(),
        };
        if target != current {
            let def = self.task_definition(&target.0, Some(target.1))?;
            if def.status != TaskDefinitionStatus::Active {
                return Err(Error::precondition(format!(
                    "task definition {} is INACTIVE; a service runs an ACTIVE revision",
                    def.name()
                )));
            }
        }
        let svc = self.active_service_mut(name)?;
        if svc.deployment_configuration != config {
            svc.deployment_configuration = config;
            svc.updated_at = clock;
            svc.version = revision;
        }
        if svc.desired_count != desired {
            let was = svc.desired_count;
            svc.desired_count = desired;
            svc.updated_at = clock;
            svc.version = revision;
            self.service_event(
                name,
                format!("service {name} desired count changed from {was} to {desired}"),
            );
        }
        if target != current {
            self.start_deployment(name, &target.0, target.1, "task definition updated");
        } else if u.force_new_deployment {
            self.start_deployment(name, &target.0, target.1, "new deployment forced");
        }
        self.settle_deployments(name);
        Ok(Outcome::Service(self.services[name].clone()))
    }

    pub(super) fn delete_service(&mut self, name: &str, force: bool) -> CommandResult {
        let (clock, revision) = (self.clock, self.revision);
        let svc = self.active_service_mut(name)?;
        if svc.desired_count > 0 && !force {
            return Err(Error::precondition(format!(
                "service {name} has desired count {}; scale it to 0 first (berth service update \
                 {name} --desired 0) or delete it with force",
                svc.desired_count
            )));
        }
        svc.desired_count = 0;
        svc.status = ServiceStatus::Draining;
        svc.updated_at = clock;
        svc.version = revision;
        self.service_event(name, format!("service {name} was deleted"));
        self.settle_draining(name);
        Ok(Outcome::Service(self.services[name].clone()))
    }

    /// A DRAINING service with no live task left becomes INACTIVE.
    fn settle_draining(&mut self, name: &str) {
        if self.live_count(name) > 0 {
            return;
        }
        let (clock, revision) = (self.clock, self.revision);
        if let Some(svc) = self.services.get_mut(name) {
            if svc.status == ServiceStatus::Draining {
                svc.status = ServiceStatus::Inactive;
                svc.inactive_at = Some(clock);
                svc.version = revision;
                self.service_expiry
                    .insert((clock + INACTIVE_SERVICE_RETENTION_MS, name.to_string()));
            }
        }
    }

    /// Adds an event, newest first; the same message twice in a row is kept once (with the
    /// newer time), so a scheduler that keeps failing the same way does not flood the list.
    pub(super) fn service_event(&mut self, name: &str, mut message: String) {
        let (clock, revision) = (self.clock, self.revision);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if message.len() > MAX_SERVICE_EVENT_LEN {
            let mut end = MAX_SERVICE_EVENT_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        svc.version = revision;
        self.changes.push(super::Change::ServiceEvent {
            service: name.to_string(),
            message: message.clone(),
        });
        if let Some(first) = svc.events.first_mut() {
            if first.message == message {
                first.at = clock;
                return;
            }
        }
        svc.events.insert(0, ServiceEvent { at: clock, message });
        svc.events.truncate(MAX_SERVICE_EVENTS);
    }

    /// The apply-time guard on a service launch: the service is ACTIVE, runs this revision,
    /// and has room for the tasks. Returns how many of the placements may be launched.
    pub(super) fn service_room(&self, run: &RunTasks) -> Result<usize, Error> {
        let Some(name) = &run.service else {
            if service_of_group(&run.group).is_some() {
                return Err(Error::invalid(format!(
                    "group {} is reserved for services",
                    quote(&run.group)
                )));
            }
            return Ok(run.placements.len());
        };
        let svc = self
            .services
            .get(name)
            .filter(|s| s.status == ServiceStatus::Active)
            .ok_or_else(|| Error::precondition(format!("service {name} is not ACTIVE")))?;
        let primary = svc
            .primary()
            .ok_or_else(|| Error::precondition(format!("service {name} has no deployment")))?;
        if (primary.family.as_str(), primary.revision) != (run.family.as_str(), run.revision)
            || run.group != svc.group()
            || run.started_by != primary.id
        {
            return Err(Error::precondition(format!(
                "service {name} launches {} for deployment {}, not {}:{} for {}",
                primary.task_definition(),
                primary.id,
                run.family,
                run.revision,
                quote(&run.started_by)
            )));
        }
        if primary.rollout_state == RolloutState::Failed {
            return Ok(0);
        }
        let desired = svc.desired_count;
        let max_total = svc.deployment_configuration.max_total(desired);
        let t = self.tally(name);
        let room = desired
            .saturating_sub(t.primary)
            .min(max_total.saturating_sub(t.total));
        Ok((room as usize).min(run.placements.len()))
    }

    /// Notes launched tasks in the service's events.
    pub(super) fn service_launched(&mut self, name: &str, tasks: &[Task]) {
        if tasks.is_empty() {
            return;
        }
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        self.service_event(
            name,
            format!(
                "service {name} has started {} task{}: {}",
                tasks.len(),
                if tasks.len() == 1 { "" } else { "s" },
                ids.join(", ")
            ),
        );
    }

    /// Stops the scheduler asked for, each re-checked against the service as it is now:
    /// a DRAINING service stops anything; `unhealthy` stops only UNHEALTHY tasks; a task of
    /// the PRIMARY deployment is stopped only above the desired count (scale-in); a task
    /// of an older deployment only while enough healthy tasks remain.
    pub(super) fn stop_service_tasks(
        &mut self,
        name: &str,
        task_ids: &[String],
        unhealthy: bool,
    ) -> CommandResult {
        let svc = self
            .services
            .get(name)
            .ok_or_else(|| Error::not_found(format!("service {} does not exist", quote(name))))?;
        let active = svc.status == ServiceStatus::Active;
        let desired = if active { svc.desired_count } else { 0 };
        let min_healthy = svc.deployment_configuration.min_healthy(desired);
        let primary = svc.primary().map(|d| d.id.clone()).unwrap_or_default();
        let mut tally = self.tally(name);
        let mut stopped = Vec::new();
        let mut failed_checks = Vec::new();
        for id in task_ids {
            let live = self.service_tasks.get(name).is_some_and(|s| s.contains(id));
            let Some(t) = self.tasks.get(id).filter(|_| live) else {
                continue;
            };
            let ready = self.task_is_ready(t);
            let healthy = self.task_is_healthy(t);
            let is_primary = self.counts_for_primary(t, &primary);
            let placed_well = self.agent_accepts_tasks(&t.agent_id);
            let keeps_min = tally.keeps_min(ready, healthy, min_healthy);
            let (allowed, reason) = if !active {
                (true, "Service deleted".to_string())
            } else if unhealthy {
                (
                    t.health_status == HealthStatus::Unhealthy,
                    UNHEALTHY_REASON.to_string(),
                )
            } else if is_primary {
                (
                    tally.primary > desired && keeps_min,
                    "Scaling activity initiated by the service scheduler".to_string(),
                )
            } else if !placed_well {
                (
                    keeps_min,
                    format!(
                        "Agent {} is draining or its engine does not answer; replaced elsewhere",
                        t.agent_id
                    ),
                )
            } else {
                (
                    keeps_min,
                    format!("Scaling activity initiated by (deployment {primary})"),
                )
            };
            if !allowed {
                continue;
            }
            if let Ok(Outcome::Task(t)) =
                self.stop_task(id, &reason, StopCode::ServiceSchedulerInitiated)
            {
                tally.remove(ready, healthy);
                if is_primary {
                    tally.primary -= 1;
                }
                if unhealthy {
                    failed_checks.push(t.id.clone());
                }
                stopped.push(t);
            }
        }
        for id in failed_checks {
            self.service_event(
                name,
                format!("service {name} task {id} failed its health check"),
            );
        }
        if !stopped.is_empty() {
            let ids: Vec<&str> = stopped.iter().map(|t| t.id.as_str()).collect();
            self.service_event(
                name,
                format!(
                    "service {name} has stopped {} running task{}: {}",
                    stopped.len(),
                    if stopped.len() == 1 { "" } else { "s" },
                    ids.join(", ")
                ),
            );
        }
        Ok(Outcome::Tasks {
            tasks: stopped,
            failures: Vec::new(),
        })
    }

    /// Keeps the live-task index in step with a task change; called for every change.
    pub(super) fn track_service_task(&mut self, task: &Task) {
        let Some(name) = service_of_group(&task.group) else {
            return;
        };
        if task.desired_status == DesiredStatus::Running {
            self.service_tasks
                .entry(name.to_string())
                .or_default()
                .insert(task.id.clone());
            // Steady state (and a completed rollout) is reached when the last task turns
            // RUNNING or HEALTHY; other changes cannot reach it, and checking costs a pass
            // over the service's tasks.
            if task.last_status == TaskState::Running {
                let name = name.to_string();
                self.settle_deployments(&name);
                self.note_steady_state(&name);
            }
            return;
        }
        let removed = match self.service_tasks.get_mut(name) {
            Some(set) => {
                let removed = set.remove(&task.id);
                if set.is_empty() {
                    self.service_tasks.remove(name);
                }
                removed
            }
            None => false,
        };
        if removed {
            let name = name.to_string();
            self.count_failed_launch(&name, task);
            if task.stop_code != Some(StopCode::ServiceSchedulerInitiated) {
                let why = task.stopped_reason.as_deref().unwrap_or("it stopped");
                let code = task.stop_code.map(|c| c.as_str()).unwrap_or("");
                self.service_event(
                    &name,
                    format!("service {name} task {} stopped ({code}: {why})", task.id),
                );
            }
            self.settle_draining(&name);
            self.settle_deployments(&name);
        }
    }

    /// ECS's "has reached a steady state": the desired count of tasks, all RUNNING.
    fn note_steady_state(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        if svc.status != ServiceStatus::Active
            || self.live_count(name) != svc.desired_count as usize
        {
            return;
        }
        let primary = svc.primary().map(|d| d.id.as_str());
        let steady = self
            .service_tasks(name)
            .all(|t| Some(t.started_by.as_str()) == primary && self.task_is_ready(t));
        if steady {
            self.service_event(name, format!("service {name} has reached a steady state"));
        }
    }

    /// Forgets INACTIVE services an hour after they became so (a service created again
    /// under the name in the meantime is kept).
    pub(super) fn collect_services(&mut self) {
        let now = self.clock;
        for name in take_due(&mut self.service_expiry, now) {
            let expired = self.services.get(&name).is_some_and(|s| {
                s.status == ServiceStatus::Inactive
                    && s.inactive_at
                        .is_some_and(|t| t + INACTIVE_SERVICE_RETENTION_MS <= now)
            });
            if expired {
                self.services.remove(&name);
            }
        }
    }

    /// The live-task index recomputed from the tasks, for `check_invariants`.
    pub(super) fn check_service_index(&self) -> Result<(), String> {
        let mut expect: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
        for t in self.tasks.values() {
            if let Some(name) = service_of_group(&t.group) {
                if t.desired_status == DesiredStatus::Running {
                    expect.entry(name).or_default().insert(t.id.as_str());
                }
            }
        }
        let have: std::collections::BTreeMap<&str, BTreeSet<&str>> = self
            .service_tasks
            .iter()
            .map(|(n, s)| (n.as_str(), s.iter().map(String::as_str).collect()))
            .collect();
        if have != expect {
            return Err("the service task index disagrees with the tasks".into());
        }
        if let Some(name) = have.keys().find(|n| !self.services.contains_key(**n)) {
            return Err(format!("tasks run for unknown service {name}"));
        }
        for svc in self.services.values() {
            let primaries = svc
                .deployments
                .iter()
                .filter(|d| d.status == DeploymentStatus::Primary)
                .count();
            if svc.status == ServiceStatus::Active && primaries != 1 {
                return Err(format!(
                    "service {} has {primaries} PRIMARY deployments",
                    svc.name
                ));
            }
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), Error> {
    crate::validate::qualified_name("serviceName", name)
}
