use super::*;
use proptest::prelude::*;

mod access;
mod definitions;
mod deployments;
mod namespaces;
mod retries;
mod scaling;
mod schedules;
mod services;
mod usage;
mod utilization;

fn spec(family: &str) -> TaskDefinitionSpec {
    TaskDefinitionSpec {
        family: family.into(),
        cpu: Some(1024),
        memory: Some(2048),
        network_mode: None,
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            ..Default::default()
        }],
        timeouts: Default::default(),
    }
}

/// A service `name` of web:1 at `desired` tasks, everything else at its default: the tests of
/// services, deployments and scaling change only what they are about.
fn service_create(name: &str, desired: u32) -> crate::service::ServiceCreate {
    crate::service::ServiceCreate {
        name: name.into(),
        family: "web".into(),
        revision: 1,
        desired_count: desired,
        placement_strategy: vec![],
        placement_constraints: vec![],
        deployment_configuration: Default::default(),
        client_token: None,
        fingerprint: 1,
    }
}

fn agent(id: &str, cpu: u32, memory: u32) -> Command {
    Command::RegisterAgent(AgentRegistration {
        id: id.into(),
        cpu,
        memory,
        attributes: BTreeMap::new(),
        address: String::new(),
    })
}

fn run(token: Option<&str>, fingerprint: u64, placements: &[(&str, &str)]) -> Command {
    Command::RunTasks(RunTasks {
        family: "web".into(),
        revision: 1,
        client_token: token.map(String::from),
        fingerprint,
        started_by: String::new(),
        group: "family:web".into(),
        overrides: vec![],
        placements: placements
            .iter()
            .map(|(t, a)| Placement {
                task_id: t.to_string(),
                agent_id: a.to_string(),
            })
            .collect(),
        failures: vec![],
        service: None,
        run: None,
        timeouts: Default::default(),
        retry: None,
    })
}

struct Harness {
    state: ClusterState,
    index: u64,
    now: Millis,
}

impl Harness {
    fn new() -> Self {
        Harness {
            state: ClusterState::new(),
            index: 0,
            now: 1_000,
        }
    }
    fn apply(&mut self, cmds: Vec<Command>) -> Vec<CommandResult> {
        self.index += 1;
        let batch = Batch {
            now: self.now,
            commands: cmds,
        };
        self.state.apply(self.index, &batch)
    }
    fn one(&mut self, cmd: Command) -> CommandResult {
        self.apply(vec![cmd]).remove(0)
    }
}

fn tasks_of(r: CommandResult) -> (Vec<Task>, Vec<Failure>) {
    match r {
        Ok(Outcome::Tasks { tasks, failures }) => (tasks, failures),
        other => panic!("expected tasks, got {other:?}"),
    }
}

#[test]
fn revisions_count_up_and_deregister_hides_latest() {
    let mut h = Harness::new();
    for expected in 1..=3 {
        match h.one(Command::RegisterTaskDefinition { spec: spec("web") }) {
            Ok(Outcome::TaskDefinition(d)) => assert_eq!(d.revision, expected),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        h.state.task_definition("web", None).map(|d| d.revision),
        Ok(3)
    );
    h.one(Command::DeregisterTaskDefinition {
        family: "web".into(),
        revision: 3,
    })
    .unwrap();
    assert_eq!(
        h.state.task_definition("web", None).map(|d| d.revision),
        Ok(2)
    );
    assert!(matches!(
        h.one(Command::DeregisterTaskDefinition {
            family: "web".into(),
            revision: 9
        }),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        h.state.task_definition("nope", None),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn network_mode_is_resolved_at_registration() {
    let mut h = Harness::new();
    let mut none = spec("batch");
    none.network_mode = Some("none".into());
    h.one(Command::RegisterTaskDefinition { spec: none })
        .unwrap();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    let mode = |f: &str| h.state.task_definition(f, None).map(|d| d.network_mode);
    assert_eq!(mode("batch"), Ok(NetworkMode::None));
    assert_eq!(mode("web"), Ok(NetworkMode::Bridge));
}

#[test]
fn invalid_definition_changes_nothing() {
    let mut h = Harness::new();
    let before = h.state.clone();
    let mut bad = spec("web");
    bad.memory = Some(100);
    let r = h.one(Command::RegisterTaskDefinition { spec: bad });
    assert!(matches!(r, Err(Error::InvalidArgument(m)) if m.contains("memory")));
    assert_eq!(h.state.task_definitions(None, None).count(), 0);
    assert_eq!(h.state.families, before.families);
}

#[test]
fn placement_that_would_oversubscribe_is_refused_at_apply() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 2048, 4096)).unwrap();
    // Three 1024/2048 tasks onto a 2048/4096 agent: the third must not land.
    let (tasks, failures) =
        tasks_of(h.one(run(None, 0, &[("t1", "a1"), ("t2", "a1"), ("t3", "a1")])));
    assert_eq!(tasks.len(), 2);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, "RESOURCE:CPU");
    let a = h.state.agent("a1").unwrap();
    assert_eq!((a.used_cpu, a.used_memory, a.task_count), (2048, 4096, 2));
    h.state.check_invariants().unwrap();
}

#[test]
fn placement_on_unknown_or_draining_agent_fails() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    h.one(Command::SetAgentStatus {
        agent_id: "a1".into(),
        status: AgentStatus::Draining,
        reason: String::new(),
    })
    .unwrap();
    let (tasks, failures) = tasks_of(h.one(run(None, 0, &[("t1", "a1"), ("t2", "ghost")])));
    assert!(tasks.is_empty());
    assert!(failures.iter().all(|f| f.reason == "AGENT_UNAVAILABLE"));
}

#[test]
fn client_token_replays_first_answer_and_refuses_other_parameters() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    let (first, _) = tasks_of(h.one(run(Some("tok"), 7, &[("t1", "a1")])));
    // A retry proposes fresh ids; the token must win and create nothing.
    let (again, _) = tasks_of(h.one(run(Some("tok"), 7, &[("t9", "a1")])));
    assert_eq!(
        first.iter().map(|t| &t.id).collect::<Vec<_>>(),
        again.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    assert_eq!(h.state.task_count(), 1);
    let r = h.one(run(Some("tok"), 8, &[("t8", "a1")]));
    assert!(matches!(r, Err(Error::InvalidArgument(m)) if m.contains("different parameters")));
    assert_eq!(h.state.task_count(), 1);
    // Same token twice inside one batch: still one task.
    let rs = h.apply(vec![
        run(Some("tok2"), 1, &[("u1", "a1")]),
        run(Some("tok2"), 1, &[("u2", "a1")]),
    ]);
    let (a, _) = tasks_of(rs[0].clone());
    let (b, _) = tasks_of(rs[1].clone());
    assert_eq!(a[0].id, b[0].id);
    assert_eq!(h.state.task_count(), 2);
}

#[test]
fn tokens_expire_after_an_hour() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 16384, 32768)).unwrap();
    tasks_of(h.one(run(Some("tok"), 7, &[("t1", "a1")])));
    h.now += CLIENT_TOKEN_TTL_MS - 1;
    let (tasks, _) = tasks_of(h.one(run(Some("tok"), 7, &[("t3", "a1")])));
    assert_eq!(
        tasks[0].id, "t1",
        "inside the window the first answer is replayed"
    );
    h.now += 2;
    let (tasks, _) = tasks_of(h.one(run(Some("tok"), 8, &[("t2", "a1")])));
    assert_eq!(tasks[0].id, "t2", "an expired token is a new request");
}

#[test]
fn client_token_records_stay_bounded_at_any_call_rate() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    // Calls that place nothing still leave a record; all inside one window.
    let batch: Vec<Command> = (0..=MAX_CLIENT_TOKENS)
        .map(|i| run(Some(&format!("tok{i}")), 1, &[("x", "ghost")]))
        .collect();
    h.apply(batch);
    assert_eq!(h.state.client_token_count(), MAX_CLIENT_TOKENS);
    // The oldest went first: it is a new request now, the newest still replays.
    let (tasks, _) = tasks_of(h.one(run(Some("tok0"), 1, &[("t1", "a1")])));
    assert_eq!(tasks.len(), 1, "a forgotten token starts its task");
    let last = format!("tok{MAX_CLIENT_TOKENS}");
    let (tasks, failures) = tasks_of(h.one(run(Some(&last), 1, &[("t2", "a1")])));
    assert!(tasks.is_empty() && failures.len() == 1, "replayed, not run");
    assert_eq!(h.state.client_token_count(), MAX_CLIENT_TOKENS);
}

#[test]
fn stop_is_idempotent_and_agent_down_frees_capacity() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 0, &[("t1", "a1"), ("t2", "a1")])));
    let r = h.one(Command::StopTask {
        task_id: "t1".into(),
        reason: "done".into(),
        code: StopCode::UserInitiated,
        namespace: None,
    });
    let Ok(Outcome::Task(t)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(t.desired_status, DesiredStatus::Stopped);
    assert_eq!(t.stop_code, Some(StopCode::UserInitiated));
    let again = h.one(Command::StopTask {
        task_id: "t1".into(),
        reason: "other".into(),
        code: StopCode::UserInitiated,
        namespace: None,
    });
    let Ok(Outcome::Task(t2)) = again else {
        panic!()
    };
    assert_eq!(t2.stopped_reason.as_deref(), Some("done"));
    assert!(matches!(
        h.one(Command::StopTask {
            task_id: "zz".into(),
            reason: String::new(),
            code: StopCode::UserInitiated,
            namespace: None,
        }),
        Err(Error::NotFound(_))
    ));

    h.one(Command::SetAgentStatus {
        agent_id: "a1".into(),
        status: AgentStatus::Down,
        reason: String::new(),
    })
    .unwrap();
    let a = h.state.agent("a1").unwrap();
    assert_eq!((a.used_cpu, a.used_memory, a.task_count), (0, 0, 0));
    let t2 = h.state.task("t2").unwrap();
    assert_eq!(t2.last_status, TaskState::Stopped);
    assert_eq!(t2.stop_code, Some(StopCode::InfrastructureHealth));
    assert_eq!(
        t2.stopped_reason.as_deref(),
        Some("agent a1 stopped heartbeating")
    );
    // t1 was stopped by the user first; that reason stays.
    assert_eq!(
        h.state.task("t1").unwrap().stop_code,
        Some(StopCode::UserInitiated)
    );

    // Stopped tasks are collected after the retention.
    h.now += STOPPED_TASK_RETENTION_MS + 1;
    h.apply(vec![]);
    assert_eq!(h.state.task_count(), 0);
}

/// Regression: an agent marked DOWN kept its epoch, so its heartbeats went on being
/// accepted, nothing made it register again, and it stayed DOWN for good.
#[test]
fn an_agent_marked_down_gets_a_new_epoch_and_returns_ready_when_it_registers() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 0, &[("t1", "a1")])));
    let before = h.state.agent("a1").unwrap().epoch;

    h.now = 5_000;
    h.one(Command::SetAgentStatus {
        agent_id: "a1".into(),
        status: AgentStatus::Down,
        reason: String::new(),
    })
    .unwrap();
    let a = h.state.agent("a1").unwrap().clone();
    assert_eq!(a.status, AgentStatus::Down);
    assert_eq!(a.epoch, before + 1, "DOWN must retire the old epoch");
    assert_eq!((a.down_at, a.back_at), (Some(5_000), None));
    // Whatever the agent sends under the epoch it had is refused.
    let late = h.one(Command::ReportTasks {
        agent_id: "a1".into(),
        epoch: before,
        reports: vec![report("t1", TaskState::Running, 4_000)],
    });
    assert!(
        matches!(late, Err(Error::FailedPrecondition(_))),
        "{late:?}"
    );
    assert_eq!(h.state.task("t1").unwrap().last_status, TaskState::Stopped);
    // While DOWN nothing is placed there.
    let (placed, failures) = tasks_of(h.one(run(None, 1, &[("t2", "a1")])));
    assert!(placed.is_empty());
    assert_eq!(failures[0].reason, "AGENT_UNAVAILABLE");

    // It registers again: READY under yet another epoch, all of its capacity free, and
    // the time it was down is kept.
    h.now = 14_000;
    let Ok(Outcome::Agent(a)) = h.one(agent("a1", 4096, 8192)) else {
        panic!("re-registration refused")
    };
    assert_eq!(a.status, AgentStatus::Ready);
    assert_eq!(a.epoch, before + 2);
    assert_eq!((a.down_at, a.back_at), (Some(5_000), Some(14_000)));
    assert_eq!((a.used_cpu, a.used_memory, a.task_count), (0, 0, 0));
    let (placed, failures) = tasks_of(h.one(run(None, 2, &[("t3", "a1")])));
    assert_eq!((placed.len(), failures.len()), (1, 0), "{failures:?}");
}

#[test]
fn shrinking_an_agent_below_its_load_is_refused() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 0, &[("t1", "a1"), ("t2", "a1")])));
    assert!(matches!(
        h.one(agent("a1", 1024, 8192)),
        Err(Error::FailedPrecondition(_))
    ));
    let again = h.one(agent("a1", 4096, 8192));
    let Ok(Outcome::Agent(a)) = again else {
        panic!()
    };
    assert_eq!(a.epoch, 2);
}

fn set_status(id: &str, status: AgentStatus) -> Command {
    Command::SetAgentStatus {
        agent_id: id.into(),
        status,
        reason: String::new(),
    }
}

#[test]
fn down_agents_are_collected_after_their_retention_unless_they_came_back() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    for a in ["gone", "back", "restored"] {
        h.one(agent(a, 4096, 8192)).unwrap();
    }
    tasks_of(h.one(run(None, 0, &[("t1", "gone")])));
    for a in ["gone", "back", "restored"] {
        h.one(set_status(a, AgentStatus::Down)).unwrap();
    }
    h.now += DOWN_AGENT_RETENTION_MS / 2;
    h.one(agent("back", 4096, 8192)).unwrap();
    // A replica that took a snapshot here carries the schedule on.
    let mut copy: ClusterState =
        serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    copy.rebuild_indexes();
    h.now += DOWN_AGENT_RETENTION_MS / 2 - 1;
    h.one(set_status("back", AgentStatus::Ready)).unwrap();
    assert!(h.state.agent("gone").is_some(), "not before its time");
    h.now += 1;
    h.one(set_status("back", AgentStatus::Ready)).unwrap();
    assert!(h.state.agent("gone").is_none());
    assert!(h.state.agent("restored").is_none());
    assert!(h.state.agent("back").is_some(), "it came back");
    h.state.check_invariants().unwrap();

    let batch = Batch {
        now: h.now,
        commands: vec![set_status("back", AgentStatus::Ready)],
    };
    copy.apply(h.index + 1, &batch);
    assert!(copy.agent("gone").is_none() && copy.agent("back").is_some());
    // A collected agent that registers again is a new one.
    h.one(agent("gone", 1024, 2048)).unwrap();
    assert_eq!(h.state.agent("gone").map(|a| a.cpu), Some(1024));
}

#[test]
fn snapshot_round_trip_keeps_digest() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(Some("k"), 1, &[("t1", "a1")])));
    let bytes = serde_json::to_vec(&h.state).unwrap();
    let restored: ClusterState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(restored.digest(), h.state.digest());
    assert_eq!(restored.revision(), h.state.revision());
}

#[test]
fn a_snapshot_copy_shares_the_state_and_later_writes_do_not_reach_it() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(Some("k"), 1, &[("t1", "a1"), ("t2", "a1")])));
    let copy = h.state.clone();
    // What a snapshot build takes under the state's lock: shared maps, not a deep copy.
    assert!(copy.tasks.ptr_eq(&h.state.tasks));
    assert!(copy.agents.ptr_eq(&h.state.agents));
    assert!(copy.tokens.ptr_eq(&h.state.tokens));
    let digest = copy.digest();
    h.one(Command::StopTask {
        task_id: "t1".into(),
        reason: "done".into(),
        code: StopCode::UserInitiated,
        namespace: None,
    })
    .unwrap();
    assert!(!copy.tasks.ptr_eq(&h.state.tasks));
    assert_eq!(copy.digest(), digest, "a write after the copy reached it");
    assert_eq!(
        copy.task("t1").unwrap().desired_status,
        DesiredStatus::Running
    );
    assert_eq!(
        h.state.task("t1").unwrap().desired_status,
        DesiredStatus::Stopped
    );
}

#[test]
fn persistent_maps_are_written_as_the_std_maps_were() {
    // Snapshots written before the state's maps were persistent must still read.
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    tasks_of(h.one(run(Some("k"), 1, &[("t1", "a1")])));
    let std_tasks: BTreeMap<_, _> = h.state.tasks.clone().into_iter().collect();
    let std_expiry: BTreeSet<_> = h.state.token_expiry.clone().into_iter().collect();
    assert_eq!(
        serde_json::to_string(&h.state.tasks).unwrap(),
        serde_json::to_string(&std_tasks).unwrap()
    );
    assert_eq!(
        serde_json::to_string(&h.state.token_expiry).unwrap(),
        serde_json::to_string(&std_expiry).unwrap()
    );
    let old = serde_json::to_vec(&std_tasks).unwrap();
    let read: Map<String, Task> = serde_json::from_slice(&old).unwrap();
    assert_eq!(read, h.state.tasks);
}

// ---------------------------------------------------------------------------------------
// Property: whatever sequence of commands arrives, the invariants hold and two replicas
// applying the same log end identical.

fn arb_command() -> impl Strategy<Value = Command> {
    let agent_id = prop::sample::select(vec!["a1", "a2", "a3"]);
    let task_id = (0u32..40).prop_map(|i| format!("t{i}"));
    prop_oneof![
        (agent_id.clone(), 1u32..8, 1u32..8).prop_map(|(a, c, m)| agent(a, c * 1024, m * 2048)),
        (
            prop::collection::vec((task_id.clone(), agent_id.clone()), 0..4),
            prop::option::of(0u8..3),
            0u64..2
        )
            .prop_map(|(ps, tok, fp)| {
                let ps: Vec<(String, String)> =
                    ps.into_iter().map(|(t, a)| (t, a.to_string())).collect();
                let refs: Vec<(&str, &str)> =
                    ps.iter().map(|(t, a)| (t.as_str(), a.as_str())).collect();
                let tok = tok.map(|t| format!("k{t}"));
                run(tok.as_deref(), fp, &refs)
            }),
        Just(Command::RegisterTaskDefinition { spec: spec("web") }),
        (1u32..4).prop_map(|r| Command::DeregisterTaskDefinition {
            family: "web".into(),
            revision: r
        }),
        task_id.prop_map(|t| Command::StopTask {
            task_id: t,
            reason: String::new(),
            code: StopCode::UserInitiated,
            namespace: None,
        }),
        (
            agent_id,
            prop::sample::select(vec![
                AgentStatus::Ready,
                AgentStatus::Draining,
                AgentStatus::Down
            ])
        )
            .prop_map(|(a, s)| Command::SetAgentStatus {
                agent_id: a.into(),
                status: s,
                reason: String::new()
            }),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_and_replicas_agree(batches in prop::collection::vec(prop::collection::vec(arb_command(), 0..5), 1..30)) {
        let mut a = Harness::new();
        let mut b = Harness::new();
        a.one(Command::RegisterTaskDefinition { spec: spec("web") }).unwrap();
        b.one(Command::RegisterTaskDefinition { spec: spec("web") }).unwrap();
        for batch in batches {
            a.now += 1_000;
            b.now += 1_000;
            let ra = a.apply(batch.clone());
            let rb = b.apply(batch);
            prop_assert_eq!(ra, rb);
            prop_assert!(a.state.check_invariants().is_ok(), "{:?}", a.state.check_invariants());
        }
        prop_assert_eq!(a.state.digest(), b.state.digest());
    }

    /// A replica restored from a snapshot (derived indexes rebuilt) collects what one that
    /// applied every entry collects, at the same revisions, across retentions.
    #[test]
    fn a_replica_restored_from_a_snapshot_collects_what_the_others_do(
        batches in prop::collection::vec((prop::collection::vec(arb_command(), 0..5), 0u8..4), 1..30),
        restore_at in 0usize..30,
    ) {
        let mut a = Harness::new();
        let mut b = Harness::new();
        a.one(Command::RegisterTaskDefinition { spec: spec("web") }).unwrap();
        b.one(Command::RegisterTaskDefinition { spec: spec("web") }).unwrap();
        for (i, (batch, jump)) in batches.into_iter().enumerate() {
            // Now and then a day passes: every retention comes due somewhere.
            let step = if jump == 0 { 25 * 60 * 60 * 1000 } else { 1_000 };
            a.now += step;
            b.now += step;
            if i == restore_at {
                let bytes = serde_json::to_vec(&b.state).unwrap();
                b.state = serde_json::from_slice(&bytes).unwrap();
                b.state.rebuild_indexes();
            }
            let ra = a.apply(batch.clone());
            let rb = b.apply(batch);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a.state.digest(), b.state.digest());
        }
    }
}

/// Reports `task` on a1 RUNNING, then STOPPED with its essential container's `exit` code.
fn ran_and_exited(h: &mut Harness, task: &str, exit: i32) {
    let mut r = report(task, TaskState::Stopped, h.now);
    r.containers = vec![ContainerState {
        name: "app".into(),
        last_status: TaskState::Stopped,
        exit_code: Some(exit),
        reason: None,
        health_status: None,
        network_bindings: vec![],
    }];
    r.stop_code = Some(StopCode::EssentialContainerExited);
    r.stopped_reason = Some("Essential container in task exited".into());
    h.one(reports(
        "a1",
        1,
        vec![report(task, TaskState::Running, h.now), r],
    ))
    .unwrap();
}

fn report(task: &str, status: TaskState, at: Millis) -> TaskReport {
    TaskReport {
        task_id: task.into(),
        last_status: status,
        at,
        containers: vec![],
        stop_code: None,
        stopped_reason: None,
    }
}

fn reports(agent: &str, epoch: u64, rs: Vec<TaskReport>) -> Command {
    Command::ReportTasks {
        agent_id: agent.into(),
        epoch,
        reports: rs,
    }
}

#[test]
fn reports_move_tasks_forward_only_and_stop_frees_capacity() {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    h.one(agent("a2", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 0, &[("t1", "a1"), ("t2", "a2")])));

    h.one(reports(
        "a1",
        1,
        vec![
            report("t1", TaskState::Activating, 1_100),
            report("t1", TaskState::Running, 1_200),
        ],
    ))
    .unwrap();
    let t = h.state.task("t1").unwrap();
    assert_eq!(t.last_status, TaskState::Running);
    assert_eq!(
        (t.pull_started_at, t.started_at),
        (Some(1_100), Some(1_200))
    );
    let seen: Vec<TaskState> = t.transitions.iter().map(|x| x.status).collect();
    assert_eq!(
        seen,
        vec![
            TaskState::Provisioning,
            TaskState::Activating,
            TaskState::Running
        ]
    );

    // A late report of an earlier state changes nothing.
    h.one(reports(
        "a1",
        1,
        vec![report("t1", TaskState::Pending, 1_300)],
    ))
    .unwrap();
    assert_eq!(h.state.task("t1").unwrap().last_status, TaskState::Running);

    // Reports about someone else's task, from a stale registration or an unknown agent
    // are refused whole.
    let before = h.state.clone();
    assert!(matches!(
        h.one(reports("a1", 1, vec![report("t1", TaskState::Stopping, 1), report("t2", TaskState::Running, 1)])),
        Err(Error::FailedPrecondition(m)) if m.contains("assigned to agent a2")
    ));
    assert!(matches!(
        h.one(reports("a1", 7, vec![])),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        h.one(reports("zz", 1, vec![])),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        h.one(reports(
            "a1",
            1,
            vec![report("nope", TaskState::Running, 1)]
        )),
        Err(Error::NotFound(_))
    ));
    assert_eq!(h.state.task("t1"), before.task("t1"));

    let mut stop = report("t1", TaskState::Stopped, 1_500);
    stop.stop_code = Some(StopCode::EssentialContainerExited);
    stop.stopped_reason = Some("Essential container in task exited".into());
    stop.containers = vec![ContainerState {
        name: "app".into(),
        last_status: TaskState::Stopped,
        exit_code: Some(3),
        reason: None,
        health_status: None,
        network_bindings: vec![],
    }];
    h.one(reports("a1", 1, vec![stop])).unwrap();
    let t = h.state.task("t1").unwrap();
    assert_eq!(t.last_status, TaskState::Stopped);
    assert_eq!(t.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(t.containers[0].exit_code, Some(3));
    assert_eq!(t.stopped_at, Some(1_500));
    assert_eq!(h.state.agent("a1").unwrap().used_cpu, 0);
    assert_eq!(h.state.assigned_tasks("a1").count(), 0);
    assert_eq!(h.state.assigned_tasks("a2").count(), 1);
    // Nothing moves a STOPPED task again.
    h.one(reports(
        "a1",
        1,
        vec![report("t1", TaskState::Running, 1_600)],
    ))
    .unwrap();
    assert_eq!(h.state.task("t1").unwrap().last_status, TaskState::Stopped);
}

#[test]
fn a_membership_entry_changes_nothing_but_is_told_to_watchers() {
    let mut h = Harness::new();
    h.one(agent("a1", 1024, 2048)).unwrap();
    let before = h.state.clone();
    h.state.take_changes();
    h.state.note_membership(9, vec![1, 2, 3], vec![4]);
    assert_eq!(h.state.revision(), 9);
    assert_eq!(h.state.agents().count(), before.agents().count());
    assert_eq!(h.state.task_count(), before.task_count());
    assert_eq!(
        h.state.take_changes(),
        vec![Change::Membership {
            voters: vec![1, 2, 3],
            learners: vec![4]
        }]
    );
}

/// Found by the restore property: a namespace's use counted down to nothing kept an empty
/// entry, which a replica restored from a snapshot (counting afresh) did not have.
#[test]
fn a_replica_restored_from_a_snapshot_agrees_once_a_namespace_empties() {
    let mut a = Harness::new();
    a.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    a.one(agent("a3", 1024, 2048)).unwrap();
    a.apply(vec![
        run(None, 0, &[("t0", "a3")]),
        set_status("a3", AgentStatus::Down),
    ]);
    let mut b = Harness {
        state: serde_json::from_slice(&serde_json::to_vec(&a.state).unwrap()).unwrap(),
        index: a.index,
        now: a.now,
    };
    b.state.rebuild_indexes();
    for _ in 0..3 {
        a.now += 25 * 60 * 60 * 1000;
        b.now = a.now;
        a.apply(vec![]);
        b.apply(vec![]);
        assert_eq!(a.state.digest(), b.state.digest());
    }
}
