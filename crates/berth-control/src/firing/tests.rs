//! The firing plan: which due times run and which are skipped, and why, from the committed
//! state alone.

use super::*;
use berth_core::schedule::{Run, ScheduleSpec};

const MIN: u64 = 60_000;

fn schedule(expression: &str, catch_up: CatchUp) -> Schedule {
    Schedule {
        spec: ScheduleSpec {
            catch_up,
            catch_up_window_ms: 60 * MIN,
            retry_max_age_ms: 60 * MIN,
            ..ScheduleSpec::new("default/job", "default/web", expression)
        },
        state: ScheduleState::Enabled,
        created_at: 0,
        generation: 3,
        last_fired: None,
        runs: vec![],
        version: 1,
    }
}

fn expr(s: &Schedule) -> berth_cron::Schedule {
    berth_cron::Schedule::parse(&s.spec.expression, &s.spec.timezone).unwrap()
}

fn fire_of(p: Option<Proposal>) -> (ScheduleFire, Option<u64>) {
    match p {
        Some(Proposal::Fire { fire, run }) => (*fire, run.map(|(t, _)| t)),
        other => panic!("expected a fire, got {other:?}"),
    }
}

#[test]
fn nothing_is_proposed_before_the_first_time_and_the_wake_is_that_time() {
    let s = schedule("rate(1 minute)", CatchUp::Latest);
    let (p, wake) = plan(&s, &expr(&s), MIN - 1);
    assert_eq!(p, None);
    assert_eq!(wake, Some(MIN));
}

#[test]
fn an_on_time_fire_runs_its_time_against_the_committed_last_fired() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.last_fired = Some(MIN);
    let (fire, run) = fire_of(plan(&s, &expr(&s), 2 * MIN + 5).0);
    assert_eq!(run, Some(2 * MIN));
    assert_eq!(fire.expected_last, Some(MIN));
    assert_eq!(fire.new_last, 2 * MIN);
    assert_eq!(fire.generation, 3);
    assert!(fire.skipped.is_empty());
}

#[test]
fn catch_up_latest_runs_the_newest_and_records_the_rest_with_why() {
    let s = schedule("rate(1 minute)", CatchUp::Latest);
    // Back after 100 minutes without a leader: 40 times are past the hour's window.
    let now = 100 * MIN + 10;
    let (fire, run) = fire_of(plan(&s, &expr(&s), now).0);
    assert_eq!(run, Some(100 * MIN));
    assert_eq!(fire.new_last, 100 * MIN);
    assert_eq!(fire.skipped.len(), 2, "{:?}", fire.skipped);
    let (old, fresh) = (&fire.skipped[0], &fire.skipped[1]);
    assert_eq!((old.first, old.last, old.count), (MIN, 40 * MIN, 40));
    assert!(old.reason.contains("catch-up window"), "{}", old.reason);
    assert_eq!(
        (fresh.first, fresh.last, fresh.count),
        (41 * MIN, 99 * MIN, 59)
    );
    let total: u64 = fire.skipped.iter().map(|k| k.count).sum::<u64>() + 1;
    assert_eq!(total, 100, "every missed time is accounted for");
}

#[test]
fn catch_up_all_runs_the_oldest_in_window_and_leaves_the_rest_for_the_next_fires() {
    let s = schedule("rate(1 minute)", CatchUp::All);
    let (fire, run) = fire_of(plan(&s, &expr(&s), 100 * MIN + 10).0);
    assert_eq!(run, Some(41 * MIN));
    assert_eq!(fire.new_last, 41 * MIN);
    assert_eq!(fire.skipped.len(), 1);
    assert_eq!(fire.skipped[0].count, 40);
}

#[test]
fn catch_up_none_runs_only_a_time_fired_on_time() {
    let s = schedule("rate(10 minutes)", CatchUp::None);
    let (fire, run) = fire_of(plan(&s, &expr(&s), 30 * MIN + 5).0);
    assert_eq!(run, Some(30 * MIN), "on time");
    assert_eq!(fire.skipped[0].count, 2);
    let (fire, run) = fire_of(plan(&s, &expr(&s), 35 * MIN).0);
    assert_eq!(run, None, "five minutes late is not on time");
    assert_eq!(fire.new_last, 30 * MIN);
    assert_eq!(fire.skipped.iter().map(|k| k.count).sum::<u64>(), 3);
}

#[test]
fn a_paused_schedule_records_its_times_as_skipped() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.state = ScheduleState::Paused;
    let (fire, run) = fire_of(plan(&s, &expr(&s), 3 * MIN).0);
    assert_eq!(run, None);
    assert_eq!(fire.skipped[0].count, 3);
    assert!(fire.skipped[0].reason.contains("paused"));
}

#[test]
fn forbid_with_a_live_run_skips_for_overlap() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.last_fired = Some(MIN);
    s.runs.push(Run {
        id: Run::run_id("default/job", MIN),
        scheduled_time: MIN,
        last_time: None,
        count: 1,
        status: RunStatus::Running,
        reason: String::new(),
        recorded_at: MIN,
        attempts: vec![],
        retry_at: None,
        finished_at: None,
    });
    let (fire, run) = fire_of(plan(&s, &expr(&s), 2 * MIN).0);
    assert_eq!(run, None);
    assert!(fire.skipped[0].reason.contains("default/job@60000"));
    s.spec.overlap = Overlap::Allow;
    assert_eq!(fire_of(plan(&s, &expr(&s), 2 * MIN).0).1, Some(2 * MIN));
}

#[test]
fn the_end_time_completes_the_schedule() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.spec.end_at = Some(2 * MIN + 30_000);
    let (fire, run) = fire_of(plan(&s, &expr(&s), 10 * MIN).0);
    assert_eq!(run, Some(2 * MIN));
    assert!(fire.completed);
    s.last_fired = Some(2 * MIN);
    s.state = ScheduleState::Completed;
    assert_eq!(plan(&s, &expr(&s), 20 * MIN), (None, None));
}

#[test]
fn jitter_delays_a_time_the_same_way_on_every_leader() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.spec.jitter_ms = 30_000;
    let delay = s.jitter_for(MIN);
    let (p, wake) = plan(&s, &expr(&s), MIN + delay - 1);
    assert_eq!(p, None);
    assert_eq!(wake, Some(MIN + delay));
    assert_eq!(fire_of(plan(&s, &expr(&s), MIN + delay).0).1, Some(MIN));
}

#[test]
fn a_failed_run_is_retried_once_its_back_off_is_over() {
    let mut s = schedule("rate(1 minute)", CatchUp::Latest);
    s.runs.push(Run {
        id: Run::run_id("default/job", MIN),
        scheduled_time: MIN,
        last_time: None,
        count: 1,
        status: RunStatus::Running,
        reason: String::new(),
        recorded_at: MIN,
        attempts: vec![berth_core::schedule::Attempt {
            number: 1,
            started_at: MIN,
            task_id: None,
            failure: Some("not placed".into()),
        }],
        retry_at: Some(MIN + 5_000),
        finished_at: None,
    });
    let (due, next) = retries(&s, MIN + 4_999);
    assert!(due.is_empty());
    assert_eq!(next, Some(MIN + 5_000));
    let (due, _) = retries(&s, MIN + 5_000);
    match &due[..] {
        [Proposal::Retry {
            run_id, attempt, ..
        }] => {
            assert_eq!(run_id, "default/job@60000");
            assert_eq!(*attempt, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plain_run_task_is_retried_with_its_own_launch_and_no_schedule() {
    use berth_core::schedule::{RetriedRun, RetryLaunch, RetryPolicy};
    let run = |id: &str, retry_at: Option<u64>, status: RunStatus| RetriedRun {
        run: Run {
            id: id.into(),
            scheduled_time: MIN,
            last_time: None,
            count: 1,
            status,
            reason: String::new(),
            recorded_at: MIN,
            attempts: vec![berth_core::schedule::Attempt {
                number: 1,
                started_at: MIN,
                task_id: Some(id.into()),
                failure: Some("essential container app exited 3".into()),
            }],
            retry_at,
            finished_at: None,
        },
        retry: RetryLaunch {
            policy: RetryPolicy {
                retries: 2,
                max_age_ms: 60 * MIN,
            },
            launch: RunTaskRequest {
                task_definition: "default/web:4".into(),
                count: 1,
                ..Default::default()
            },
        },
    };
    let runs: imbl::OrdMap<String, RetriedRun> = [
        (
            "t1".to_string(),
            run("t1", Some(MIN + 5_000), RunStatus::Running),
        ),
        (
            "t2".to_string(),
            run("t2", Some(MIN + 9_000), RunStatus::Running),
        ),
        ("t3".to_string(), run("t3", None, RunStatus::Failed)),
    ]
    .into_iter()
    .collect();
    let (due, next) = plain_retries(&runs, MIN + 5_000);
    assert_eq!(next, Some(MIN + 9_000));
    match &due[..] {
        [Proposal::Retry {
            name,
            run_id,
            attempt,
            request,
            ..
        }] => {
            assert!(name.is_empty(), "a plain run has no schedule");
            assert_eq!((run_id.as_str(), *attempt), ("t1", 2));
            assert_eq!(request.task_definition, "default/web:4");
        }
        other => panic!("{other:?}"),
    }
}
