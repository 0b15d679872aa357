//! The leader's service scheduler: every pass compares each service's live tasks with its
//! desired count and writes the difference — launches through the same batcher and
//! placement engine as RunTask, stops of the newest tasks on scale-in.
//!
//! Everything it decides from is in the replicated state, so a new leader simply carries
//! on from the state it applied. What it proposes is re-checked at apply (a launch never
//! takes a service past its desired count, a scale-in never below it), so a pass that
//! acted on a state a little behind — a new leader's first — cannot double a service or
//! stop too much. The only memory kept here is the back-off of services whose launches
//! keep failing, and which placement failure was last written to a service's events; a
//! new leader starts both afresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::command::RunTaskRequest;
use berth_core::service::{service_group, RolloutState, ServiceStatus};
use berth_core::state::{Tally, SERVICE_FULL};
use berth_core::{ClusterState, DesiredStatus, HealthStatus, Outcome, StopCode, Task, TaskState};

use crate::error::ApiError;
use crate::node::{Node, WriteRequest};

/// How often services are reconciled when nothing else wakes the scheduler.
const TICK: Duration = Duration::from_millis(500);
/// A task that stops within this long of reaching RUNNING counts as a failed launch.
const MIN_HEALTHY_RUN: u64 = 10_000;
/// Back-off after the first failed launch; it doubles per consecutive failure…
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The same placement failure is written to a service's events at most this often.
const EVENT_REPEAT: Duration = Duration::from_secs(60);

/// What one pass decided for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Launch {
        service: String,
        /// The PRIMARY deployment's id, the tasks' `startedBy`.
        deployment: String,
        task_definition: String,
        count: u32,
        strategy: Vec<berth_core::command::PlacementStrategy>,
        constraints: Vec<berth_core::command::PlacementConstraint>,
    },
    Stop {
        service: String,
        task_ids: Vec<String>,
        /// Stops of tasks that failed their health check (replaced like any other loss).
        unhealthy: bool,
    },
}

/// The reconcile step, free of I/O. Per ACTIVE service: stop UNHEALTHY tasks; launch for
/// the PRIMARY deployment up to the desired count within maximumPercent; stop older
/// deployments' tasks while minimumHealthyPercent still holds without them; on scale-in,
/// stop the newest tasks first. A DRAINING service needs all of its tasks stopped. Apply
/// re-checks every bound, so a pass on a state a little behind cannot overshoot.
pub(crate) fn reconcile(state: &ClusterState) -> Vec<Action> {
    let mut actions = Vec::new();
    for svc in state.services() {
        let live: Vec<&Task> = state.service_tasks(&svc.name).collect();
        match svc.status {
            ServiceStatus::Inactive => continue,
            ServiceStatus::Draining => {
                if !live.is_empty() {
                    actions.push(Action::Stop {
                        service: svc.name.clone(),
                        task_ids: live.iter().map(|t| t.id.clone()).collect(),
                        unhealthy: false,
                    });
                }
                continue;
            }
            ServiceStatus::Active => {}
        }
        let Some(primary) = svc.primary() else {
            continue;
        };
        let (unhealthy, rest): (Vec<&Task>, Vec<&Task>) = live.into_iter().partition(|t| {
            t.last_status == TaskState::Running && t.health_status == HealthStatus::Unhealthy
        });
        if !unhealthy.is_empty() {
            actions.push(Action::Stop {
                service: svc.name.clone(),
                task_ids: unhealthy.iter().map(|t| t.id.clone()).collect(),
                unhealthy: true,
            });
        }
        let desired = svc.desired_count;
        let config = svc.deployment_configuration;
        let min_healthy = config.min_healthy(desired);
        // Tasks of older deployments, and tasks on agents that are draining or whose engine
        // does not answer, are replaced: a new one first where maximumPercent allows, the
        // old one stopped while minimumHealthyPercent still holds.
        let (mut mine, mut old): (Vec<&Task>, Vec<&Task>) = rest
            .iter()
            .partition(|t| state.counts_for_primary(t, &primary.id));
        // UNHEALTHY tasks are neither ready nor healthy: the tally needs no correction for
        // the ones stopped above.
        let mut tally = state.tally(&svc.name);
        let failed = primary.rollout_state == RolloutState::Failed;
        if !failed {
            let room = (desired as usize)
                .saturating_sub(mine.len())
                .min((config.max_total(desired) as usize).saturating_sub(rest.len()));
            if room > 0 {
                actions.push(Action::Launch {
                    service: svc.name.clone(),
                    deployment: primary.id.clone(),
                    task_definition: primary.task_definition(),
                    count: (room as u32).min(berth_core::limits::MAX_RUN_COUNT),
                    strategy: svc.placement_strategy.clone(),
                    constraints: svc.placement_constraints.clone(),
                });
            }
        }
        let mut stops = Vec::new();
        let mut take = |t: &Task, tally: &mut Tally| {
            let (ready, healthy) = (state.task_is_ready(t), state.task_is_healthy(t));
            if !tally.keeps_min(ready, healthy, min_healthy) {
                return false;
            }
            tally.remove(ready, healthy);
            stops.push(t.id.clone());
            true
        };
        // A FAILED primary launches nothing, so the older tasks it would replace stay.
        if !failed {
            // Tasks not RUNNING first, then those not yet proven healthy, then the oldest.
            old.sort_by_key(|t| {
                let proven = (state.task_is_ready(t), state.task_is_healthy(t));
                (proven, t.created_at, t.id.clone())
            });
            for t in old {
                take(t, &mut tally);
            }
        }
        if mine.len() > desired as usize {
            // Not yet RUNNING before RUNNING, then newest first: scaling in should cost
            // the least work already done.
            mine.sort_by(|a, b| {
                let running = |t: &Task| t.last_status == TaskState::Running;
                running(a)
                    .cmp(&running(b))
                    .then(b.created_at.cmp(&a.created_at))
                    .then(b.id.cmp(&a.id))
            });
            let mut excess = mine.len() - desired as usize;
            for t in mine {
                if excess == 0 {
                    break;
                }
                if take(t, &mut tally) {
                    excess -= 1;
                }
            }
        }
        if !stops.is_empty() {
            actions.push(Action::Stop {
                service: svc.name.clone(),
                task_ids: stops,
                unhealthy: false,
            });
        }
    }
    actions
}

/// Per service, on this leader only.
#[derive(Default)]
struct Memory {
    /// The PRIMARY deployment the back-off belongs to; a new deployment starts afresh.
    deployment: String,
    /// Consecutive failed launches, and no launch before `until`.
    failures: u32,
    until: Option<Instant>,
    /// Tasks this leader launched whose fate (RUNNING long enough, or failed) is not known.
    watching: Vec<String>,
    /// The last placement failure written to the events, and when.
    last_event: Option<(String, Instant)>,
}

impl Memory {
    fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let wait = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        self.until = Some(now + wait);
    }
    fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }
    /// Settles what is known about the launched tasks.
    fn review(&mut self, state: &ClusterState, now: Instant) {
        let clock = state.clock();
        let mut failed = 0;
        let mut ok = false;
        self.watching.retain(|id| {
            let Some(t) = state.task(id) else {
                return false;
            };
            if t.last_status == TaskState::Stopped || t.desired_status == DesiredStatus::Stopped {
                // Lost with its agent, or stopped by someone: not the application's fault.
                let benign = matches!(
                    t.stop_code,
                    Some(StopCode::InfrastructureHealth)
                        | Some(StopCode::UserInitiated)
                        | Some(StopCode::ServiceSchedulerInitiated)
                );
                let short = match (t.started_at, t.stopped_at.or(t.stopping_at)) {
                    (Some(start), Some(stop)) => stop.saturating_sub(start) < MIN_HEALTHY_RUN,
                    (None, _) => true,
                    _ => false,
                };
                if !benign && short {
                    failed += 1;
                }
                return false;
            }
            match t.started_at {
                Some(start) if clock.saturating_sub(start) >= MIN_HEALTHY_RUN => {
                    ok = true;
                    false
                }
                _ => true,
            }
        });
        if failed > 0 {
            for _ in 0..failed {
                self.failed(now);
            }
        } else if ok {
            self.succeeded();
        }
    }
}

/// What a pass wants done about time: nothing, a [`Command::Tick`] now (the leader's clock
/// has reached the time a task turns healthy, which the state cannot see until a batch
/// carries it), or a wake-up at that time.
///
/// [`Command::Tick`]: berth_core::Command::Tick
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    Idle,
    TickNow,
    WakeIn(Duration),
}

pub(crate) fn clock_due(state: &ClusterState, now_ms: u64) -> Clock {
    match state.next_healthy_at() {
        None => Clock::Idle,
        Some(at) if at <= now_ms => Clock::TickNow,
        Some(at) => Clock::WakeIn(Duration::from_millis(at - now_ms)),
    }
}

pub(crate) async fn run(node: Arc<Node>) {
    let mut memory: HashMap<String, Memory> = HashMap::new();
    let mut wait = TICK;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.shutdown.wait() => return,
        }
        wait = TICK;
        if !node.is_leader() {
            memory.clear();
            continue;
        }
        let now = Instant::now();
        let (actions, clock, scales) = {
            let s = node.state.read();
            let now_ms = crate::node::now_ms();
            let clock = clock_due(&s.state, now_ms);
            let scales = crate::autoscaler::autoscale(&s.state, now_ms);
            memory.retain(|name, _| s.state.service(name).is_some());
            for (name, m) in memory.iter_mut() {
                let primary = s.state.service(name).and_then(|svc| svc.primary());
                if let Some(d) = primary.filter(|d| d.id != m.deployment) {
                    m.deployment = d.id.clone();
                    m.succeeded();
                }
                m.review(&s.state, now);
            }
            (reconcile(&s.state), clock, scales)
        };
        for x in scales {
            let req = WriteRequest::AutoscaleService {
                name: x.service.clone(),
                from: x.from,
                to: x.to,
                reason: x.reason,
            };
            match node.write(req).await {
                // The new count is acted on by the next pass.
                Ok(_) => wait = Duration::ZERO,
                Err(e) => tracing::debug!(service = %x.service, error = %e, "autoscaling refused"),
            }
        }
        match clock {
            Clock::Idle => {}
            // The tick makes tasks healthy; the pass right after it acts on them.
            Clock::TickNow => match node.write(WriteRequest::Tick).await {
                Ok(_) => wait = Duration::ZERO,
                Err(e) => tracing::debug!(error = %e, "service scheduler tick failed"),
            },
            Clock::WakeIn(d) => wait = d.min(TICK),
        }
        let mut pending = Vec::new();
        for action in actions {
            let name = match &action {
                Action::Launch { service, .. } | Action::Stop { service, .. } => service.clone(),
            };
            let m = memory.entry(name.clone()).or_default();
            if matches!(action, Action::Launch { .. }) && m.until.is_some_and(|u| now < u) {
                continue;
            }
            pending.push((name, action));
        }
        // Concurrently, so the batcher groups one pass's writes into one Raft entry.
        let mut writes = tokio::task::JoinSet::new();
        for (name, action) in pending {
            let node = node.clone();
            writes.spawn(async move {
                let result = execute(&node, &action).await;
                (name, action, result)
            });
        }
        while let Some(done) = writes.join_next().await {
            let Ok((name, action, result)) = done else {
                continue;
            };
            let m = memory.entry(name.clone()).or_default();
            let launch = matches!(action, Action::Launch { .. });
            // Why the launch placed nothing, for the service's events; None when it did.
            let failure = match result {
                Ok(Outcome::Tasks { tasks, failures }) if launch => {
                    m.watching.extend(tasks.iter().map(|t| t.id.clone()));
                    failures
                        .iter()
                        .find(|f| f.reason != SERVICE_FULL)
                        .map(|f| format!("{} ({})", f.reason, f.detail))
                }
                Ok(_) => None,
                // Refused before placement for a reason its owner must fix (a secret its
                // namespace lacks, a definition gone): backed off and told like a failed
                // placement, not retried silently on every pass.
                Err(
                    ApiError::FailedPrecondition(why)
                    | ApiError::NotFound(why)
                    | ApiError::InvalidArgument(why),
                ) if launch => Some(why),
                Err(e) => {
                    // The next pass tries again; a lost leadership clears this memory.
                    tracing::debug!(service = %name, error = %e, "service scheduler write failed");
                    None
                }
            };
            if let Some(why) = failure {
                m.failed(now);
                let message = format!("service {name} was unable to place a task: {why}");
                let repeat = m.last_event.as_ref().is_some_and(|(msg, at)| {
                    *msg == message && now.duration_since(*at) < EVENT_REPEAT
                });
                if !repeat {
                    m.last_event = Some((message.clone(), now));
                    let _ = node
                        .write(WriteRequest::NoteServiceEvent {
                            name: name.clone(),
                            message,
                        })
                        .await;
                }
            }
        }
    }
}

async fn execute(node: &Node, action: &Action) -> crate::error::ApiResult<Outcome> {
    let req = match action {
        Action::Launch {
            service,
            deployment,
            task_definition,
            count,
            strategy,
            constraints,
        } => WriteRequest::RunTask(RunTaskRequest {
            task_definition: task_definition.clone(),
            count: *count,
            client_token: None,
            started_by: deployment.clone(),
            group: service_group(service),
            overrides: Vec::new(),
            placement_strategy: strategy.clone(),
            placement_constraints: constraints.clone(),
            service: Some(service.clone()),
            timeouts: Default::default(),
            retry: None,
        }),
        Action::Stop {
            service,
            task_ids,
            unhealthy,
        } => WriteRequest::StopServiceTasks {
            service: service.clone(),
            task_ids: task_ids.clone(),
            unhealthy: *unhealthy,
        },
    };
    node.write(req).await.map(|(_, outcome)| outcome)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_core::command::*;
    use berth_core::service::{ServiceCreate, ServiceUpdate};
    use berth_core::{Batch, Command, ContainerDefinition, TaskDefinitionSpec};

    /// Applies `c` one millisecond after the state's clock.
    pub(crate) fn apply(s: &mut ClusterState, c: Command) {
        let now = s.clock().max(1_000) + 1;
        apply_at(s, now, c);
    }

    pub(crate) fn apply_at(s: &mut ClusterState, now: u64, c: Command) {
        let rev = s.revision() + 1;
        let r = s.apply(
            rev,
            &Batch {
                now,
                commands: vec![c],
            },
        );
        assert!(r[0].is_ok(), "{r:?}");
    }

    /// The leader's clock reaches the next time a task turns healthy, and it ticks.
    fn next_tick(s: &mut ClusterState) {
        let at = s.next_healthy_at().expect("a task waiting to turn healthy");
        assert_eq!(
            clock_due(s, at - 1),
            Clock::WakeIn(Duration::from_millis(1))
        );
        assert_eq!(clock_due(s, at), Clock::TickNow);
        apply_at(s, at, Command::Tick);
    }

    pub(crate) fn report(s: &mut ClusterState, id: &str, health: Option<HealthStatus>) {
        let containers = match health {
            Some(h) => vec![berth_core::ContainerState {
                name: "app".into(),
                last_status: TaskState::Running,
                exit_code: None,
                reason: None,
                health_status: Some(h),
                network_bindings: vec![],
            }],
            None => vec![],
        };
        apply(
            s,
            Command::ReportTasks {
                agent_id: "a1".into(),
                epoch: 1,
                reports: vec![berth_core::TaskReport {
                    task_id: id.into(),
                    last_status: TaskState::Running,
                    at: 2_000,
                    containers,
                    stop_code: None,
                    stopped_reason: None,
                }],
            },
        );
    }

    fn web() -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "web".into(),
            cpu: Some(256),
            memory: Some(512),
            network_mode: None,
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "img".into(),
                ..Default::default()
            }],
            timeouts: Default::default(),
        }
    }

    pub(crate) fn state_with(desired: u32, live: usize) -> ClusterState {
        let mut s = ClusterState::new();
        apply(&mut s, Command::RegisterTaskDefinition { spec: web() });
        apply(
            &mut s,
            Command::RegisterAgent(AgentRegistration {
                id: "a1".into(),
                cpu: 16384,
                memory: 32768,
                attributes: Default::default(),
                address: String::new(),
            }),
        );
        apply(
            &mut s,
            Command::CreateService(ServiceCreate {
                name: "api".into(),
                family: "web".into(),
                revision: 1,
                desired_count: live as u32,
                placement_strategy: vec![],
                placement_constraints: vec![],
                deployment_configuration: Default::default(),
                client_token: None,
                fingerprint: 0,
            }),
        );
        let deployment = s.service("api").unwrap().primary().unwrap().id.clone();
        for i in 0..live {
            apply(
                &mut s,
                Command::RunTasks(RunTasks {
                    family: "web".into(),
                    revision: 1,
                    client_token: None,
                    fingerprint: 0,
                    started_by: deployment.clone(),
                    group: "service:api".into(),
                    overrides: vec![],
                    placements: vec![Placement {
                        task_id: format!("t{i}"),
                        agent_id: "a1".into(),
                    }],
                    failures: vec![],
                    service: Some("api".into()),
                    run: None,
                    timeouts: Default::default(),
                    retry: None,
                }),
            );
        }
        apply(
            &mut s,
            Command::UpdateService(ServiceUpdate {
                name: "api".into(),
                desired_count: Some(desired),
                ..Default::default()
            }),
        );
        s
    }

    #[test]
    fn a_service_short_of_its_count_gets_a_launch_of_the_difference() {
        let s = state_with(5, 2);
        assert_eq!(
            reconcile(&s),
            vec![Action::Launch {
                service: "api".into(),
                deployment: "berth-svc/1".into(),
                task_definition: "web:1".into(),
                count: 3,
                strategy: vec![],
                constraints: vec![],
            }]
        );
        // A launch is at most RunTask's 10; the next pass launches the rest.
        let s = state_with(25, 0);
        assert!(matches!(reconcile(&s)[0], Action::Launch { count: 10, .. }));
    }

    #[test]
    fn scale_in_stops_the_newest_tasks_first() {
        let s = state_with(1, 3);
        assert_eq!(
            reconcile(&s),
            vec![Action::Stop {
                service: "api".into(),
                task_ids: vec!["t2".into(), "t1".into()],
                unhealthy: false,
            }]
        );
    }

    #[test]
    fn a_service_at_its_count_needs_nothing() {
        assert!(reconcile(&state_with(3, 3)).is_empty());
        assert!(reconcile(&state_with(0, 0)).is_empty());
    }

    #[test]
    fn a_new_revision_is_launched_within_maximum_percent_and_old_tasks_go_once_new_ones_stay_up() {
        let mut s = state_with(2, 2);
        report(&mut s, "t0", None);
        report(&mut s, "t1", None);
        // Reported a millisecond apart: each turns healthy at its own time.
        next_tick(&mut s);
        next_tick(&mut s);
        assert_eq!(clock_due(&s, s.clock()), Clock::Idle);
        apply(&mut s, Command::RegisterTaskDefinition { spec: web() });
        apply(
            &mut s,
            Command::UpdateService(ServiceUpdate {
                name: "api".into(),
                task_definition: Some(("web".into(), 2)),
                ..Default::default()
            }),
        );
        // 200 %: both replacements at once; 100 % healthy: no old task stops yet.
        let actions = reconcile(&s);
        assert_eq!(actions.len(), 1, "{actions:?}");
        let Action::Launch {
            deployment,
            task_definition,
            count,
            ..
        } = &actions[0]
        else {
            panic!("{actions:?}")
        };
        assert_eq!((task_definition.as_str(), *count), ("web:2", 2));
        apply(
            &mut s,
            Command::RunTasks(RunTasks {
                family: "web".into(),
                revision: 2,
                client_token: None,
                fingerprint: 0,
                started_by: deployment.clone(),
                group: "service:api".into(),
                overrides: vec![],
                placements: ["n0", "n1"]
                    .iter()
                    .map(|id| Placement {
                        task_id: id.to_string(),
                        agent_id: "a1".into(),
                    })
                    .collect(),
                failures: vec![],
                service: Some("api".into()),
                run: None,
                timeouts: Default::default(),
                retry: None,
            }),
        );
        assert!(reconcile(&s).is_empty());
        report(&mut s, "n0", None);
        // RUNNING is not yet healthy: the old tasks stay until it has stayed up.
        assert!(reconcile(&s).is_empty());
        next_tick(&mut s);
        assert_eq!(
            reconcile(&s),
            vec![Action::Stop {
                service: "api".into(),
                task_ids: vec!["t0".into()],
                unhealthy: false,
            }]
        );
    }

    #[test]
    fn an_unhealthy_task_is_stopped_as_such() {
        let mut s = state_with(1, 1);
        report(&mut s, "t0", Some(HealthStatus::Unhealthy));
        let actions = reconcile(&s);
        assert_eq!(
            actions[0],
            Action::Stop {
                service: "api".into(),
                task_ids: vec!["t0".into()],
                unhealthy: true,
            }
        );
        // Its replacement is asked for in the same pass (apply admits it once the stop
        // has left room).
        assert!(matches!(actions[1], Action::Launch { count: 1, .. }));
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_its_cap_and_resets_on_success() {
        let now = Instant::now();
        let mut m = Memory::default();
        m.failed(now);
        assert_eq!(m.until, Some(now + BACKOFF_BASE));
        m.failed(now);
        assert_eq!(m.until, Some(now + BACKOFF_BASE * 2));
        for _ in 0..20 {
            m.failed(now);
        }
        assert_eq!(m.until, Some(now + BACKOFF_MAX));
        m.succeeded();
        assert_eq!((m.failures, m.until), (0, None));
    }
}
