//! Task definition revisions: numbered for good, INACTIVE ones collected once past their
//! retention and named by nothing.

use super::*;

fn deregister(revision: u32) -> Command {
    Command::DeregisterTaskDefinition {
        family: "web".into(),
        revision,
    }
}

fn stop(task_id: &str) -> Command {
    Command::StopTask {
        task_id: task_id.into(),
        reason: "done".into(),
        code: StopCode::UserInitiated,
        namespace: None,
    }
}

#[test]
fn inactive_revisions_are_collected_after_their_retention_once_no_task_names_them() {
    let mut h = Harness::new();
    for _ in 0..2 {
        h.one(Command::RegisterTaskDefinition { spec: spec("web") })
            .unwrap();
    }
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 0, &[("t1", "a1")])));
    h.one(deregister(1)).unwrap();
    h.now += INACTIVE_DEFINITION_RETENTION_MS;
    h.apply(vec![]);
    // t1 still runs web:1: the revision stays, and so does the agent's view of it.
    assert!(h.state.task_definition("web", Some(1)).is_ok());
    assert_eq!(h.state.assigned_tasks("a1").count(), 1);
    h.one(stop("t1")).unwrap();
    let at = h.now;
    h.one(reports("a1", 1, vec![report("t1", TaskState::Stopped, at)]))
        .unwrap();
    h.now += 60_000;
    h.apply(vec![]);
    assert!(
        h.state.task_definition("web", Some(1)).is_ok(),
        "collected while a STOPPED task still named it"
    );
    h.now += STOPPED_TASK_RETENTION_MS;
    h.apply(vec![]);
    assert!(h.state.task("t1").is_none());
    let Err(Error::NotFound(msg)) = h.state.task_definition("web", Some(1)) else {
        panic!("web:1 outlived its retention with nothing naming it")
    };
    assert!(msg.contains("collected"), "{msg}");
    // ACTIVE revisions are never collected, and numbers are never reused.
    assert!(h.state.task_definition("web", Some(2)).is_ok());
    let Ok(Outcome::TaskDefinition(d)) =
        h.one(Command::RegisterTaskDefinition { spec: spec("web") })
    else {
        panic!("register failed")
    };
    assert_eq!(d.revision, 3);
    assert!(matches!(
        h.state.task_definition("web", Some(9)),
        Err(Error::NotFound(m)) if m.contains("latest revision is 3")
    ));
    h.state.check_invariants().unwrap();
}

#[test]
fn a_revision_a_service_names_is_kept_past_its_retention() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(Command::CreateService(service_create("api", 0)))
        .unwrap();
    h.one(deregister(1)).unwrap();
    h.now += 2 * INACTIVE_DEFINITION_RETENTION_MS;
    h.apply(vec![]);
    assert!(h.state.task_definition("web", Some(1)).is_ok());
}

#[test]
fn a_family_whose_revisions_were_all_collected_no_longer_holds_its_namespace() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(deregister(1)).unwrap();
    h.now += INACTIVE_DEFINITION_RETENTION_MS;
    h.apply(vec![]);
    assert!(h.state.task_definitions(Some("web"), None).next().is_none());
    assert_eq!(
        h.state
            .task_definitions(None, None)
            .map(|d| d.name())
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}

#[test]
fn families_written_before_collection_read_with_their_count() {
    let mut h = Harness::new();
    for _ in 0..2 {
        h.one(Command::RegisterTaskDefinition { spec: spec("web") })
            .unwrap();
    }
    h.one(deregister(1)).unwrap();
    let mut snapshot = serde_json::to_value(&h.state).unwrap();
    // The previous layout: each family a list of every revision, `n` at `n - 1`.
    let revisions = snapshot["families"]["web"]["revisions"].clone();
    snapshot["families"]["web"] = revisions;
    let mut read: ClusterState = serde_json::from_value(snapshot).unwrap();
    read.rebuild_indexes();
    assert_eq!(read.task_definition("web", Some(1)).unwrap().revision, 1);
    assert_eq!(read.digest(), h.state.digest());
    read.check_invariants().unwrap();
    // The deregistration's retention was derived again from the revision.
    let mut h2 = Harness {
        state: read,
        index: h.index,
        now: h.now + INACTIVE_DEFINITION_RETENTION_MS,
    };
    h2.apply(vec![]);
    assert!(h2.state.task_definition("web", Some(1)).is_err());
    let Ok(Outcome::TaskDefinition(d)) =
        h2.one(Command::RegisterTaskDefinition { spec: spec("web") })
    else {
        panic!("register failed")
    };
    assert_eq!(d.revision, 3);
}
