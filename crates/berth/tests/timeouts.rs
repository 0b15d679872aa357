//! Task time limits end to end: a task past its maximum run time is stopped by its agent
//! within a second of the limit — with the control plane reachable, and with every control
//! node frozen (the agent enforces it on its own clock).

mod common;

use std::time::{Duration, Instant, SystemTime};

use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;

const LIMIT: Duration = Duration::from_secs(4);

/// A container that exits at once on SIGTERM (a shell as PID 1 ignores it otherwise).
fn spec() -> TaskDefinitionSpec {
    quiet_spec(
        "bounded",
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ],
    )
}

async fn run_bounded(api: Api, token: &str) -> String {
    TasksClient::new(api)
        .run(RunTaskRequest {
            task_definition: "bounded".into(),
            count: 1,
            client_token: token.into(),
            timeouts: Some(Timeouts {
                start_timeout: None,
                max_runtime: Some(LIMIT.as_secs() as u32),
            }),
            ..Default::default()
        })
        .await
        .expect("run")
        .into_inner()
        .tasks
        .remove(0)
        .task_id
}

/// When the task's container started, by the engine, and when it stopped running (polled
/// every 50 ms).
async fn container_lifetime(task_id: &str) -> (SystemTime, Duration) {
    let filter = format!("label=berth.task={task_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let id = docker(&["ps", "-q", "--filter", &filter]);
        if !id.is_empty() {
            break id;
        }
        assert!(Instant::now() < deadline, "the container never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &id]);
    let started = humantime::parse_rfc3339(started.trim()).expect("StartedAt");
    loop {
        if docker(&["ps", "-q", "--filter", &filter]).is_empty() {
            let ran = SystemTime::now()
                .duration_since(started)
                .unwrap_or_default();
            return (started, ran);
        }
        assert!(
            Instant::now() < deadline,
            "the container still runs past its limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_past_its_maximum_run_time_is_stopped_within_a_second_even_cut_off() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    // Fencing off: a cut-off agent keeps its tasks, so only the time limit can stop them.
    let agent = AgentProc::start_with(&c, "bounded-a", "a", &[], &["--fence-after-ms", "0"]);
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), spec()).await.expect("register");

    // Connected.
    let id = run_bounded(api.clone(), "bounded-1").await;
    let (_, ran) = container_lifetime(&id).await;
    assert!(
        ran >= LIMIT && ran <= LIMIT + Duration::from_secs(1),
        "stopped {ran:?} after its start; the limit is {LIMIT:?}"
    );
    let t = wait_for(api.clone(), &id, "STOPPED", Duration::from_secs(20), |t| {
        t.last_status == "STOPPED"
    })
    .await;
    assert!(t.stopped_reason.starts_with("Timeout"), "{t:?}");
    assert_eq!(
        t.timeouts.as_ref().and_then(|x| x.max_runtime),
        Some(LIMIT.as_secs() as u32)
    );

    // Cut off: every control node frozen once the task runs.
    let id = run_bounded(api.clone(), "bounded-2").await;
    wait_for(api.clone(), &id, "RUNNING", Duration::from_secs(20), |t| {
        t.last_status == "RUNNING"
    })
    .await;
    for n in [1, 2, 3] {
        c.signal(n, "-STOP");
    }
    let (_, ran) = container_lifetime(&id).await;
    for n in [1, 2, 3] {
        c.signal(n, "-CONT");
    }
    assert!(
        ran >= LIMIT && ran <= LIMIT + Duration::from_secs(1),
        "cut off, stopped {ran:?} after its start; the limit is {LIMIT:?}\n{}",
        agent.log()
    );
    // Once the control plane is back (through a new election, maybe) it hears how the task
    // ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = TasksClient::new(api.clone())
            .describe(DescribeTasksRequest {
                task_ids: vec![id.clone()],
                stale: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().tasks.pop());
        if let Some(t) = t.filter(|t| t.last_status == "STOPPED") {
            break t;
        }
        assert!(Instant::now() < deadline, "the task never showed STOPPED");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(t.stopped_reason.starts_with("Timeout"), "{t:?}");
}

/// A registry on loopback that accepts connections and never answers: the engine's pull
/// from it hangs until its own timeouts (about 25 s on Docker 28).
fn silent_registry() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = l.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_stuck_before_running_fails_to_start_at_its_start_timeout() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let agent = AgentProc::start(&c, "stuck-a");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    let port = silent_registry();
    let mut spec = quiet_spec("stuck", &["true"]);
    spec.container_definitions[0].image = format!("127.0.0.1:{port}/berth-stuck:latest");
    spec.timeouts = Some(Timeouts {
        start_timeout: Some(3),
        max_runtime: None,
    });
    register(api.clone(), spec).await.expect("register");

    let t0 = Instant::now();
    let id = TasksClient::new(api.clone())
        .run(RunTaskRequest {
            task_definition: "stuck".into(),
            count: 1,
            client_token: "stuck-1".into(),
            ..Default::default()
        })
        .await
        .expect("run")
        .into_inner()
        .tasks
        .remove(0)
        .task_id;
    let t = wait_for(api.clone(), &id, "STOPPED", Duration::from_secs(20), |t| {
        t.last_status == "STOPPED"
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(t.stop_code, "TaskFailedToStart", "{t:?}");
    // The agent's own reason: the control plane's backstop would add "(stopped by the
    // control plane)" and come 30 s later.
    assert!(
        t.stopped_reason.starts_with("StartTimeout") && !t.stopped_reason.contains("control plane"),
        "{t:?}\n{}",
        agent.log()
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "STOPPED {took:?} after RunTask; the start timeout is 3 s"
    );
    assert_eq!(
        t.timeouts.as_ref().and_then(|x| x.start_timeout),
        Some(3),
        "{t:?}"
    );
}
