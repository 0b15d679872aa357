//! Namespaces in the state machine: a token acts only in its namespaces, objects of another
//! namespace are answered as missing, and quotas hold at apply whatever the proposer saw.

use super::access::{as_, token};
use super::*;
use crate::access::Role;
use crate::namespace::Quota;

fn in_ns(ns: &str, cmd: Command) -> Command {
    match cmd {
        Command::RegisterTaskDefinition { mut spec } => {
            spec.family = crate::namespace::qualified(ns, &spec.family);
            Command::RegisterTaskDefinition { spec }
        }
        Command::RunTasks(mut r) => {
            r.family = crate::namespace::qualified(ns, &r.family);
            r.group = format!("family:{}", r.family);
            Command::RunTasks(r)
        }
        other => other,
    }
}

fn team(h: &mut Harness, name: &str, quota: Quota) {
    h.one(Command::CreateNamespace {
        name: name.into(),
        quota,
    })
    .unwrap();
}

/// An admin, an operator of team-a and an operator of team-b, on a cluster with one agent.
fn cluster() -> (Harness, AccessToken, AccessToken, AccessToken) {
    let mut h = Harness::new();
    let admin = token(1, Role::Admin);
    h.one(Command::BootstrapAccessToken(admin.clone())).unwrap();
    team(&mut h, "team-a", Quota::default());
    team(&mut h, "team-b", Quota::default());
    let mut a = token(2, Role::Operator);
    a.namespaces = vec!["team-a".into()];
    let mut b = token(3, Role::Operator);
    b.namespaces = vec!["team-b".into()];
    for t in [&a, &b] {
        h.one(as_(&admin, Command::CreateAccessToken(t.clone())))
            .unwrap();
    }
    h.one(agent("a1", 16384, 32768)).unwrap();
    (h, admin, a, b)
}

use crate::access::AccessToken;

#[test]
fn a_token_writes_only_in_its_own_namespaces() {
    let (mut h, admin, a, _b) = cluster();
    let mine = h.one(as_(
        &a,
        in_ns(
            "team-a",
            Command::RegisterTaskDefinition { spec: spec("web") },
        ),
    ));
    assert!(mine.is_ok(), "{mine:?}");
    let theirs = h.one(as_(
        &a,
        in_ns(
            "team-b",
            Command::RegisterTaskDefinition { spec: spec("web") },
        ),
    ));
    let Err(Error::PermissionDenied(msg)) = theirs else {
        panic!("{theirs:?}")
    };
    assert!(msg.contains("team-a") && msg.contains("team-b"), "{msg}");
    let default = h.one(as_(
        &a,
        Command::RegisterTaskDefinition { spec: spec("web") },
    ));
    assert!(
        matches!(default, Err(Error::PermissionDenied(_))),
        "{default:?}"
    );
    // The admin may act in any namespace.
    h.one(as_(
        &admin,
        in_ns(
            "team-b",
            Command::RegisterTaskDefinition { spec: spec("web") },
        ),
    ))
    .unwrap();
    assert!(h.state.task_definition("team-a/web", Some(1)).is_ok());
    assert!(h.state.task_definition("team-b/web", Some(1)).is_ok());
    assert!(h.state.task_definition("web", Some(1)).is_err());
}

#[test]
fn another_namespaces_task_is_missing_to_a_token_and_to_a_stop_in_another_namespace() {
    let (mut h, admin, a, b) = cluster();
    h.one(as_(
        &admin,
        in_ns(
            "team-b",
            Command::RegisterTaskDefinition { spec: spec("web") },
        ),
    ))
    .unwrap();
    let (tasks, _) = tasks_of(h.one(as_(&b, in_ns("team-b", run(None, 0, &[("t1", "a1")])))));
    assert_eq!(tasks.len(), 1);
    let stop = |ns: Option<&str>| Command::StopTask {
        task_id: "t1".into(),
        reason: String::new(),
        code: StopCode::UserInitiated,
        namespace: ns.map(String::from),
    };
    // Same message as for a task that never existed: team-a learns nothing.
    for cmd in [
        as_(&a, stop(None)),
        as_(&a, stop(Some("team-a"))),
        stop(Some("team-a")),
    ] {
        let r = h.one(cmd);
        let Err(Error::NotFound(msg)) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(msg, "task t1 does not exist");
    }
    assert_eq!(
        h.state.task("t1").unwrap().desired_status,
        DesiredStatus::Running
    );
    h.one(as_(&b, stop(Some("team-b")))).unwrap();
    assert_eq!(
        h.state.task("t1").unwrap().desired_status,
        DesiredStatus::Stopped
    );
}

#[test]
fn objects_go_only_into_namespaces_that_exist_and_a_namespace_with_objects_stays() {
    let (mut h, admin, _a, _b) = cluster();
    let r = h.one(in_ns(
        "team-c",
        Command::RegisterTaskDefinition { spec: spec("web") },
    ));
    let Err(Error::NotFound(msg)) = &r else {
        panic!("{r:?}")
    };
    assert!(msg.contains("berth namespace create"), "{msg}");
    let mut c = token(4, Role::Reader);
    c.namespaces = vec!["team-c".into()];
    assert!(matches!(
        h.one(as_(&admin, Command::CreateAccessToken(c))),
        Err(Error::NotFound(_))
    ));
    h.one(in_ns(
        "team-a",
        Command::RegisterTaskDefinition { spec: spec("web") },
    ))
    .unwrap();
    let held = h.one(Command::DeleteNamespace {
        name: "team-a".into(),
    });
    assert!(
        matches!(held, Err(Error::FailedPrecondition(_))),
        "{held:?}"
    );
    h.one(Command::DeleteNamespace {
        name: "team-b".into(),
    })
    .unwrap();
    assert!(!h.state.namespace_exists("team-b"));
    assert!(matches!(
        h.one(Command::DeleteNamespace {
            name: "default".into()
        }),
        Err(Error::FailedPrecondition(_))
    ));
}

#[test]
fn a_quota_refuses_the_task_that_would_pass_it_and_frees_room_when_tasks_stop() {
    let (mut h, _admin, _a, _b) = cluster();
    h.one(Command::SetNamespaceQuota {
        name: "team-a".into(),
        quota: Quota {
            cpu: Some(3 * 1024),
            memory: None,
            tasks: Some(2),
        },
    })
    .unwrap();
    h.one(in_ns(
        "team-a",
        Command::RegisterTaskDefinition { spec: spec("web") },
    ))
    .unwrap();
    // Placements the proposer made against a state without the quota: apply holds it.
    let (tasks, failures) = tasks_of(h.one(in_ns(
        "team-a",
        run(None, 0, &[("t1", "a1"), ("t2", "a1"), ("t3", "a1")]),
    )));
    assert_eq!(tasks.len(), 2);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, "QUOTA:TASKS");
    assert!(
        failures[0].detail.contains("quota of 2 running task"),
        "{}",
        failures[0].detail
    );
    assert_eq!(h.state.namespace_use("team-a").tasks, 2);
    // Other namespaces are not held to it.
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    let (other, _) = tasks_of(h.one(run(None, 0, &[("u1", "a1"), ("u2", "a1"), ("u3", "a1")])));
    assert_eq!(other.len(), 3);
    // A stopped task gives its room back once it has stopped, not when asked to stop.
    h.one(Command::StopTask {
        task_id: "t1".into(),
        reason: String::new(),
        code: StopCode::UserInitiated,
        namespace: Some("team-a".into()),
    })
    .unwrap();
    let (none, _) = tasks_of(h.one(in_ns("team-a", run(None, 0, &[("t4", "a1")]))));
    assert!(none.is_empty());
    h.one(reports(
        "a1",
        1,
        vec![report("t1", TaskState::Stopped, 2_000)],
    ))
    .unwrap();
    let (one, _) = tasks_of(h.one(in_ns("team-a", run(None, 0, &[("t5", "a1")]))));
    assert_eq!(one.len(), 1);
    // The cpu quota: two tasks of 1 vCPU hold 2048 of 3072; a third would pass it.
    h.one(Command::SetNamespaceQuota {
        name: "team-a".into(),
        quota: Quota {
            cpu: Some(3 * 1024),
            memory: None,
            tasks: None,
        },
    })
    .unwrap();
    let (tasks, failures) =
        tasks_of(h.one(in_ns("team-a", run(None, 0, &[("t6", "a1"), ("t7", "a1")]))));
    assert_eq!(tasks.len(), 1);
    assert_eq!(failures[0].reason, "QUOTA:CPU");
    h.state.check_invariants().unwrap();
    // The figure is derived, and a state read back from its snapshot derives it again.
    let mut copy: ClusterState =
        serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    copy.rebuild_indexes();
    assert_eq!(
        copy.namespace_use("team-a"),
        h.state.namespace_use("team-a")
    );
    copy.check_invariants().unwrap();
}

#[test]
fn a_token_made_before_namespaces_reads_as_scoped_to_default() {
    let old = r#"{"accessor":"0000000000000002","name":"ci","role":"operator","digest":"00","createdAt":0,"createdBy":"","revokedAt":null}"#;
    let t: AccessToken = serde_json::from_str(old).unwrap();
    assert!(t.allows_namespace("default"));
    assert!(!t.allows_namespace("team-a"));
}

#[test]
fn secrets_are_kept_sealed_per_namespace_and_a_token_puts_only_its_own() {
    let (mut h, _admin, a, _b) = cluster();
    let put = |name: &str, sealed: &str| Command::PutSecret {
        name: name.into(),
        sealed: sealed.into(),
    };
    let first = h.one(as_(&a, put("team-a/db", "00aa")));
    let Ok(Outcome::Secret(s)) = first else {
        panic!("{first:?}")
    };
    assert_eq!((s.version, s.sealed.as_str()), (1, "00aa"));
    let again = h.one(as_(&a, put("team-a/db", "00bb")));
    let Ok(Outcome::Secret(s)) = again else {
        panic!("{again:?}")
    };
    assert_eq!((s.version, s.sealed.as_str()), (2, "00bb"));
    assert!(matches!(
        h.one(as_(&a, put("team-b/db", "00aa"))),
        Err(Error::PermissionDenied(_))
    ));
    assert!(h.state.secret("team-b/db").is_none());
    // Only hex is kept: a plaintext value proposed by mistake is refused.
    assert!(matches!(
        h.one(as_(&a, put("team-a/pw", "hunter2"))),
        Err(Error::InvalidArgument(_))
    ));
    // A namespace holding a secret stays.
    assert!(matches!(
        h.one(Command::DeleteNamespace {
            name: "team-a".into()
        }),
        Err(Error::FailedPrecondition(_))
    ));
    h.one(as_(
        &a,
        Command::DeleteSecret {
            name: "team-a/db".into(),
        },
    ))
    .unwrap();
    assert!(matches!(
        h.one(as_(
            &a,
            Command::DeleteSecret {
                name: "team-a/db".into()
            }
        )),
        Err(Error::NotFound(_))
    ));
    // The audit trail names the secret, never a value.
    let audits: Vec<String> = h
        .state
        .take_changes()
        .into_iter()
        .filter_map(|c| match c {
            Change::Audit { action, .. } => Some(action),
            _ => None,
        })
        .collect();
    assert!(
        audits.iter().any(|a| a == "PutSecret team-a/db"),
        "{audits:?}"
    );
    assert!(audits.iter().all(|a| !a.contains("00bb")));
}
