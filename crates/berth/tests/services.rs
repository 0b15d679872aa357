//! Services end to end: three `berth control` processes, `berth agent` processes in two
//! zones on the real Docker engine, and the Services API.

mod common;

use std::time::{Duration, Instant};

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::service::*;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_is_kept_at_its_count_through_scaling_a_killed_container_and_a_lost_agent() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let mut a = AgentProc::start_in(&c, "svc-a", "a");
    let b = AgentProc::start_in(&c, "svc-b", "b");
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    wait_agent(api.clone(), &b.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register");

    let created = ServicesClient::new(api.clone())
        .create(CreateServiceRequest {
            service_name: "web".into(),
            task_definition: "web".into(),
            desired_count: 0,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    assert_eq!(
        (created.status.as_str(), created.task_definition.as_str()),
        ("ACTIVE", "web:1")
    );
    // The default strategy: spread over zones, then pack.
    assert_eq!(created.placement_strategy.len(), 2);

    // 0 → 5, with the leader SIGKILLed right after the update: the new leader carries on
    // and the service never has more than 5 live tasks.
    update(api.clone(), "web", 5).await.expect("scale out");
    c.kill(leader);
    let api = c.api(c.follower_of(leader));
    let five = wait_running(api.clone(), "web", 5, 5, Duration::from_secs(60)).await;
    c.spawn(leader);
    let zones: Vec<_> = five.iter().map(|t| t.agent_id.clone()).collect();
    assert!(
        zones.contains(&a.id) && zones.contains(&b.id),
        "spread over both zones: {zones:?}"
    );

    // 5 → 2: the three newest stop, with the scheduler's stop code.
    update(api.clone(), "web", 2).await.expect("scale in");
    let two = wait_running(api.clone(), "web", 2, 5, Duration::from_secs(30)).await;
    let mut by_age = five.clone();
    by_age.sort_by_key(|t| (t.created_at_ms, t.task_id.clone()));
    let oldest: Vec<_> = by_age.iter().take(2).map(|t| t.task_id.clone()).collect();
    let mut kept: Vec<_> = two.iter().map(|t| t.task_id.clone()).collect();
    kept.sort();
    let mut oldest_sorted = oldest.clone();
    oldest_sorted.sort();
    assert_eq!(kept, oldest_sorted, "scale-in keeps the oldest tasks");
    for t in by_age.iter().skip(2) {
        let t = task(api.clone(), &t.task_id).await;
        assert_eq!(t.stop_code, "ServiceSchedulerInitiated", "{t:?}");
    }

    // A task's container killed behind Berth's back: the task stops and is replaced.
    let victim = two[0].clone();
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=berth.task={}", victim.task_id),
    ]);
    assert!(
        !container.is_empty(),
        "no container for task {}",
        victim.task_id
    );
    docker(&[
        "kill",
        container.split_whitespace().next().unwrap_or_default(),
    ]);
    wait_for(
        api.clone(),
        &victim.task_id,
        "STOPPED",
        Duration::from_secs(30),
        |t| t.last_status == "STOPPED",
    )
    .await;
    let replaced = wait_running(api.clone(), "web", 2, 2, Duration::from_secs(30)).await;
    assert!(replaced.iter().all(|t| t.task_id != victim.task_id));

    // An agent SIGKILLed: its tasks are marked lost and run again on the other agent.
    let on_a = replaced.iter().filter(|t| t.agent_id == a.id).count();
    if on_a == 0 {
        // Both on b (the replacement went there): scale out so that a holds one.
        update(api.clone(), "web", 3).await.expect("scale out");
        wait_running(api.clone(), "web", 3, 3, Duration::from_secs(30)).await;
    }
    let desired = describe(api.clone(), "web").await.desired_count as usize;
    let killed = Instant::now();
    a.kill();
    wait_running_on(
        api.clone(),
        "web",
        desired,
        desired,
        Some(&b.id),
        Duration::from_secs(40),
    )
    .await;
    let took = killed.elapsed();
    eprintln!("agent SIGKILL → {desired} tasks RUNNING on the other agent in {took:?}");

    let svc = describe(api.clone(), "web").await;
    let events: Vec<&str> = svc.events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("has reached a steady state")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("has started")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("InfrastructureHealth")),
        "{events:?}"
    );

    // Delete: refused while the count is above 0, unless forced; then drained.
    let refused = ServicesClient::new(api.clone())
        .delete(DeleteServiceRequest {
            service: "web".into(),
            force: false,
        })
        .await
        .expect_err("delete with tasks");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    ServicesClient::new(api.clone())
        .delete(DeleteServiceRequest {
            service: "web".into(),
            force: true,
        })
        .await
        .expect("forced delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let svc = describe(api.clone(), "web").await;
        if svc.status == "INACTIVE" {
            break;
        }
        assert!(Instant::now() < deadline, "service never drained: {svc:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(live(api.clone(), "web").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_service_requests_get_a_clear_status_and_change_nothing() {
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(1);
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register");
    let create = |name: &str, def: &str, desired: i64| CreateServiceRequest {
        service_name: name.into(),
        task_definition: def.into(),
        desired_count: desired,
        ..Default::default()
    };
    let mut svc = ServicesClient::new(api.clone());
    let cases = [
        (
            create("web", "web", -1),
            Code::InvalidArgument,
            "desiredCount",
        ),
        (
            create("web", "web", 1001),
            Code::InvalidArgument,
            "desiredCount",
        ),
        (
            create("we b", "web", 1),
            Code::InvalidArgument,
            "serviceName",
        ),
        (create("web", "nope", 1), Code::NotFound, "nope"),
        (create("web", "web:9", 1), Code::NotFound, "web"),
        (
            create("web", "", 1),
            Code::InvalidArgument,
            "taskDefinition",
        ),
        (
            CreateServiceRequest {
                deployment_configuration: Some(DeploymentConfiguration {
                    min_healthy_time_ms: Some(600_001),
                    ..Default::default()
                }),
                ..create("web", "web", 1)
            },
            Code::InvalidArgument,
            "minHealthyTimeMs",
        ),
    ];
    for (req, code, names) in cases {
        let e = svc.create(req.clone()).await.expect_err("refused");
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(names), "{req:?}: {}", e.message());
    }
    svc.create(create("web", "web", 0)).await.expect("create");
    let e = svc
        .create(create("web", "web", 0))
        .await
        .expect_err("taken");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // The same token with the same request is the same service; with another, refused.
    let mut tokened = create("api", "web", 0);
    tokened.client_token = "t-1".into();
    let first = svc
        .create(tokened.clone())
        .await
        .expect("create")
        .into_inner();
    let again = svc
        .create(tokened.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first.service, again.service);
    tokened.desired_count = 1;
    let e = svc.create(tokened).await.expect_err("token reuse");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let e = update(api.clone(), "nope", 1).await.expect_err("missing");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = update(api.clone(), "web", -3).await.expect_err("negative");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = svc
        .update(UpdateServiceRequest {
            service: "web".into(),
            desired_count: None,
            ..Default::default()
        })
        .await
        .expect_err("empty update");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A user's RunTask cannot pose as a service's task.
    let e = TasksClient::new(api.clone())
        .run(RunTaskRequest {
            task_definition: "web".into(),
            count: 1,
            group: "service:web".into(),
            ..Default::default()
        })
        .await
        .expect_err("reserved group");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Deleted (desired 0, no tasks): INACTIVE at once, and an update is refused.
    svc.delete(DeleteServiceRequest {
        service: "web".into(),
        force: false,
    })
    .await
    .expect("delete");
    assert_eq!(describe(api.clone(), "web").await.status, "INACTIVE");
    let e = update(api.clone(), "web", 1).await.expect_err("deleted");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let listed = svc
        .list(ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = listed
        .services
        .iter()
        .map(|s| s.service_name.as_str())
        .collect();
    assert_eq!(names, vec!["api"]);
    let missing = svc
        .describe(DescribeServicesRequest {
            services: vec!["ghost".into()],
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(missing.failures[0].reason, "MISSING");
}
