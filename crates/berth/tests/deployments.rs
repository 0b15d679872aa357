//! Rolling deployments and health checks end to end: three `berth control` processes,
//! `berth agent` processes in two zones on the real Docker engine, and the Services API.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::*;
use common::agent::*;
use common::service::*;
use common::*;

async fn create(api: Api, name: &str, desired: i64, config: DeploymentConfiguration) {
    ServicesClient::new(api)
        .create(CreateServiceRequest {
            service_name: name.into(),
            task_definition: "web:1".into(),
            desired_count: desired,
            deployment_configuration: Some(config),
            ..Default::default()
        })
        .await
        .expect("create service");
}

async fn deploy(api: Api, name: &str, task_definition: &str) -> Service {
    ServicesClient::new(api)
        .update(UpdateServiceRequest {
            service: name.into(),
            task_definition: Some(task_definition.into()),
            ..Default::default()
        })
        .await
        .expect("update service")
        .into_inner()
        .service
        .expect("service in answer")
}

/// Polls describe until `done` holds for the service.
async fn wait_service(
    api: Api,
    name: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Service) -> bool,
) -> Service {
    let deadline = Instant::now() + within;
    loop {
        let svc = tokio::time::timeout(Duration::from_secs(3), describe(api.clone(), name)).await;
        if let Ok(svc) = svc {
            if done(&svc) {
                return svc;
            }
            assert!(
                Instant::now() < deadline,
                "service {name} did not reach {what} within {within:?}: deployments {:?}, events {:?}",
                svc.deployments,
                svc.events.iter().take(8).map(|e| &e.message).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Only the PRIMARY deployment is left, COMPLETED, on `def`.
fn completed_on(def: &str) -> impl Fn(&Service) -> bool + '_ {
    move |s: &Service| {
        let live: Vec<&Deployment> = s
            .deployments
            .iter()
            .filter(|d| d.status != "INACTIVE")
            .collect();
        live.len() == 1
            && live[0].status == "PRIMARY"
            && live[0].rollout_state == "COMPLETED"
            && live[0].task_definition == def
    }
}

async fn two_zone_cluster() -> (Cluster, u64, Api, AgentProc, AgentProc) {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let a = AgentProc::start_in(&c, &format!("dep-a-{}", free_port()), "a");
    let b = AgentProc::start_in(&c, &format!("dep-b-{}", free_port()), "b");
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    wait_agent(api.clone(), &b.id, "READY", Duration::from_secs(20)).await;
    (c, leader, api, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_deployment_keeps_minimum_healthy_and_completes_through_a_leader_kill() {
    let (mut c, leader, api, _a, _b) = two_zone_cluster().await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register web:1");
    register(api.clone(), quiet_spec("web", &["sleep", "3601"]))
        .await
        .expect("register web:2");
    let desired = 4;
    create(
        api.clone(),
        "roll",
        desired,
        DeploymentConfiguration {
            minimum_healthy_percent: Some(100),
            maximum_percent: Some(200),
            ..Default::default()
        },
    )
    .await;
    let first = wait_running(
        api.clone(),
        "roll",
        desired as usize,
        desired as usize,
        Duration::from_secs(60),
    )
    .await;
    wait_service(
        api.clone(),
        "roll",
        "COMPLETED on web:1",
        Duration::from_secs(30),
        completed_on("web:1"),
    )
    .await;

    // Sampled every 100 ms from another node for the whole deployment: live tasks (desired
    // RUNNING) that are RUNNING, and all live tasks.
    let stop = Arc::new(AtomicBool::new(false));
    let least_running = Arc::new(AtomicUsize::new(usize::MAX));
    let most_live = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, least, most) = (stop.clone(), least_running.clone(), most_live.clone());
        let ch = c.api(leader);
        let other = api.clone();
        tokio::spawn(async move {
            let mut samples = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Whichever node answers: the leader is killed on the way.
                let mut seen = None;
                for ch in [&other, &ch] {
                    let call = live(ch.clone(), "roll");
                    if let Ok(tasks) = tokio::time::timeout(Duration::from_secs(1), call).await {
                        seen = Some(tasks);
                        break;
                    }
                }
                if let Some(tasks) = seen {
                    samples += 1;
                    let running = tasks.iter().filter(|t| t.last_status == "RUNNING").count();
                    least.fetch_min(running, Ordering::Relaxed);
                    most.fetch_max(tasks.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    let started = Instant::now();
    let svc = deploy(api.clone(), "roll", "web:2").await;
    assert_eq!(svc.deployments[0].status, "PRIMARY");
    assert_eq!(svc.deployments[0].task_definition, "web:2");
    assert_eq!(svc.deployments[1].status, "ACTIVE");
    // The leader SIGKILLed in the middle of the deployment (as soon as it is acknowledged,
    // before a replacement can be RUNNING): the new leader carries it on.
    c.kill(leader);
    let done = wait_service(
        api.clone(),
        "roll",
        "COMPLETED on web:2",
        Duration::from_secs(90),
        completed_on("web:2"),
    )
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    c.spawn(leader);

    let tasks = live(api.clone(), "roll").await;
    assert_eq!(tasks.len(), desired as usize, "{tasks:?}");
    let primary = &done.deployments[0];
    assert!(tasks
        .iter()
        .all(|t| t.task_definition == "web:2" && t.started_by == primary.id));
    assert!(tasks
        .iter()
        .all(|t| first.iter().all(|f| f.task_id != t.task_id)));
    let least = least_running.load(Ordering::Relaxed);
    let most = most_live.load(Ordering::Relaxed);
    eprintln!(
        "rolling update of {desired} tasks at 100/200 %: COMPLETED in {took:?} through a leader \
         kill; {samples} samples, RUNNING never under {least}, live never over {most}"
    );
    assert!(samples >= 5, "the sampler saw too little: {samples}");
    assert!(
        least >= desired as usize,
        "RUNNING dropped to {least}, under the minimum healthy {desired}"
    );
    assert!(
        most <= 2 * desired as usize,
        "{most} live tasks, over maximumPercent"
    );
    let events: Vec<&str> = done.events.iter().map(|e| e.message.as_str()).collect();
    assert!(events.iter().any(|e| e.contains("completed")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_that_exits_trips_the_circuit_breaker_and_rolls_back() {
    let (_c, _leader, api, _a, _b) = two_zone_cluster().await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register web:1");
    register(api.clone(), quiet_spec("web", &["sh", "-c", "exit 1"]))
        .await
        .expect("register web:2");
    create(
        api.clone(),
        "cb",
        2,
        DeploymentConfiguration {
            circuit_breaker: Some(true),
            rollback: Some(true),
            ..Default::default()
        },
    )
    .await;
    let before = wait_running(api.clone(), "cb", 2, 2, Duration::from_secs(60)).await;
    wait_service(
        api.clone(),
        "cb",
        "COMPLETED on web:1",
        Duration::from_secs(30),
        completed_on("web:1"),
    )
    .await;

    let started = Instant::now();
    let svc = deploy(api.clone(), "cb", "web:2").await;
    let bad = svc.deployments[0].id.clone();
    let back = wait_service(
        api.clone(),
        "cb",
        "rolled back to web:1",
        Duration::from_secs(90),
        |s| {
            completed_on("web:1")(s)
                && s.deployments
                    .iter()
                    .any(|d| d.id == bad && d.rollout_state == "FAILED")
        },
    )
    .await;
    eprintln!(
        "bad revision: breaker tripped and rolled back in {:?}",
        started.elapsed()
    );
    let failed = back
        .deployments
        .iter()
        .find(|d| d.id == bad)
        .expect("the failed deployment is listed");
    assert!(failed.failed_tasks >= 3, "{failed:?}");
    assert_eq!(back.task_definition, "web:1");
    // Still at its desired count on the old revision: the tasks that ran before.
    let after = wait_running(api.clone(), "cb", 2, 4, Duration::from_secs(30)).await;
    let mut ids: Vec<_> = after.iter().map(|t| t.task_id.clone()).collect();
    let mut was: Vec<_> = before.iter().map(|t| t.task_id.clone()).collect();
    ids.sort();
    was.sort();
    assert_eq!(ids, was, "rollback replaced tasks it could keep");
    let events: Vec<&str> = back.events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        events.iter().any(|e| e.contains("circuit breaker")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("rolled back")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_health_check_starts_failing_is_replaced() {
    let (_c, _leader, api, _a, _b) = two_zone_cluster().await;
    let mut checked = quiet_spec("web", &["sh", "-c", "touch /tmp/ok; exec sleep 3600"]);
    // One task in bridge mode: its published port is part of the answer.
    checked.network_mode = None;
    let app = &mut checked.container_definitions[0];
    app.port_mappings = vec![PortMapping {
        container_port: 8080,
        host_port: 0,
        protocol: "tcp".into(),
    }];
    app.health_check = Some(HealthCheck {
        command: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
        interval: Some(5),
        timeout: Some(2),
        retries: Some(1),
        start_period: None,
    });
    register(api.clone(), checked).await.expect("register");
    create(api.clone(), "hc", 1, DeploymentConfiguration::default()).await;
    let first = wait_running(api.clone(), "hc", 1, 1, Duration::from_secs(60)).await;
    let id = first[0].task_id.clone();
    let t = wait_for(api.clone(), &id, "HEALTHY", Duration::from_secs(30), |t| {
        t.health_status == "HEALTHY"
    })
    .await;
    assert_eq!(t.containers[0].health_status, "HEALTHY");
    let binding = t.containers[0]
        .network_bindings
        .iter()
        .find(|b| b.container_port == 8080)
        .unwrap_or_else(|| panic!("no binding for 8080: {:?}", t.containers[0]));
    assert!(binding.host_port > 0, "{binding:?}");
    let svc = wait_service(
        api.clone(),
        "hc",
        "COMPLETED",
        Duration::from_secs(20),
        completed_on("web:1"),
    )
    .await;
    let endpoints = &svc.tasks[0].endpoints;
    assert!(
        endpoints
            .iter()
            .any(|e| e.ends_with(&format!(":{}", binding.host_port))),
        "{endpoints:?}"
    );

    // The check starts failing: the task is UNHEALTHY, stopped for it, and replaced.
    let container = docker(&["ps", "-q", "--filter", &format!("label=berth.task={id}")]);
    let container = container
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!container.is_empty(), "no container for task {id}");
    let broke = Instant::now();
    docker(&["exec", &container, "rm", "/tmp/ok"]);
    let stopped = wait_for(api.clone(), &id, "STOPPED", Duration::from_secs(60), |t| {
        t.last_status == "STOPPED"
    })
    .await;
    assert_eq!(
        stopped.stop_code, "ServiceSchedulerInitiated",
        "{stopped:?}"
    );
    assert_eq!(
        stopped.stopped_reason, "Task failed container health checks",
        "{stopped:?}"
    );
    let replaced = wait_running(api.clone(), "hc", 1, 2, Duration::from_secs(60)).await;
    assert_ne!(replaced[0].task_id, id);
    eprintln!(
        "health check failing → replacement RUNNING in {:?}",
        broke.elapsed()
    );
    let svc = describe(api.clone(), "hc").await;
    assert!(
        svc.events
            .iter()
            .any(|e| e.message.contains(&format!("{id} failed its health check"))),
        "{:?}",
        svc.events
    );
}
