//! Bad input gets a clear error naming the field, and never changes state.

mod common;

use std::time::Duration;

use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::*;
use tonic::Code;

fn container(name: &str, image: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: name.into(),
        image: image.into(),
        ..Default::default()
    }
}

async fn expect(code: Code, needle: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
    match r {
        Ok(v) => panic!("expected {code:?} ({needle}), got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{needle}: {s:?}");
            assert!(
                s.message().contains(needle),
                "`{}` does not mention `{needle}`",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = c.follower_of(leader);
    let api = c.api(follower);
    register(api.clone(), web_spec("web"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 4096, 8192, &[("zone", "a")])
        .await;
    let ok = run(api.clone(), "web", 1, "good").await.expect("run");
    let revision_before = status(c.api(leader)).await.revision;

    let reg = |spec: TaskDefinitionSpec| register(api.clone(), spec);
    let mut s = web_spec("web");
    s.memory = Some(4096);
    expect(
        Code::InvalidArgument,
        "memory: 4096 MiB is not allowed with cpu 256",
        reg(s).await,
    )
    .await;
    let mut s = web_spec("web");
    s.cpu = Some(300);
    expect(Code::InvalidArgument, "cpu: 300", reg(s).await).await;
    let mut s = web_spec("web");
    s.container_definitions[0].image = String::new();
    expect(
        Code::InvalidArgument,
        "containerDefinitions[0].image",
        reg(s).await,
    )
    .await;
    let mut s = web_spec("web");
    s.container_definitions = (0..11)
        .map(|i| container(&format!("c{i}"), "img"))
        .collect();
    expect(Code::InvalidArgument, "the limit is 10", reg(s).await).await;
    let mut s = web_spec("web");
    s.container_definitions = vec![container("app", "img"), container("app", "img")];
    expect(
        Code::InvalidArgument,
        "containerDefinitions[1].name `app` is already used",
        reg(s).await,
    )
    .await;
    let mut s = web_spec("web");
    s.container_definitions[0].user = Some("app:staff:extra".into());
    expect(
        Code::InvalidArgument,
        "containerDefinitions[0].user `app:staff:extra` has more than one `:`",
        reg(s).await,
    )
    .await;
    let mut s = web_spec("");
    s.family = "has space".into();
    expect(Code::InvalidArgument, "family", reg(s).await).await;
    // Oversize: 5 MiB in one environment value.
    let mut s = web_spec("web");
    s.container_definitions[0].environment = vec![KeyValue {
        name: "BIG".into(),
        value: "x".repeat(5 << 20),
    }];
    expect(
        Code::InvalidArgument,
        "containerDefinitions[0].environment[0].value",
        reg(s).await,
    )
    .await;
    expect(
        Code::InvalidArgument,
        "taskDefinition is required",
        TaskDefinitionsClient::new(api.clone())
            .register(RegisterTaskDefinitionRequest {
                task_definition: None,
            })
            .await,
    )
    .await;

    let run_req = |td: &str, count: u32| RunTaskRequest {
        task_definition: td.into(),
        count,
        ..Default::default()
    };
    let mut tasks = TasksClient::new(api.clone());
    expect(
        Code::InvalidArgument,
        "count 0",
        tasks.run(run_req("web", 0)).await,
    )
    .await;
    expect(
        Code::InvalidArgument,
        "count 11",
        tasks.run(run_req("web", 11)).await,
    )
    .await;
    expect(
        Code::NotFound,
        "`nope`",
        tasks.run(run_req("nope", 1)).await,
    )
    .await;
    expect(
        Code::NotFound,
        "web:7",
        tasks.run(run_req("web:7", 1)).await,
    )
    .await;
    expect(
        Code::InvalidArgument,
        "revision `x`",
        tasks.run(run_req("web:x", 1)).await,
    )
    .await;
    let mut r = run_req("web", 1);
    r.placement_strategy = vec![PlacementStrategy {
        r#type: "pack".into(),
        field: String::new(),
    }];
    expect(
        Code::InvalidArgument,
        "placementStrategy[0].type `pack`",
        tasks.run(r).await,
    )
    .await;
    let mut r = run_req("web", 1);
    r.placement_constraints = vec![PlacementConstraint {
        r#type: "memberOf".into(),
        expression: "attribute:zone in [a,".into(),
    }];
    expect(
        Code::InvalidArgument,
        "placementConstraints[0].expression",
        tasks.run(r).await,
    )
    .await;
    let mut r = run_req("web", 1);
    r.overrides = vec![ContainerOverride {
        name: "ghost".into(),
        ..Default::default()
    }];
    expect(
        Code::InvalidArgument,
        "`ghost` is not a container",
        tasks.run(r).await,
    )
    .await;
    let mut r = run_req("web", 1);
    r.client_token = "x".repeat(65);
    expect(Code::InvalidArgument, "clientToken", tasks.run(r).await).await;

    let missing = "0123456789abcdef0123456789abcdef".to_string();
    expect(
        Code::NotFound,
        "does not exist",
        tasks
            .stop(StopTaskRequest {
                task_id: missing.clone(),
                reason: String::new(),
            })
            .await,
    )
    .await;
    expect(
        Code::InvalidArgument,
        "is not a task id",
        tasks
            .stop(StopTaskRequest {
                task_id: "not-an-id".into(),
                reason: String::new(),
            })
            .await,
    )
    .await;
    let d = tasks
        .describe(DescribeTasksRequest {
            task_ids: vec![ok.tasks[0].task_id.clone(), missing.clone()],
            stale: false,
        })
        .await
        .expect("describe with one missing id")
        .into_inner();
    assert_eq!(d.tasks.len(), 1);
    assert_eq!(
        (d.failures[0].reason.as_str(), d.failures[0].arn.as_str()),
        ("MISSING", missing.as_str())
    );
    expect(
        Code::InvalidArgument,
        "the limit is 100",
        tasks
            .describe(DescribeTasksRequest {
                task_ids: vec![missing.clone(); 101],
                stale: false,
            })
            .await,
    )
    .await;
    let mut defs = TaskDefinitionsClient::new(api.clone());
    expect(
        Code::InvalidArgument,
        "explicit revision",
        defs.deregister(DeregisterTaskDefinitionRequest {
            task_definition: "web".into(),
        })
        .await,
    )
    .await;
    expect(
        Code::NotFound,
        "web:9",
        defs.deregister(DeregisterTaskDefinitionRequest {
            task_definition: "web:9".into(),
        })
        .await,
    )
    .await;
    expect(
        Code::InvalidArgument,
        "revisions start at 1",
        defs.describe(DescribeTaskDefinitionRequest {
            task_definition: "web:0".into(),
            stale: false,
        })
        .await,
    )
    .await;

    // Nothing above reached the state.
    let after = status(c.api(leader)).await.revision;
    assert_eq!(
        after, revision_before,
        "a refused request changed the state"
    );
    assert_eq!(all_tasks(api.clone(), false).await.len(), 1);
    // And the cluster is still healthy.
    run(api, "web", 1, "good-2")
        .await
        .expect("run after bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_agent_traffic_is_refused_and_changes_nothing() {
    use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
    use berth_proto::internal::{AgentRegisterRequest, HeartbeatRequest, ReportTasksRequest};

    // The agent protocol's own checks, with one caller speaking for many agent ids (some of
    // which no certificate can name): on TLS the caller's identity is checked first, which
    // tls.rs shows; an --insecure cluster has only these.
    let c = Cluster::start(3, &["--insecure"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = c.follower_of(leader);
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    let mut agents = AgentProtocolClient::new(c.raft(follower));
    let reg = |id: &str| AgentRegisterRequest {
        agent_id: id.into(),
        cpu: 4096,
        memory: 8192,
        attributes: Default::default(),
        address: String::new(),
    };
    let a1 = agents
        .register(reg("a1"))
        .await
        .expect("register a1")
        .into_inner();
    agents.register(reg("a2")).await.expect("register a2");
    let t = run(c.api(leader), "web", 1, "t")
        .await
        .expect("run")
        .tasks
        .remove(0);
    let other = if t.agent_id == "a1" { "a2" } else { "a1" };
    let other_epoch = if other == "a1" { a1.epoch } else { 1 };
    let before = status(c.api(leader)).await.revision;

    let report = |agent: &str, epoch: u64, task: &str| ReportTasksRequest {
        agent_id: agent.into(),
        epoch,
        reports: format!(r#"[{{"taskId":"{task}","lastStatus":"RUNNING","at":1}}]"#).into_bytes(),
    };
    expect(
        tonic::Code::NotFound,
        "`ghost` is not registered",
        agents.report_tasks(report("ghost", 1, &t.task_id)).await,
    )
    .await;
    expect(
        tonic::Code::FailedPrecondition,
        &format!("which is assigned to agent {}", t.agent_id),
        agents
            .report_tasks(report(other, other_epoch, &t.task_id))
            .await,
    )
    .await;
    expect(
        tonic::Code::FailedPrecondition,
        "re-register",
        agents
            .report_tasks(report(&t.agent_id, 99, &t.task_id))
            .await,
    )
    .await;
    expect(
        tonic::Code::InvalidArgument,
        "not a list of task reports",
        agents
            .report_tasks(ReportTasksRequest {
                agent_id: "a1".into(),
                epoch: 1,
                reports: b"{nope".to_vec(),
            })
            .await,
    )
    .await;
    expect(
        tonic::Code::FailedPrecondition,
        "re-register",
        agents
            .heartbeat(HeartbeatRequest {
                agent_id: "a1".into(),
                epoch: 42,
                engine_error: String::new(),
            })
            .await,
    )
    .await;
    expect(
        tonic::Code::NotFound,
        "register first",
        agents
            .heartbeat(HeartbeatRequest {
                agent_id: "ghost".into(),
                epoch: 1,
                engine_error: String::new(),
            })
            .await,
    )
    .await;
    let mut r = reg("bad id");
    r.cpu = 0;
    expect(
        tonic::Code::InvalidArgument,
        "agent id",
        agents.register(r).await,
    )
    .await;

    assert_eq!(
        status(c.api(leader)).await.revision,
        before,
        "refused agent traffic changed the state"
    );
    let now = TasksClient::new(c.api(leader))
        .describe(DescribeTasksRequest {
            task_ids: vec![t.task_id.clone()],
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(now.tasks[0].last_status, "PROVISIONING");
}
