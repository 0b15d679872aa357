//! Schedules end to end: three `berth control` processes, a `berth agent` on the real
//! Docker engine, and the Schedules API. Every scheduled time ends exactly once as a run or
//! a SKIPPED record, through a leader kill and a whole-cluster stop.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_proto::v1::schedules_client::SchedulesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;
use tonic::Code;

const PERIOD: u64 = 2_000;

fn create_req(name: &str, family: &str, expression: &str) -> CreateScheduleRequest {
    CreateScheduleRequest {
        name: name.into(),
        task_definition: family.into(),
        expression: expression.into(),
        ..Default::default()
    }
}

async fn create(api: Api, req: CreateScheduleRequest) -> Schedule {
    SchedulesClient::new(api)
        .create(req)
        .await
        .expect("create schedule")
        .into_inner()
        .schedule
        .expect("schedule")
}

/// The schedule's records, oldest first.
async fn runs(api: Api, name: &str) -> Vec<ScheduleRun> {
    let mut v = SchedulesClient::new(api)
        .runs(ScheduleRunsRequest { name: name.into() })
        .await
        .expect("runs")
        .into_inner()
        .runs;
    v.reverse();
    v
}

async fn wait_runs(
    api: Api,
    name: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&[ScheduleRun]) -> bool,
) -> Vec<ScheduleRun> {
    let deadline = Instant::now() + within;
    loop {
        let v = runs(api.clone(), name).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name}: never {what}: {v:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each scheduled time a record stands for, with the record's status.
fn expand(v: &[ScheduleRun], period: u64) -> BTreeMap<u64, &str> {
    let mut out = BTreeMap::new();
    for r in v {
        for k in 0..r.count {
            out.insert(r.scheduled_time_ms + k * period, r.status.as_str());
        }
    }
    out
}

/// Every scheduled time from the first record's to the last's, each covered by exactly one
/// record (a run, or a SKIPPED range), at the schedule's period.
fn assert_each_time_once(name: &str, v: &[ScheduleRun], period: u64) {
    let mut covered: BTreeMap<u64, &str> = BTreeMap::new();
    for r in v {
        let mut t = r.scheduled_time_ms;
        for _ in 0..r.count {
            let prev = covered.insert(t, r.status.as_str());
            assert!(prev.is_none(), "{name}: time {t} recorded twice: {v:#?}");
            t += period;
        }
        assert_eq!(
            t - period,
            r.last_time_ms,
            "{name}: range ends where it says"
        );
    }
    let times: Vec<u64> = covered.keys().copied().collect();
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], period, "{name}: a time is missing: {v:#?}");
    }
}

async fn scheduled_tasks(api: Api, name: &str) -> Vec<Task> {
    let mut out = Vec::new();
    for desired_status in ["RUNNING", "STOPPED"] {
        let r = TasksClient::new(api.clone())
            .list(ListTasksRequest {
                started_by: format!("schedule:{name}"),
                desired_status: desired_status.into(),
                max_results: 1000,
                ..Default::default()
            })
            .await
            .expect("list tasks")
            .into_inner();
        out.extend(r.tasks);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_runs_each_time_once_through_a_leader_kill_with_retries_and_overlap() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let agent = AgentProc::start(&c, "sched-a");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("tick", &["sh", "-c", "true"]))
        .await
        .expect("register tick");
    register(
        api.clone(),
        quiet_spec(
            "env",
            &[
                "sh",
                "-c",
                "echo run=$BERTH_RUN_ID attempt=$BERTH_ATTEMPT at=$BERTH_SCHEDULED_TIME; sleep 60",
            ],
        ),
    )
    .await
    .expect("register env");
    register(api.clone(), quiet_spec("fail", &["sh", "-c", "exit 3"]))
        .await
        .expect("register fail");
    register(api.clone(), quiet_spec("long", &["sleep", "5"]))
        .await
        .expect("register long");

    let mut tick = create_req("tick", "tick", "rate(2 seconds)");
    tick.overlap = "allow".into();
    let s = create(api.clone(), tick).await;
    assert_eq!((s.state.as_str(), s.overlap.as_str()), ("ENABLED", "allow"));
    assert!(s.next_fire_ms > 0, "{s:?}");
    let mut fail = create_req("fail", "fail", "rate(1 hours)");
    fail.start_at_ms = now_ms() + 1_000;
    fail.retries = 1;
    create(api.clone(), fail).await;
    create(api.clone(), create_req("long", "long", "rate(2 seconds)")).await;
    let mut env = create_req("env", "env", "rate(1 hours)");
    env.start_at_ms = now_ms() + 1_000;
    create(api.clone(), env).await;

    // The tick's runs succeed.
    let v = wait_runs(
        api.clone(),
        "tick",
        "3 runs succeeded",
        Duration::from_secs(60),
        |v| v.iter().filter(|r| r.status == "SUCCEEDED").count() >= 3,
    )
    .await;
    let done = v.iter().find(|r| r.status == "SUCCEEDED").unwrap();
    let t = task(api.clone(), &done.attempts[0].task_id).await;
    assert_eq!((t.run_id.as_str(), t.attempt), (done.run_id.as_str(), 1));
    assert_eq!(t.started_by, "schedule:tick");

    // Each container is told its run, read while it is still running.
    let v = wait_runs(
        api.clone(),
        "env",
        "started",
        Duration::from_secs(30),
        |v| {
            v.first()
                .and_then(|r| r.attempts.first())
                .is_some_and(|a| !a.task_id.is_empty())
        },
    )
    .await;
    let env_task = v[0].attempts[0].task_id.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = logs(api.clone(), &env_task).await.unwrap_or_default();
        if out.contains("run=") || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let scheduled = v[0].scheduled_time_ms;
    assert!(
        out.contains(&format!("run=env@{scheduled} attempt=1 at=")),
        "the container's environment names its run: {out:?}"
    );

    // The leader is SIGKILLed mid-stream; the next one carries on from the committed state.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.kill(leader);
    let api = c.api(c.follower_of(leader));
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.spawn(leader);
    let before = v.last().map(|r| r.scheduled_time_ms).unwrap_or_default();
    let v = wait_runs(
        api.clone(),
        "tick",
        "running after failover",
        Duration::from_secs(60),
        |v| {
            v.iter()
                .filter(|r| r.scheduled_time_ms > before + 8_000 && r.status == "SUCCEEDED")
                .count()
                >= 2
        },
    )
    .await;
    assert_each_time_once("tick", &v, PERIOD);
    // One task per run and attempt, however many leaders proposed.
    let tasks = scheduled_tasks(api.clone(), "tick").await;
    let mut per_run: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for t in &tasks {
        *per_run.entry((t.run_id.clone(), t.attempt)).or_default() += 1;
    }
    assert!(
        per_run.values().all(|&n| n == 1),
        "a run attempt started twice: {per_run:?}"
    );
    let started: usize = v.iter().filter(|r| r.status != "SKIPPED").count();
    assert_eq!(
        tasks.len(),
        started,
        "every run that was not skipped has its task"
    );

    // A failing run is retried once after its back-off, then FAILED with why.
    let v = wait_runs(
        api.clone(),
        "fail",
        "failed after its retry",
        Duration::from_secs(60),
        |v| v.first().is_some_and(|r| r.status == "FAILED"),
    )
    .await;
    assert_eq!(v[0].attempts.len(), 2, "{v:#?}");
    assert!(v[0].attempts[0].failure.contains("exited 3"), "{v:#?}");
    assert!(v[0].reason.contains("no retries left"), "{v:#?}");
    let tasks = scheduled_tasks(api.clone(), "fail").await;
    let mut attempts: Vec<u32> = tasks.iter().map(|t| t.attempt).collect();
    attempts.sort();
    assert_eq!(attempts, vec![1, 2]);

    // forbid: a 5 s run under a 2 s rate leaves times SKIPPED for overlap.
    let v = wait_runs(
        api.clone(),
        "long",
        "an overlap skipped",
        Duration::from_secs(30),
        |v| {
            v.iter()
                .any(|r| r.status == "SKIPPED" && r.reason.contains("overlap"))
        },
    )
    .await;
    assert_each_time_once("long", &v, PERIOD);
    let live = v.iter().filter(|r| r.status == "RUNNING").count();
    assert!(live <= 1, "forbid keeps one run alive at most: {v:#?}");

    // Pausing records times as SKIPPED; a paused schedule starts nothing.
    let paused = SchedulesClient::new(api.clone())
        .pause(ScheduleNameRequest {
            name: "tick".into(),
        })
        .await
        .expect("pause")
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(paused.state, "PAUSED");
    let v = wait_runs(
        api.clone(),
        "tick",
        "skipped while paused",
        Duration::from_secs(20),
        |v| {
            v.last().is_some_and(|r| {
                r.status == "SKIPPED" && r.reason.contains("paused") && r.count >= 2
            })
        },
    )
    .await;
    assert_each_time_once("tick", &v, PERIOD);

    // Bad input is refused by field, and nothing is made.
    let mut bad = create_req("bad", "tick", "cron(0 25 * * ? *)");
    let e = SchedulesClient::new(api.clone())
        .create(bad.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("character"), "{}", e.message());
    bad.expression = "rate(1 minute)".into();
    bad.timezone = "Mars/Olympus".into();
    let e = SchedulesClient::new(api.clone())
        .create(bad)
        .await
        .unwrap_err();
    assert!(e.message().starts_with("timezone"), "{}", e.message());
    let e = SchedulesClient::new(api.clone())
        .create(create_req("tick", "tick", "rate(1 minute)"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = SchedulesClient::new(api.clone())
        .runs(ScheduleRunsRequest { name: "bad".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_stop_runs_exactly_the_catch_up_policys_runs() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    // Runs need no agent: with none, each run's attempt fails to place and is recorded.
    register(api.clone(), quiet_spec("job", &["true"]))
        .await
        .expect("register");
    for (name, policy) in [("latest", "latest"), ("all", "all"), ("none", "none")] {
        let mut r = create_req(name, "job", "rate(2 seconds)");
        r.catch_up = policy.into();
        r.overlap = "allow".into();
        create(api.clone(), r).await;
    }
    for name in ["latest", "all", "none"] {
        wait_runs(api.clone(), name, "fired", Duration::from_secs(30), |v| {
            v.len() >= 2
        })
        .await;
    }
    c.stop(1);
    c.stop(2);
    // With two of three gone no leader can fire.
    let stopped_at = now_ms();
    c.stop(3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    for id in 1..=3 {
        c.spawn(id);
    }
    let restarted_at = now_ms();
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    for name in ["latest", "all", "none"] {
        let v = wait_runs(
            api.clone(),
            name,
            "caught up",
            Duration::from_secs(30),
            |v| {
                v.iter()
                    .any(|r| r.scheduled_time_ms > restarted_at + PERIOD)
            },
        )
        .await;
        assert_each_time_once(name, &v, PERIOD);
        // Times that fell due while every node was down.
        let missed: Vec<&str> = expand(&v, PERIOD)
            .into_iter()
            .filter(|(t, _)| *t > stopped_at + PERIOD && *t + PERIOD < restarted_at)
            .map(|(_, status)| status)
            .collect();
        assert!(missed.len() >= 3, "{name}: {v:#?}");
        let ran = missed.iter().filter(|s| **s != "SKIPPED").count();
        let skipped = missed.len() - ran;
        match name {
            // Only the newest missed time runs; the rest are SKIPPED saying why.
            "latest" => {
                assert!(ran <= 1, "{name}: {v:#?}");
                assert!(skipped >= 2, "{name}: {v:#?}");
            }
            // Every missed time inside the window runs.
            "all" => {
                assert!(ran >= 3, "{name}: {v:#?}");
                assert_eq!(skipped, 0, "{name}: {v:#?}");
            }
            // None of them runs.
            _ => {
                assert_eq!(ran, 0, "{name}: {v:#?}");
                assert!(skipped >= 3, "{name}: {v:#?}");
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
