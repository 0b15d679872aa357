//! Services in the state machine: the desired count is a ceiling apply enforces, scale-in
//! never goes below it, and deletion drains before it forgets.

use super::*;
use crate::service::{ServiceCreate, ServiceStatus, ServiceUpdate};

fn create(name: &str, desired: u32, token: Option<&str>, fingerprint: u64) -> Command {
    Command::CreateService(ServiceCreate {
        client_token: token.map(String::from),
        fingerprint,
        ..service_create(name, desired)
    })
}

/// A launch by the service scheduler: RunTask's command with the service's group and name.
fn launch(h: &Harness, service: &str, placements: &[(&str, &str)]) -> Command {
    let Command::RunTasks(mut r) = run(None, 0, placements) else {
        unreachable!("run builds RunTasks")
    };
    let primary = h.state.service(service).and_then(|s| s.primary().cloned());
    if let Some(d) = primary {
        r.started_by = d.id;
        r.revision = d.revision;
    }
    r.group = format!("service:{service}");
    r.service = Some(service.into());
    Command::RunTasks(r)
}

fn cluster() -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 8192, 16384)).unwrap();
    h.one(agent("a2", 8192, 16384)).unwrap();
    h
}

fn live(h: &Harness, name: &str) -> Vec<String> {
    h.state.service_tasks(name).map(|t| t.id.clone()).collect()
}

#[test]
fn a_stale_launch_cannot_take_a_service_past_its_desired_count() {
    let mut h = cluster();
    h.one(create("api", 2, None, 1)).unwrap();
    let (tasks, failures) = tasks_of(h.one(launch(
        &h,
        "api",
        &[("t1", "a1"), ("t2", "a2"), ("t3", "a1")],
    )));
    assert_eq!(tasks.len(), 2);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, SERVICE_FULL);
    // A second leader that planned against the state before the first launch.
    let (tasks, _) = tasks_of(h.one(launch(&h, "api", &[("t4", "a2")])));
    assert!(tasks.is_empty());
    assert_eq!(live(&h, "api"), vec!["t1", "t2"]);
    assert!(h.state.task("t4").is_none());
}

#[test]
fn a_launch_for_another_revision_or_a_deleted_service_is_refused() {
    let mut h = cluster();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(create("api", 2, None, 1)).unwrap();
    let mut other = launch(&h, "api", &[("t1", "a1")]);
    if let Command::RunTasks(r) = &mut other {
        r.revision = 2;
    }
    assert!(matches!(h.one(other), Err(Error::FailedPrecondition(_))));
    assert!(matches!(
        h.one(launch(&h, "nope", &[("t1", "a1")])),
        Err(Error::FailedPrecondition(_))
    ));
    // A user's RunTask cannot pose as a service's.
    let mut posing = launch(&h, "api", &[("t1", "a1")]);
    if let Command::RunTasks(r) = &mut posing {
        r.service = None;
    }
    assert!(matches!(h.one(posing), Err(Error::InvalidArgument(_))));
    assert!(live(&h, "api").is_empty());
}

#[test]
fn scale_in_stops_only_down_to_the_desired_count() {
    let mut h = cluster();
    h.one(create("api", 4, None, 1)).unwrap();
    tasks_of(h.one(launch(
        &h,
        "api",
        &[("t1", "a1"), ("t2", "a2"), ("t3", "a1"), ("t4", "a2")],
    )));
    h.one(Command::UpdateService(ServiceUpdate {
        name: "api".into(),
        desired_count: Some(2),
        ..Default::default()
    }))
    .unwrap();
    let stop = |ids: &[&str]| Command::StopServiceTasks {
        service: "api".into(),
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        unhealthy: false,
    };
    let (stopped, _) = tasks_of(h.one(stop(&["t4", "t3", "t2"])));
    assert_eq!(
        stopped.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["t4", "t3"]
    );
    assert!(stopped
        .iter()
        .all(|t| t.stop_code == Some(StopCode::ServiceSchedulerInitiated)));
    // The same proposal again (a new leader's) stops nothing more.
    let (stopped, _) = tasks_of(h.one(stop(&["t2", "t1"])));
    assert!(stopped.is_empty());
    assert_eq!(live(&h, "api"), vec!["t1", "t2"]);
}

#[test]
fn a_task_that_stops_leaves_the_count_so_it_can_be_replaced() {
    let mut h = cluster();
    h.one(create("api", 1, None, 1)).unwrap();
    tasks_of(h.one(launch(&h, "api", &[("t1", "a1")])));
    h.one(reports(
        "a1",
        1,
        vec![report("t1", TaskState::Running, 1_100)],
    ))
    .unwrap();
    let svc = h.state.service("api").unwrap();
    assert!(
        svc.events[0].message.contains("steady state"),
        "{:?}",
        svc.events
    );
    let mut exited = report("t1", TaskState::Stopped, 1_200);
    exited.stop_code = Some(StopCode::EssentialContainerExited);
    exited.stopped_reason = Some("Essential container in task exited".into());
    h.one(reports("a1", 1, vec![exited])).unwrap();
    assert!(live(&h, "api").is_empty());
    assert!(h.state.service("api").unwrap().events[0]
        .message
        .contains("EssentialContainerExited"));
    let (tasks, _) = tasks_of(h.one(launch(&h, "api", &[("t2", "a2")])));
    assert_eq!(tasks.len(), 1);
}

#[test]
fn create_is_idempotent_by_token_and_refuses_a_taken_name() {
    let mut h = cluster();
    let first = h.one(create("api", 2, Some("tok"), 7)).unwrap();
    assert_eq!(h.one(create("api", 2, Some("tok"), 7)).unwrap(), first);
    assert!(matches!(
        h.one(create("api", 3, Some("tok"), 8)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        h.one(create("api", 2, None, 7)),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        h.one(create("api", MAX_DESIRED_COUNT + 1, None, 9)),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        h.one(create("big", MAX_DESIRED_COUNT + 1, None, 9)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(h.state.service("big").is_none());
}

#[test]
fn delete_needs_force_or_zero_and_drains_before_the_service_is_forgotten() {
    let mut h = cluster();
    h.one(create("api", 2, None, 1)).unwrap();
    tasks_of(h.one(launch(&h, "api", &[("t1", "a1"), ("t2", "a2")])));
    let delete = |force| Command::DeleteService {
        name: "api".into(),
        force,
    };
    assert!(matches!(
        h.one(delete(false)),
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(
        h.state.service("api").unwrap().status,
        ServiceStatus::Active
    );

    h.one(delete(true)).unwrap();
    assert_eq!(
        h.state.service("api").unwrap().status,
        ServiceStatus::Draining
    );
    assert!(matches!(
        h.one(Command::UpdateService(ServiceUpdate {
            name: "api".into(),
            desired_count: Some(3),
            ..Default::default()
        })),
        Err(Error::FailedPrecondition(_))
    ));
    // Draining: the scheduler stops what is left, whatever the desired count said.
    h.one(Command::StopServiceTasks {
        service: "api".into(),
        task_ids: vec!["t1".into(), "t2".into()],
        unhealthy: false,
    })
    .unwrap();
    assert_eq!(
        h.state.service("api").unwrap().status,
        ServiceStatus::Inactive
    );

    // The name is free again at once; the old record is simply replaced.
    h.one(create("api", 1, None, 2)).unwrap();
    assert_eq!(
        h.state.service("api").unwrap().status,
        ServiceStatus::Active
    );
    h.one(Command::UpdateService(ServiceUpdate {
        name: "api".into(),
        desired_count: Some(0),
        ..Default::default()
    }))
    .unwrap();
    h.one(delete(false)).unwrap();
    assert_eq!(
        h.state.service("api").unwrap().status,
        ServiceStatus::Inactive
    );
    h.now += INACTIVE_SERVICE_RETENTION_MS + 1;
    h.one(agent("a3", 1024, 2048)).unwrap();
    assert!(h.state.service("api").is_none());
}

#[test]
fn services_survive_a_snapshot_round_trip() {
    let mut h = cluster();
    h.one(create("api", 2, None, 1)).unwrap();
    tasks_of(h.one(launch(&h, "api", &[("t1", "a1")])));
    let bytes = serde_json::to_vec(&h.state).unwrap();
    let mut back: ClusterState = serde_json::from_slice(&bytes).unwrap();
    // As the store does with every state it reads: the derived indexes are not written.
    back.rebuild_indexes();
    assert_eq!(back.digest(), h.state.digest());
    assert_eq!(live(&h, "api"), vec!["t1"]);
    back.check_invariants().unwrap();
}

#[test]
fn a_stopping_task_no_longer_counts_against_its_agent_for_spread() {
    // Found by the services end-to-end test: after a scale-in, the stopping tasks still
    // counted on their agent, so spread put every replacement on the other zone.
    let mut h = cluster();
    h.one(create("api", 3, None, 1)).unwrap();
    tasks_of(h.one(launch(
        &h,
        "api",
        &[("t1", "a1"), ("t2", "a1"), ("t3", "a2")],
    )));
    h.one(Command::UpdateService(ServiceUpdate {
        name: "api".into(),
        desired_count: Some(1),
        ..Default::default()
    }))
    .unwrap();
    h.one(Command::StopServiceTasks {
        service: "api".into(),
        task_ids: vec!["t1".into(), "t2".into()],
        unhealthy: false,
    })
    .unwrap();
    // t1 and t2 are stopping (desired STOPPED, capacity still held).
    assert!(h.state.task("t1").unwrap().holds_capacity());
    let placed = h.state.group_placement("service:api").unwrap();
    assert_eq!(placed.get("a1"), None);
    assert_eq!(placed.get("a2"), Some(&1));
    h.state.check_invariants().unwrap();
    // A snapshot read back derives the same index.
    let mut back: ClusterState =
        serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    back.rebuild_indexes();
    assert_eq!(back.group_placement("service:api"), Some(placed));
}
