//! Deployments in the state machine: the bounds a rollout keeps are enforced at apply, a
//! rollout completes only when the new revision alone runs healthy, the circuit breaker trips
//! and rolls back, and unhealthy tasks are replaced.

use super::*;
use crate::service::*;

fn with_check(family: &str) -> TaskDefinitionSpec {
    let mut s = spec(family);
    s.container_definitions[0].health_check = Some(HealthCheck {
        command: vec!["CMD-SHELL".into(), "true".into()],
        ..Default::default()
    });
    s
}

fn create(desired: u32, config: DeploymentConfiguration) -> Command {
    Command::CreateService(ServiceCreate {
        deployment_configuration: config,
        ..service_create("api", desired)
    })
}

fn primary(h: &Harness) -> Deployment {
    h.state
        .service("api")
        .and_then(|s| s.primary().cloned())
        .expect("a primary deployment")
}

/// A launch for the current primary deployment, as the scheduler proposes it.
fn launch(h: &Harness, ids: &[&str]) -> Command {
    let d = primary(h);
    Command::RunTasks(RunTasks {
        family: d.family,
        revision: d.revision,
        client_token: None,
        fingerprint: 0,
        started_by: d.id,
        group: "service:api".into(),
        overrides: vec![],
        placements: ids
            .iter()
            .enumerate()
            .map(|(i, t)| Placement {
                task_id: t.to_string(),
                agent_id: if i % 2 == 0 { "a1" } else { "a2" }.into(),
            })
            .collect(),
        failures: vec![],
        service: Some("api".into()),
        run: None,
        timeouts: Default::default(),
        retry: None,
    })
}

/// Reports the tasks RUNNING, then lets the minimum healthy time pass (the leader's tick).
fn running(h: &mut Harness, ids: &[&str]) {
    just_running(h, ids);
    min_healthy_time_passes(h);
}

fn just_running(h: &mut Harness, ids: &[&str]) {
    for id in ids {
        let agent = h.state.task(id).unwrap().agent_id.clone();
        h.one(reports(
            &agent,
            1,
            vec![report(id, TaskState::Running, h.now)],
        ))
        .unwrap();
    }
}

fn min_healthy_time_passes(h: &mut Harness) {
    h.now += u64::from(crate::limits::DEFAULT_MIN_HEALTHY_TIME_MS);
    h.one(Command::Tick).unwrap();
}

fn health(h: &mut Harness, id: &str, status: HealthStatus) {
    let agent = h.state.task(id).unwrap().agent_id.clone();
    let mut r = report(id, TaskState::Running, h.now);
    r.containers = vec![ContainerState {
        name: "app".into(),
        last_status: TaskState::Running,
        exit_code: None,
        reason: None,
        health_status: Some(status),
        network_bindings: vec![],
    }];
    h.one(reports(&agent, 1, vec![r])).unwrap();
    if status == HealthStatus::Healthy {
        min_healthy_time_passes(h);
    }
}

fn stop(ids: &[&str], unhealthy: bool) -> Command {
    Command::StopServiceTasks {
        service: "api".into(),
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        unhealthy,
    }
}

fn update_to(revision: u32) -> Command {
    Command::UpdateService(ServiceUpdate {
        name: "api".into(),
        task_definition: Some(("web".into(), revision)),
        ..Default::default()
    })
}

fn stopped_ids(r: CommandResult) -> Vec<String> {
    tasks_of(r).0.into_iter().map(|t| t.id).collect()
}

fn cluster(spec: TaskDefinitionSpec) -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec.clone() })
        .unwrap();
    h.one(Command::RegisterTaskDefinition { spec }).unwrap();
    h.one(agent("a1", 16384, 65536)).unwrap();
    h.one(agent("a2", 16384, 65536)).unwrap();
    h
}

#[test]
fn a_rolling_deployment_keeps_its_bounds_at_apply_and_completes_on_the_new_revision() {
    let mut h = cluster(spec("web"));
    h.one(create(2, DeploymentConfiguration::default()))
        .unwrap();
    let first = primary(&h);
    assert_eq!(first.rollout_state, RolloutState::InProgress);
    tasks_of(h.one(launch(&h, &["o1", "o2"])));
    running(&mut h, &["o1", "o2"]);
    assert_eq!(primary(&h).rollout_state, RolloutState::Completed);

    h.one(update_to(2)).unwrap();
    let second = primary(&h);
    assert_ne!(second.id, first.id);
    assert_eq!(second.revision, 2);
    let svc = h.state.service("api").unwrap();
    assert_eq!(svc.deployments[1].status, DeploymentStatus::Active);
    assert_eq!(svc.revision, 2);
    // A launch for the old deployment (a stale scheduler) is refused.
    let mut stale = launch(&h, &["x"]);
    if let Command::RunTasks(r) = &mut stale {
        r.started_by = first.id.clone();
        r.revision = 1;
    }
    assert!(matches!(h.one(stale), Err(Error::FailedPrecondition(_))));
    // maximumPercent 200: two more, never three.
    let (launched, failures) = tasks_of(h.one(launch(&h, &["n1", "n2", "n3"])));
    assert_eq!(launched.len(), 2);
    assert_eq!(failures[0].reason, SERVICE_FULL);
    // minimumHealthyPercent 100: no old task stops before a new one is RUNNING.
    assert!(stopped_ids(h.one(stop(&["o1", "o2"], false))).is_empty());
    running(&mut h, &["n1"]);
    assert_eq!(stopped_ids(h.one(stop(&["o1", "o2"], false))), vec!["o1"]);
    assert_eq!(primary(&h).rollout_state, RolloutState::InProgress);
    running(&mut h, &["n2"]);
    assert_eq!(stopped_ids(h.one(stop(&["o2"], false))), vec!["o2"]);
    let svc = h.state.service("api").unwrap();
    assert_eq!(svc.deployments[0].rollout_state, RolloutState::Completed);
    assert_eq!(svc.deployments[1].status, DeploymentStatus::Inactive);
    assert!(
        svc.events[0].message.contains("steady state")
            || svc.events.iter().any(|e| e.message.contains("completed")),
        "{:?}",
        svc.events
    );
    h.state.check_invariants().unwrap();
}

#[test]
fn minimum_healthy_below_100_lets_old_tasks_stop_first() {
    let mut h = cluster(spec("web"));
    let config = DeploymentConfiguration {
        minimum_healthy_percent: 50,
        maximum_percent: 100,
        ..Default::default()
    };
    h.one(create(4, config)).unwrap();
    tasks_of(h.one(launch(&h, &["o1", "o2", "o3", "o4"])));
    running(&mut h, &["o1", "o2", "o3", "o4"]);
    h.one(update_to(2)).unwrap();
    // maximumPercent 100 leaves no room until old tasks go; 50 % (2 of 4) must stay.
    assert!(tasks_of(h.one(launch(&h, &["n1"]))).0.is_empty());
    assert_eq!(
        stopped_ids(h.one(stop(&["o1", "o2", "o3", "o4"], false))),
        vec!["o1", "o2"]
    );
    assert_eq!(tasks_of(h.one(launch(&h, &["n1", "n2", "n3"]))).0.len(), 2);
}

/// Two tasks of web:1 COMPLETED with the breaker and rollback on, then an update to web:2:
/// the harness, the good deployment and the new one.
fn two_tasks_updating_with_the_breaker() -> (Harness, Deployment, Deployment) {
    let mut h = cluster(spec("web"));
    let config = DeploymentConfiguration {
        circuit_breaker: true,
        rollback: true,
        ..Default::default()
    };
    h.one(create(2, config)).unwrap();
    tasks_of(h.one(launch(&h, &["o1", "o2"])));
    running(&mut h, &["o1", "o2"]);
    let good = primary(&h);
    assert_eq!(good.rollout_state, RolloutState::Completed);
    h.one(update_to(2)).unwrap();
    let bad = primary(&h);
    (h, good, bad)
}

#[test]
fn the_circuit_breaker_fails_a_deployment_and_rolls_back_to_the_last_completed() {
    let (mut h, good, bad) = two_tasks_updating_with_the_breaker();
    // Threshold for 2 tasks: clamp(1, 3, 200) = 3 failures.
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        tasks_of(h.one(launch(&h, &[id])));
        let mut failed = report(id, TaskState::Stopped, h.now);
        failed.stop_code = Some(StopCode::TaskFailedToStart);
        failed.stopped_reason = Some("CannotStartContainerError".into());
        let agent = h.state.task(id).unwrap().agent_id.clone();
        h.one(reports(&agent, 1, vec![failed])).unwrap();
        let svc = h.state.service("api").unwrap();
        let d = svc.deployments.iter().find(|d| d.id == bad.id).unwrap();
        assert_eq!(d.failed_tasks, i as u32 + 1);
    }
    let svc = h.state.service("api").unwrap();
    let failed = svc.deployments.iter().find(|d| d.id == bad.id).unwrap();
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    // The last COMPLETED deployment still runs its tasks: it is PRIMARY again, nothing of
    // it replaced, and complete at once since the failed one has no task left.
    let back = primary(&h);
    assert_eq!(back.id, good.id);
    assert_eq!((back.family.as_str(), back.revision), ("web", 1));
    assert_eq!(back.rollout_state, RolloutState::Completed);
    assert_eq!(svc.revision, 1);
    assert!(svc.events.iter().any(|e| e.message.contains("rolled back")));
    assert_eq!(live_ids(&h), vec!["o1", "o2"]);
    assert!(tasks_of(h.one(launch(&h, &["r1"]))).0.is_empty());
    h.state.check_invariants().unwrap();
}

#[test]
fn a_rollback_to_a_deployment_without_tasks_starts_it_again() {
    let mut h = cluster(spec("web"));
    let config = DeploymentConfiguration {
        circuit_breaker: true,
        rollback: true,
        ..Default::default()
    };
    h.one(create(1, config)).unwrap();
    tasks_of(h.one(launch(&h, &["o1"])));
    running(&mut h, &["o1"]);
    assert_eq!(primary(&h).rollout_state, RolloutState::Completed);
    h.one(update_to(2)).unwrap();
    // The old task dies on its own: its deployment has nothing left.
    let mut died = report("o1", TaskState::Stopped, h.now);
    died.stop_code = Some(StopCode::EssentialContainerExited);
    h.one(reports("a1", 1, vec![died])).unwrap();
    let bad = primary(&h);
    for id in ["n1", "n2", "n3"] {
        tasks_of(h.one(launch(&h, &[id])));
        let mut failed = report(id, TaskState::Stopped, h.now);
        failed.stop_code = Some(StopCode::TaskFailedToStart);
        h.one(reports("a1", 1, vec![failed])).unwrap();
    }
    let back = primary(&h);
    assert_ne!(back.id, bad.id);
    assert_eq!(
        (back.revision, back.rollout_state),
        (1, RolloutState::InProgress)
    );
    assert_eq!(tasks_of(h.one(launch(&h, &["r1"]))).0.len(), 1);
    h.state.check_invariants().unwrap();
}

fn live_ids(h: &Harness) -> Vec<String> {
    h.state.service_tasks("api").map(|t| t.id.clone()).collect()
}

#[test]
fn without_rollback_a_failed_deployment_launches_nothing_more() {
    let mut h = cluster(spec("web"));
    let config = DeploymentConfiguration {
        circuit_breaker: true,
        ..Default::default()
    };
    h.one(create(1, config)).unwrap();
    for id in ["n1", "n2", "n3"] {
        tasks_of(h.one(launch(&h, &[id])));
        let mut failed = report(id, TaskState::Stopped, h.now);
        failed.stop_code = Some(StopCode::EssentialContainerExited);
        h.one(reports("a1", 1, vec![failed])).unwrap();
    }
    assert_eq!(primary(&h).rollout_state, RolloutState::Failed);
    let (launched, _) = tasks_of(h.one(launch(&h, &["n4"])));
    assert!(launched.is_empty());
    // A new revision starts afresh.
    h.one(update_to(2)).unwrap();
    assert_eq!(primary(&h).rollout_state, RolloutState::InProgress);
    assert_eq!(tasks_of(h.one(launch(&h, &["m1"]))).0.len(), 1);
}

#[test]
fn a_task_is_healthy_only_when_its_checked_essential_containers_are() {
    let mut h = cluster(with_check("web"));
    h.one(create(1, DeploymentConfiguration::default()))
        .unwrap();
    tasks_of(h.one(launch(&h, &["t1"])));
    let t = h.state.task("t1").unwrap();
    assert_eq!(t.containers[0].health_status, Some(HealthStatus::Unknown));
    running(&mut h, &["t1"]);
    // RUNNING with a check not yet passed: not healthy, the rollout not complete.
    assert!(!h.state.task_is_healthy(h.state.task("t1").unwrap()));
    assert_eq!(primary(&h).rollout_state, RolloutState::InProgress);
    health(&mut h, "t1", HealthStatus::Healthy);
    assert_eq!(
        h.state.task("t1").unwrap().health_status,
        HealthStatus::Healthy
    );
    assert_eq!(primary(&h).rollout_state, RolloutState::Completed);
    // A healthy task is not stopped as unhealthy (a stale proposal).
    assert!(stopped_ids(h.one(stop(&["t1"], true))).is_empty());
    health(&mut h, "t1", HealthStatus::Unhealthy);
    assert_eq!(
        h.state.task("t1").unwrap().health_status,
        HealthStatus::Unhealthy
    );
    assert_eq!(stopped_ids(h.one(stop(&["t1"], true))), vec!["t1"]);
    let t = h.state.task("t1").unwrap();
    assert_eq!(t.stopped_reason.as_deref(), Some(UNHEALTHY_REASON));
    let svc = h.state.service("api").unwrap();
    assert!(
        svc.events
            .iter()
            .any(|e| e.message.contains("t1 failed its health check")),
        "{:?}",
        svc.events
    );
}

#[test]
fn task_health_follows_essential_containers_only() {
    use HealthStatus::*;
    assert_eq!(HealthStatus::of_task([(true, Some(Healthy))]), Healthy);
    assert_eq!(
        HealthStatus::of_task([(true, Some(Healthy)), (true, Some(Unknown))]),
        Unknown
    );
    assert_eq!(
        HealthStatus::of_task([(true, Some(Healthy)), (false, Some(Unhealthy))]),
        Healthy
    );
    assert_eq!(
        HealthStatus::of_task([(true, Some(Unhealthy)), (true, Some(Healthy))]),
        Unhealthy
    );
    assert_eq!(HealthStatus::of_task([(true, None)]), Unknown);
}

#[test]
fn impossible_deployment_bounds_are_refused_at_create_and_update() {
    let mut h = cluster(spec("web"));
    let stuck = DeploymentConfiguration {
        minimum_healthy_percent: 100,
        maximum_percent: 100,
        ..Default::default()
    };
    assert!(matches!(
        h.one(create(2, stuck)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(h.state.service("api").is_none());
    let half = DeploymentConfiguration {
        minimum_healthy_percent: 50,
        maximum_percent: 150,
        ..Default::default()
    };
    h.one(create(2, half)).unwrap();
    // At 1 task, 50/150 leaves no room.
    let e = h.one(Command::UpdateService(ServiceUpdate {
        name: "api".into(),
        desired_count: Some(1),
        ..Default::default()
    }));
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    assert_eq!(h.state.service("api").unwrap().desired_count, 2);
    // A revision that does not exist changes nothing.
    assert!(matches!(h.one(update_to(9)), Err(Error::NotFound(_))));
    assert_eq!(h.state.service("api").unwrap().deployments.len(), 1);
}

#[test]
fn tasks_on_an_agent_that_takes_no_tasks_are_replaced_first() {
    let mut h = cluster(spec("web"));
    h.one(create(2, DeploymentConfiguration::default()))
        .unwrap();
    tasks_of(h.one(launch(&h, &["t1", "t2"])));
    running(&mut h, &["t1", "t2"]);
    let on_a1 = h.state.task("t1").unwrap().agent_id.clone();
    assert_eq!(on_a1, "a1");
    // Its engine stops answering: t1 no longer counts for the desired count, so a
    // replacement may start, and t1 stops only once that one runs.
    h.one(Command::SetAgentEngine {
        agent_id: "a1".into(),
        epoch: 1,
        error: Some("the engine did not answer".into()),
    })
    .unwrap();
    assert!(!h.state.agent_accepts_tasks("a1"));
    assert!(stopped_ids(h.one(stop(&["t1"], false))).is_empty());
    let Command::RunTasks(mut r) = launch(&h, &["r1"]) else {
        unreachable!()
    };
    r.placements[0].agent_id = "a2".into();
    assert_eq!(tasks_of(h.one(Command::RunTasks(r))).0.len(), 1);
    running(&mut h, &["r1"]);
    let stopped = h.one(stop(&["t1"], false));
    let Ok(Outcome::Tasks { tasks, .. }) = stopped else {
        panic!("{stopped:?}")
    };
    assert!(tasks[0]
        .stopped_reason
        .as_deref()
        .is_some_and(|r| r.contains("draining or its engine")));
    // A stale epoch cannot set or clear it.
    assert!(h
        .one(Command::SetAgentEngine {
            agent_id: "a1".into(),
            epoch: 9,
            error: None,
        })
        .is_err());
    assert!(h.state.agent("a1").unwrap().engine_error.is_some());
    h.state.check_invariants().unwrap();
}

/// Regression: a revision whose container exits right after starting was briefly RUNNING
/// on both replacements, which let the old tasks be stopped and the deployment complete
/// before the exits arrived; the breaker then never tripped and nothing rolled back.
#[test]
fn a_revision_that_runs_briefly_then_exits_replaces_no_old_task_and_trips_the_breaker() {
    let (mut h, good, bad) = two_tasks_updating_with_the_breaker();
    tasks_of(h.one(launch(&h, &["n1", "n2"])));
    just_running(&mut h, &["n1", "n2"]);
    let wait = u64::from(crate::limits::DEFAULT_MIN_HEALTHY_TIME_MS);
    let n1 = h.state.task("n1").unwrap();
    assert!(h.state.task_is_ready(n1));
    assert!(!h.state.task_is_healthy(n1));
    assert_eq!(h.state.task_healthy_at(n1), Some(h.now + wait));
    assert_eq!(h.state.next_healthy_at(), Some(h.now + wait));
    // RUNNING is not yet healthy: a stop of the old tasks is refused at apply.
    assert!(stopped_ids(h.one(stop(&["o1", "o2"], false))).is_empty());
    // A tick before the time changes nothing.
    h.now += wait - 1;
    h.one(Command::Tick).unwrap();
    assert!(stopped_ids(h.one(stop(&["o1"], false))).is_empty());
    for id in ["n1", "n2"] {
        let mut exited = report(id, TaskState::Stopped, h.now);
        exited.stop_code = Some(StopCode::EssentialContainerExited);
        let agent = h.state.task(id).unwrap().agent_id.clone();
        h.one(reports(&agent, 1, vec![exited])).unwrap();
    }
    tasks_of(h.one(launch(&h, &["n3"])));
    just_running(&mut h, &["n3"]);
    let mut exited = report("n3", TaskState::Stopped, h.now);
    exited.stop_code = Some(StopCode::EssentialContainerExited);
    h.one(reports("a1", 1, vec![exited])).unwrap();
    let svc = h.state.service("api").unwrap();
    let failed = svc.deployments.iter().find(|d| d.id == bad.id).unwrap();
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert_eq!(failed.failed_tasks, 3);
    assert_eq!(primary(&h).id, good.id);
    assert_eq!(live_ids(&h), vec!["o1", "o2"]);
    h.state.check_invariants().unwrap();
}

#[test]
fn a_task_counts_as_healthy_once_ready_for_the_minimum_healthy_time() {
    let mut h = cluster(with_check("web"));
    h.one(create(1, DeploymentConfiguration::default()))
        .unwrap();
    tasks_of(h.one(launch(&h, &["t1"])));
    just_running(&mut h, &["t1"]);
    // Checked: RUNNING alone is not ready.
    assert_eq!(h.state.task("t1").unwrap().ready_since, None);
    let ready_at = h.now;
    health(&mut h, "t1", HealthStatus::Healthy);
    let t1 = h.state.task("t1").unwrap();
    assert_eq!(t1.ready_since, Some(ready_at));
    assert!(h.state.task_is_healthy(t1));
    // The tick settled the rollout: nothing else was written after the time passed.
    assert_eq!(primary(&h).rollout_state, RolloutState::Completed);
    assert_eq!(h.state.next_healthy_at(), None);
    // Unhealthy clears readiness; healthy again starts the wait afresh.
    let agent = t1.agent_id.clone();
    let mut r = report("t1", TaskState::Running, h.now);
    r.containers = vec![ContainerState {
        name: "app".into(),
        last_status: TaskState::Running,
        exit_code: None,
        reason: None,
        health_status: Some(HealthStatus::Unhealthy),
        network_bindings: vec![],
    }];
    h.one(reports(&agent, 1, vec![r])).unwrap();
    assert_eq!(h.state.task("t1").unwrap().ready_since, None);
}

#[test]
fn a_minimum_healthy_time_of_zero_counts_a_running_task_at_once() {
    let mut h = cluster(spec("web"));
    let config = DeploymentConfiguration {
        min_healthy_time_ms: 0,
        ..Default::default()
    };
    h.one(create(1, config)).unwrap();
    tasks_of(h.one(launch(&h, &["t1"])));
    just_running(&mut h, &["t1"]);
    assert!(h.state.task_is_healthy(h.state.task("t1").unwrap()));
    assert_eq!(primary(&h).rollout_state, RolloutState::Completed);
}

#[test]
fn tasks_not_yet_proven_healthy_still_keep_the_running_count_at_the_minimum() {
    let mut h = cluster(spec("web"));
    h.one(create(2, DeploymentConfiguration::default()))
        .unwrap();
    tasks_of(h.one(launch(&h, &["o1", "o2"])));
    just_running(&mut h, &["o1", "o2"]);
    // An update before the first tasks have stayed up: neither may stop while nothing else
    // runs, though neither counts as healthy yet.
    h.one(update_to(2)).unwrap();
    assert!(stopped_ids(h.one(stop(&["o1"], false))).is_empty());
    tasks_of(h.one(launch(&h, &["n1", "n2"])));
    just_running(&mut h, &["n1"]);
    // One more RUNNING: one young old task may go, the second may not.
    assert_eq!(stopped_ids(h.one(stop(&["o1", "o2"], false))), vec!["o1"]);
    assert_eq!(live_ids(&h), vec!["n1", "n2", "o2"]);
    h.state.check_invariants().unwrap();
}
