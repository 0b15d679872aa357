//! A plain RunTask with a retry policy, end to end: three `berth control` processes and a
//! `berth agent` on the real Docker engine. A failed task is started again after its
//! back-off, once, through a SIGKILL of the leader; the CLI's `--wait` follows the retries
//! to the last attempt's exit code.

mod common;

use std::time::{Duration, Instant};

use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;
use tonic::Code;

fn run_req(family: &str, retries: u32, token: &str) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: family.into(),
        count: 1,
        client_token: token.into(),
        retries,
        ..Default::default()
    }
}

/// The run `task` belongs to, once `ok` holds for it.
async fn wait_run(
    api: Api,
    task: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&ScheduleRun) -> bool,
) -> ScheduleRun {
    let deadline = Instant::now() + within;
    loop {
        let t = TasksClient::new(api.clone())
            .describe(DescribeTasksRequest {
                task_ids: vec![task.into()],
                stale: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().tasks.pop());
        if let Some(r) = t.as_ref().and_then(|t| t.retried_run.clone()) {
            if ok(&r) {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the run of {task} never became {what}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_task_is_retried_once_per_attempt_through_a_leader_kill() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let agent = AgentProc::start(&c, "retries-a");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    // Fails its first attempt, succeeds from the second.
    register(
        api.clone(),
        quiet_spec(
            "flaky",
            &[
                "sh",
                "-c",
                "echo run=$BERTH_RUN_ID attempt=$BERTH_ATTEMPT at=${BERTH_SCHEDULED_TIME:-none}; \
                 test \"$BERTH_ATTEMPT\" -ge 2 || exit 3; sleep 2",
            ],
        ),
    )
    .await
    .expect("register");

    let first = TasksClient::new(api.clone())
        .run(run_req("flaky", 2, "flaky-1"))
        .await
        .expect("run")
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(
        (first.run_id.as_str(), first.attempt),
        (first.task_id.as_str(), 1)
    );
    let id = first.task_id;
    let waiting = wait_run(
        api.clone(),
        &id,
        "waiting for a retry",
        Duration::from_secs(30),
        |r| r.status == "RUNNING" && r.retry_at_ms > 0,
    )
    .await;
    assert!(
        waiting.attempts[0].failure.contains("exited 3"),
        "{waiting:?}"
    );

    // The leader dies during the back-off; its successor starts the retry, once.
    c.kill(leader);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let retried = wait_run(api.clone(), &id, "retried", Duration::from_secs(40), |r| {
        r.attempts.len() == 2 || r.status != "RUNNING"
    })
    .await;
    let second = retried.attempts.get(1).map(|a| a.task_id.clone());
    let second = second.filter(|s| !s.is_empty() && *s != id);
    let second = second.unwrap_or_else(|| panic!("no second attempt: {retried:?}"));
    // Its containers are told the run and attempt (while it runs: a stopped task's
    // containers are removed).
    let want = format!("run={id} attempt=2 at=none");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = logs(api.clone(), &second).await.unwrap_or_default();
        if out.contains(&want) {
            break;
        }
        assert!(Instant::now() < deadline, "attempt 2's output: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = wait_run(
        api.clone(),
        &id,
        "SUCCEEDED",
        Duration::from_secs(30),
        |r| r.status != "RUNNING",
    )
    .await;
    assert_eq!(done.status, "SUCCEEDED", "{done:?}\n{}", agent.log());
    assert_eq!(done.attempts.len(), 2, "{done:?}");
    // Exactly the two attempts exist: no retry started twice.
    let all = TasksClient::new(api.clone())
        .list(ListTasksRequest {
            family: "flaky".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(all.len(), 2, "{all:?}");

    // Bad policies are refused by name, and start nothing.
    for (req, field) in [
        (run_req("flaky", 11, "bad-1"), "retries"),
        (
            RunTaskRequest {
                retry_max_age_ms: Some(1_000),
                ..run_req("flaky", 1, "bad-2")
            },
            "retryMaxAgeMs",
        ),
    ] {
        let e = TasksClient::new(api.clone())
            .run(req)
            .await
            .expect_err("a bad retry policy");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_run_wait_follows_the_retries_to_the_last_exit_code() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    let agent = AgentProc::start(&c, "retries-b");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    register(
        api.clone(),
        quiet_spec("broken", &["sh", "-c", "exit $((4 + BERTH_ATTEMPT))"]),
    )
    .await
    .expect("register");
    let o = c.berth(&["task", "run", "broken", "--retries", "1", "--wait"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // The second attempt exits 6: the exit status is the last attempt's.
    assert_eq!(o.status.code(), Some(6), "{err}\n{}", agent.log());
    assert!(err.contains("attempt 2"), "{err}");
}
