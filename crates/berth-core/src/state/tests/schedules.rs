//! Schedules in the state machine: a scheduled time is taken by one fire only, overlap and
//! retries are re-checked at apply, and every time ends as a run or a SKIPPED record.

use super::*;
use crate::schedule::*;

fn schedule_spec(name: &str, overlap: Overlap, retries: u32) -> ScheduleSpec {
    ScheduleSpec {
        overlap,
        retries,
        ..ScheduleSpec::new(name, "web", "rate(1 minute)")
    }
}

fn cluster(overlap: Overlap, retries: u32) -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 8192, 16384)).unwrap();
    h.one(Command::CreateSchedule(schedule_spec(
        "job", overlap, retries,
    )))
    .unwrap();
    h
}

/// The launch of a run at `time` placed on a1 as task `task`.
fn launch(name: &str, time: Millis, attempt: u32, task: &str) -> RunTasks {
    let Command::RunTasks(mut r) = run(None, 0, &[(task, "a1")]) else {
        unreachable!("run builds RunTasks")
    };
    r.run = Some(TaskRun {
        schedule: name.into(),
        run_id: Run::run_id(name, time),
        attempt,
        scheduled_time: time,
    });
    r
}

fn fire(h: &Harness, time: Millis, task: &str) -> Command {
    let s = h.state.schedule("job").unwrap();
    Command::FireSchedule(ScheduleFire {
        name: "job".into(),
        generation: s.generation,
        expected_last: s.last_fired,
        new_last: time,
        skipped: vec![],
        run: Some((time, launch("job", time, 1, task))),
        completed: false,
    })
}

fn runs(h: &Harness) -> Vec<Run> {
    h.state.schedule("job").unwrap().runs.clone()
}

#[test]
fn a_scheduled_time_is_taken_by_one_fire_only() {
    let mut h = cluster(Overlap::Allow, 0);
    // Two leaders computed the same time from the same committed state.
    let first = fire(&h, 60_000, "t1");
    let second = fire(&h, 60_000, "t2");
    h.one(first).unwrap();
    let refused = h.one(second).unwrap_err();
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
    assert!(h.state.task("t2").is_none());
    let rs = runs(&h);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].id, "job@60000");
    assert_eq!(rs[0].attempts[0].task_id.as_deref(), Some("t1"));
    let t = h.state.task("t1").unwrap();
    assert_eq!(t.run.as_ref().unwrap().run_id, "job@60000");
    assert_eq!(h.state.schedule("job").unwrap().last_fired, Some(60_000));
}

#[test]
fn a_fire_against_an_older_definition_is_refused() {
    let mut h = cluster(Overlap::Allow, 0);
    let stale = fire(&h, 60_000, "t1");
    h.one(Command::SetSchedulePaused {
        name: "job".into(),
        paused: true,
    })
    .unwrap();
    assert!(h.one(stale).is_err());
    assert!(h.state.task("t1").is_none());
}

#[test]
fn forbid_skips_a_time_while_a_run_is_alive_even_when_the_leader_missed_it() {
    let mut h = cluster(Overlap::Forbid, 0);
    h.one(fire(&h, 60_000, "t1")).unwrap();
    h.one(fire(&h, 120_000, "t2")).unwrap();
    assert!(h.state.task("t2").is_none());
    let rs = runs(&h);
    assert_eq!(rs[1].status, RunStatus::Skipped);
    assert!(rs[1].reason.contains("job@60000"), "{}", rs[1].reason);
    // Later skips for the same reason merge into that record.
    h.one(fire(&h, 180_000, "t3")).unwrap();
    let rs = runs(&h);
    assert_eq!(rs.len(), 2);
    assert_eq!((rs[1].count, rs[1].last_time), (2, Some(180_000)));
}

#[test]
fn replace_stops_the_live_run_then_starts() {
    let mut h = cluster(Overlap::Replace, 3);
    h.one(fire(&h, 60_000, "t1")).unwrap();
    h.one(fire(&h, 120_000, "t2")).unwrap();
    assert_eq!(
        h.state.task("t1").unwrap().desired_status,
        DesiredStatus::Stopped
    );
    assert!(h.state.task("t2").is_some());
    let rs = runs(&h);
    assert_eq!(rs[0].status, RunStatus::Failed);
    assert!(rs[0].reason.contains("replaced"));
    assert_eq!(rs[0].retry_at, None, "a replaced run is not retried");
    assert_eq!(rs[1].status, RunStatus::Running);
}

#[test]
fn a_run_succeeds_when_its_essential_container_exits_zero() {
    let mut h = cluster(Overlap::Forbid, 2);
    h.one(fire(&h, 60_000, "t1")).unwrap();
    ran_and_exited(&mut h, "t1", 0);
    let rs = runs(&h);
    assert_eq!(rs[0].status, RunStatus::Succeeded);
    assert_eq!(rs[0].retry_at, None);
}

#[test]
fn a_failed_attempt_is_retried_once_per_attempt_number() {
    let mut h = cluster(Overlap::Forbid, 1);
    h.one(fire(&h, 60_000, "t1")).unwrap();
    ran_and_exited(&mut h, "t1", 3);
    let r = runs(&h).remove(0);
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
    let retry = |task: &str| {
        Command::RetryScheduleRun(ScheduleRetry {
            name: "job".into(),
            run_id: "job@60000".into(),
            attempt: 2,
            launch: launch("job", 60_000, 2, task),
        })
    };
    h.one(retry("t2")).unwrap();
    // A second leader's retry of the same attempt is refused.
    assert!(h.one(retry("t3")).is_err());
    assert!(h.state.task("t3").is_none());
    assert_eq!(h.state.task("t2").unwrap().run.as_ref().unwrap().attempt, 2);
    ran_and_exited(&mut h, "t2", 1);
    let r = runs(&h).remove(0);
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.reason.contains("no retries left"), "{}", r.reason);
}

#[test]
fn a_launch_that_places_nothing_is_a_failed_attempt_not_a_silent_one() {
    let mut h = cluster(Overlap::Forbid, 0);
    let Command::FireSchedule(mut f) = fire(&h, 60_000, "t1") else {
        unreachable!()
    };
    if let Some((_, r)) = f.run.as_mut() {
        r.placements.clear();
        r.failures = vec![Failure {
            reason: "RESOURCE:MEMORY".into(),
            detail: "no agent has 2048 MiB free".into(),
        }];
    }
    h.one(Command::FireSchedule(f)).unwrap();
    let r = runs(&h).remove(0);
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.reason.contains("RESOURCE:MEMORY"), "{}", r.reason);
}

#[test]
fn skipped_times_are_recorded_with_their_reason() {
    let mut h = cluster(Overlap::Forbid, 0);
    let s = h.state.schedule("job").unwrap();
    h.one(Command::FireSchedule(ScheduleFire {
        name: "job".into(),
        generation: s.generation,
        expected_last: None,
        new_last: 600_000,
        skipped: vec![SkippedTimes {
            first: 60_000,
            last: 540_000,
            count: 9,
            reason: "missed".into(),
        }],
        run: Some((600_000, launch("job", 600_000, 1, "t1"))),
        completed: false,
    }))
    .unwrap();
    let rs = runs(&h);
    assert_eq!(rs[0].status, RunStatus::Skipped);
    assert_eq!((rs[0].scheduled_time, rs[0].count), (60_000, 9));
    assert_eq!(rs[1].scheduled_time, 600_000);
    assert_eq!(rs[1].status, RunStatus::Running);
}

#[test]
fn a_schedule_naming_a_missing_definition_is_refused() {
    let mut h = cluster(Overlap::Forbid, 0);
    let mut s = schedule_spec("other", Overlap::Forbid, 0);
    s.family = "nope".into();
    assert!(matches!(
        h.one(Command::CreateSchedule(s)),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        h.one(Command::CreateSchedule(schedule_spec(
            "job",
            Overlap::Allow,
            0
        ))),
        Err(Error::AlreadyExists(_))
    ));
}
