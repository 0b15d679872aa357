//! Agents end to end: `berth control` processes, `berth agent` processes on the real Docker
//! engine, and the public API in between.

mod common;

use std::time::{Duration, Instant};

use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;
use tokio_stream::StreamExt;

/// A new agent process, READY, running two `sleep` tasks of family `svc` (RUNNING): the
/// agent, its record when it became READY, and the RunTask answer.
async fn agent_running_two_tasks(
    c: &Cluster,
    api: common::Api,
    name: &str,
) -> (AgentProc, Agent, RunTaskResponse) {
    let agent = AgentProc::start(c, name);
    let ready = wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), spec("svc", "sleep 3600"))
        .await
        .expect("register");
    let r = run(api.clone(), "svc", 2, &format!("{name}-1"))
        .await
        .expect("run");
    assert_eq!(r.tasks.len(), 2, "{:?}", r.failures);
    for t in &r.tasks {
        wait_for(
            api.clone(),
            &t.task_id,
            "RUNNING",
            Duration::from_secs(30),
            |t| t.last_status == "RUNNING",
        )
        .await;
    }
    (agent, ready, r)
}

fn spec(family: &str, command: &str) -> TaskDefinitionSpec {
    TaskDefinitionSpec {
        family: family.into(),
        cpu: Some(256),
        memory: Some(512),
        network_mode: None,
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            command: vec!["sh".into(), "-c".into(), command.into()],
            stop_timeout: Some(2),
            ..Default::default()
        }],
        timeouts: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_run_report_exit_codes_stream_logs_and_survive_an_agent_restart() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let mut agent = AgentProc::start(&c, "e2e");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    let svc = register(api.clone(), spec("svc", "echo started; sleep 3600"))
        .await
        .expect("register");
    assert_eq!(svc.network_mode, "bridge");
    // A task that needs no network: loopback only.
    let mut three = spec("three", "echo bye; exit 3");
    three.network_mode = Some("none".into());
    let three = register(api.clone(), three).await.expect("register");
    assert_eq!(three.network_mode, "none");

    // Watch the task go through its states as they are reported.
    let mut watch = TasksClient::new(api.clone())
        .watch(WatchTasksRequest {
            family: "svc".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let r = run(api.clone(), "svc", 1, "svc-1").await.expect("run");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let id = r.tasks[0].task_id.clone();
    let mut states = Vec::new();
    while !states.contains(&"RUNNING".to_string()) {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap_or_else(|_| panic!("no RUNNING within 30 s; saw {states:?}\n{}", agent.log()))
            .expect("stream open")
            .expect("event");
        let t = ev.task.expect("task");
        if states.last() != Some(&t.last_status) {
            states.push(t.last_status.clone());
        }
    }
    let order = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"];
    let pos: Vec<usize> = states
        .iter()
        .filter_map(|s| order.iter().position(|o| o == s))
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "states went backwards: {states:?}"
    );
    let running = task(api.clone(), &id).await;
    assert!(
        running.started_at_ms.is_some() && running.pull_started_at_ms.is_some(),
        "{running:?}"
    );

    // The container is labelled for the task and agent, with the task's limits.
    let cid = docker(&["ps", "-q", "--filter", &format!("label=berth.task={id}")]);
    assert!(!cid.is_empty(), "no container for task {id}");
    let inspect = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.State.StartedAt}}",
        &cid,
    ]);
    assert!(
        inspect.starts_with(&format!("{} 250000000 ", 512 * 1024 * 1024)),
        "{inspect}"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", &cid]),
        "bridge"
    );

    // Logs come from the agent through the control plane.
    let out = logs(api.clone(), &id).await.expect("logs");
    assert_eq!(out.trim(), "started");

    // An essential container's exit code is reported.
    let r = run(api.clone(), "three", 1, "three-1").await.expect("run");
    let t = wait_for(
        api.clone(),
        &r.tasks[0].task_id,
        "STOPPED",
        Duration::from_secs(30),
        |t| t.last_status == "STOPPED",
    )
    .await;
    assert_eq!(t.stop_code, "EssentialContainerExited", "{t:?}");
    assert_eq!(t.containers[0].exit_code, Some(3), "{t:?}");

    // SIGKILL the agent and start it again: the running container is adopted, not restarted.
    agent.kill();
    agent.spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.State.StartedAt}}",
        &cid,
    ]);
    assert_eq!(
        after,
        inspect,
        "the container was restarted or replaced\n{}",
        agent.log()
    );
    assert_eq!(task(api.clone(), &id).await.last_status, "RUNNING");

    // A user stop: SIGTERM, then SIGKILL after the 2 s stop timeout (sh ignores TERM here).
    TasksClient::new(api.clone())
        .stop(StopTaskRequest {
            task_id: id.clone(),
            reason: "test over".into(),
        })
        .await
        .expect("stop");
    let t = wait_for(api.clone(), &id, "STOPPED", Duration::from_secs(30), |t| {
        t.last_status == "STOPPED"
    })
    .await;
    assert_eq!(
        (t.stop_code.as_str(), t.stopped_reason.as_str()),
        ("UserInitiated", "test over")
    );
    assert!(
        docker(&["ps", "-aq", "--filter", &format!("label=berth.task={id}")]).is_empty(),
        "container not removed"
    );
    let a = wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(5)).await;
    assert_eq!((a.used_cpu, a.used_memory), (0, 0), "capacity not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_that_dies_is_marked_down_and_its_tasks_stopped() {
    require_docker();
    let c = Cluster::start(3, &["--agent-ttl-ms", "3000", "--agent-grace-ms", "6000"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let (mut agent, _, r) = agent_running_two_tasks(&c, api.clone(), "doomed").await;

    // The agent process dies; its containers keep running until fencing — but fencing is
    // the agent's job, and the agent is dead, so the control plane's view is what we test
    // here: DOWN after the TTL, tasks stopped with InfrastructureHealth, capacity freed.
    let killed = Instant::now();
    agent.kill();
    let a = wait_agent(api.clone(), &agent.id, "DOWN", Duration::from_secs(15)).await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "DOWN took {took:?} with a 3 s TTL"
    );
    assert_eq!((a.used_cpu, a.used_memory, a.task_count), (0, 0, 0));
    for t in &r.tasks {
        let t = task(api.clone(), &t.task_id).await;
        assert_eq!(t.last_status, "STOPPED");
        assert_eq!(t.stop_code, "InfrastructureHealth");
        assert_eq!(
            t.stopped_reason,
            format!("agent {} stopped heartbeating", agent.id)
        );
    }

    // When the agent comes back it registers again, learns its tasks are gone and removes
    // their containers.
    agent.spawn();
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.agent={}", agent.id),
        ]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containers of stopped tasks remain: {left}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_cut_off_from_the_control_plane_fences_its_tasks() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let agent = AgentProc::start(&c, "fenced");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), spec("svc", "sleep 3600"))
        .await
        .expect("register");
    let r = run(api.clone(), "svc", 1, "fenced-1").await.expect("run");
    let id = r.tasks[0].task_id.clone();
    wait_for(api.clone(), &id, "RUNNING", Duration::from_secs(30), |t| {
        t.last_status == "RUNNING"
    })
    .await;

    // Every control node goes away: the agent can reach nobody.
    let cut = Instant::now();
    for n in [1, 2, 3] {
        c.kill(n);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let running = docker(&["ps", "-q", "--filter", &format!("label=berth.task={id}")]);
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task still runs {:?} after the cut\n{}",
            cut.elapsed(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Default fence: 3.5 s of silence, then SIGTERM, SIGKILL 0.5 s later — before the
    // control plane's 5 s TTL would give the task up.
    let took = cut.elapsed();
    assert!(took < Duration::from_secs(5), "fencing took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_neither_loses_nor_duplicates_an_agents_tasks() {
    require_docker();
    // Short TTL and grace, so the test would see an agent wrongly declared DOWN.
    let mut c = Cluster::start(3, &["--agent-ttl-ms", "3000", "--agent-grace-ms", "4000"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let agent = AgentProc::start(&c, "steady");
    let follower = c.follower_of(leader);
    let api = c.api(follower);
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), spec("svc", "sleep 3600"))
        .await
        .expect("register");
    let r = run(api.clone(), "svc", 3, "steady-1").await.expect("run");
    assert_eq!(r.tasks.len(), 3, "{:?}", r.failures);
    let mut containers = Vec::new();
    for t in &r.tasks {
        wait_for(
            api.clone(),
            &t.task_id,
            "RUNNING",
            Duration::from_secs(30),
            |t| t.last_status == "RUNNING",
        )
        .await;
        containers.push(docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=berth.task={}", t.task_id),
        ]));
    }

    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(30)).await;
    // Past the new leader's grace and a whole TTL: the agent must still be READY.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let api = c.api(new_leader);
    let a = wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(1)).await;
    assert_eq!(a.task_count, 3);
    for (t, cid) in r.tasks.iter().zip(&containers) {
        assert_eq!(task(api.clone(), &t.task_id).await.last_status, "RUNNING");
        let now = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.task={}", t.task_id),
        ]);
        assert_eq!(
            &now,
            cid,
            "task {} lost or duplicated its container\n{}",
            t.task_id,
            agent.log()
        );
    }
    c.spawn(leader);
}

/// Regression: an agent marked DOWN while it was paused (or cut off) came back, heartbeated
/// — and stayed DOWN for good, so a one-agent cluster could never run anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_marked_down_while_paused_returns_ready_under_a_new_epoch() {
    require_docker();
    let c = Cluster::start(3, &["--agent-grace-ms", "5000"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let (agent, before, r) = agent_running_two_tasks(&c, api.clone(), "paused").await;
    // Past the new leader's grace, so the TTL alone decides.
    tokio::time::sleep(Duration::from_secs(5)).await;

    agent.signal("-STOP");
    let down = wait_agent(api.clone(), &agent.id, "DOWN", Duration::from_secs(15)).await;
    assert!(down.epoch > before.epoch, "DOWN kept epoch {}", down.epoch);
    assert!(
        down.down_at_ms.is_some() && down.back_at_ms.is_none(),
        "{down:?}"
    );
    assert_eq!((down.used_cpu, down.task_count), (0, 0));
    for t in &r.tasks {
        let t = task(api.clone(), &t.task_id).await;
        assert_eq!(
            (t.last_status.as_str(), t.stop_code.as_str()),
            ("STOPPED", "InfrastructureHealth")
        );
    }
    // 8 s frozen in all, as in the report.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.signal("-CONT");
    let healed = Instant::now();

    let back = wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(10)).await;
    assert!(
        healed.elapsed() < Duration::from_secs(6),
        "READY only {:?} after the agent was heard again\n{}",
        healed.elapsed(),
        agent.log()
    );
    assert!(back.epoch > down.epoch, "{back:?}");
    assert_eq!(back.down_at_ms, down.down_at_ms);
    let (down_at, back_at) = (
        back.down_at_ms.expect("down time kept"),
        back.back_at_ms.expect("return time"),
    );
    assert!(back_at > down_at, "{back:?}");
    assert_eq!(
        (back.used_cpu, back.used_memory, back.task_count),
        (0, 0, 0)
    );

    // The stopped tasks' containers are gone, and the capacity is usable again.
    for t in &r.tasks {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.task={}", t.task_id),
        ])
        .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the container of stopped task {} remains\n{}",
                t.task_id,
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let again = run(api.clone(), "svc", 1, "paused-2").await.expect("run");
    assert_eq!(again.tasks.len(), 1, "{:?}", again.failures);
    wait_for(
        api.clone(),
        &again.tasks[0].task_id,
        "RUNNING",
        Duration::from_secs(30),
        |t| t.last_status == "RUNNING",
    )
    .await;
}
