//! Plain RunTasks under a retry policy: each task is a run, a failed attempt waits for its
//! back-off, a retry applies once per attempt number, and ended runs are collected.

use super::*;
use crate::schedule::*;

fn policy(retries: u32) -> RetryPolicy {
    RetryPolicy {
        retries,
        max_age_ms: crate::limits::DEFAULT_RETRY_MAX_AGE_MS,
    }
}

fn cluster() -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 8192, 16384)).unwrap();
    h
}

/// A RunTask of `tasks` on a1 with `retries`.
fn run_retried(tasks: &[&str], retries: u32) -> Command {
    let placements: Vec<(&str, &str)> = tasks.iter().map(|t| (*t, "a1")).collect();
    let Command::RunTasks(mut r) = run(None, 0, &placements) else {
        unreachable!("run builds RunTasks")
    };
    r.retry = Some(Box::new(RetryLaunch {
        policy: policy(retries),
        launch: RunTaskRequest {
            task_definition: "web:1".into(),
            count: 1,
            ..Default::default()
        },
    }));
    Command::RunTasks(r)
}

/// The leader's retry of `run_id`'s attempt `attempt`, placed as task `task`.
fn retry(run_id: &str, attempt: u32, task: &str) -> Command {
    let Command::RunTasks(mut r) = run(None, 0, &[(task, "a1")]) else {
        unreachable!("run builds RunTasks")
    };
    r.run = Some(TaskRun {
        schedule: String::new(),
        run_id: run_id.into(),
        attempt,
        scheduled_time: 1_000,
    });
    Command::RetryScheduleRun(ScheduleRetry {
        name: String::new(),
        run_id: run_id.into(),
        attempt,
        launch: r,
    })
}

fn record(h: &Harness, id: &str) -> Run {
    h.state
        .retried_run(id)
        .expect("the run's record")
        .run
        .clone()
}

#[test]
fn each_task_of_a_retried_run_task_is_its_own_run() {
    let mut h = cluster();
    let (tasks, _) = tasks_of(h.one(run_retried(&["t1", "t2"], 2)));
    for t in &tasks {
        let tr = t.run.as_ref().expect("the task carries its run");
        assert_eq!((tr.run_id.as_str(), tr.attempt), (t.id.as_str(), 1));
        assert!(tr.schedule.is_empty());
        let r = record(&h, &t.id);
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(r.attempts[0].task_id.as_deref(), Some(t.id.as_str()));
    }
    // Without a policy nothing is followed.
    tasks_of(h.one(run(None, 0, &[("t3", "a1")])));
    assert!(h.state.task("t3").unwrap().run.is_none());
    assert!(h.state.retried_run("t3").is_none());
}

#[test]
fn a_failed_attempt_is_retried_after_its_back_off_once_per_attempt_number() {
    let mut h = cluster();
    h.one(run_retried(&["t1"], 1)).unwrap();
    ran_and_exited(&mut h, "t1", 3);
    let r = record(&h, "t1");
    assert_eq!(r.status, RunStatus::Running);
    assert_eq!(
        r.retry_at,
        Some(h.now + crate::limits::RETRY_BACKOFF_BASE_MS)
    );
    assert!(r.attempts[0]
        .failure
        .as_deref()
        .unwrap()
        .contains("exited 3"));
    h.one(retry("t1", 2, "t2")).unwrap();
    // A second leader's retry of the same attempt is refused and starts nothing.
    assert!(h.one(retry("t1", 2, "t3")).is_err());
    assert!(h.state.task("t3").is_none());
    let t2 = h.state.task("t2").unwrap();
    assert_eq!(t2.run.as_ref().unwrap().attempt, 2);
    assert_eq!(record(&h, "t1").retry_at, None);
    ran_and_exited(&mut h, "t2", 0);
    let r = record(&h, "t1");
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.attempts.len(), 2);
}

#[test]
fn retries_run_out_and_the_run_fails_with_the_last_reason() {
    let mut h = cluster();
    h.one(run_retried(&["t1"], 1)).unwrap();
    ran_and_exited(&mut h, "t1", 3);
    h.one(retry("t1", 2, "t2")).unwrap();
    ran_and_exited(&mut h, "t2", 4);
    let r = record(&h, "t1");
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.reason.contains("exited 4"), "{}", r.reason);
    assert!(r.reason.contains("no retries left"), "{}", r.reason);
}

#[test]
fn a_users_stop_ends_the_run_without_a_retry() {
    let mut h = cluster();
    h.one(run_retried(&["t1"], 3)).unwrap();
    h.one(Command::StopTask {
        task_id: "t1".into(),
        reason: "enough".into(),
        code: StopCode::UserInitiated,
        namespace: None,
    })
    .unwrap();
    ran_and_exited(&mut h, "t1", 143);
    let r = record(&h, "t1");
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.retry_at, None);
}

#[test]
fn an_ended_run_is_collected_after_the_stopped_task_retention() {
    let mut h = cluster();
    h.one(run_retried(&["t1"], 1)).unwrap();
    ran_and_exited(&mut h, "t1", 0);
    assert!(h.state.retried_run("t1").is_some());
    h.now += crate::limits::STOPPED_TASK_RETENTION_MS + 1;
    h.one(agent("a2", 1024, 1024)).unwrap();
    assert!(h.state.retried_run("t1").is_none());
}
