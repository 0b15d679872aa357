//! The usage ledger: a minute at least, periods cut exactly, records outlive the task, and
//! folding into days changes no total.

use super::*;
use crate::usage::{UsageBy, DAY_MS};

/// A task of web (1 vCPU, 2 GiB) on a1 whose pull starts at `start` and that stops at `end`.
fn ran(h: &mut Harness, id: &str, start: Millis, end: Millis) {
    tasks_of(h.one(run(None, 0, &[(id, "a1")])));
    h.one(reports(
        "a1",
        1,
        vec![report(id, TaskState::Pending, start)],
    ))
    .unwrap();
    h.one(reports(
        "a1",
        1,
        vec![report(id, TaskState::Running, start + 500)],
    ))
    .unwrap();
    let mut stop = report(id, TaskState::Stopped, end);
    stop.stop_code = Some(StopCode::EssentialContainerExited);
    h.one(reports("a1", 1, vec![stop])).unwrap();
}

fn cluster() -> Harness {
    let mut h = Harness::new();
    h.now = 10 * DAY_MS;
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 16384, 65536)).unwrap();
    h
}

fn seconds(lines: &[crate::state::UsageLine]) -> Vec<(String, u128)> {
    lines
        .iter()
        .map(|l| (l.key.clone(), l.amount.cpu_unit_ms / 1024 / 1000))
        .collect()
}

#[test]
fn a_task_that_runs_10_s_is_billed_60_s() {
    let mut h = cluster();
    let t0 = h.now;
    ran(&mut h, "t1", t0, t0 + 10_000);
    let u = h.state.usage(0, u64::MAX, h.now, UsageBy::Task);
    assert_eq!(seconds(&u), vec![("t1".to_string(), 60)]);
    // 2 GiB for the same minute.
    assert_eq!(u[0].amount.mib_ms, 2048 * 60_000);
}

#[test]
fn a_period_cuts_a_task_at_its_bounds_exactly() {
    let mut h = cluster();
    let t0 = h.now;
    ran(&mut h, "t1", t0, t0 + 600_000);
    let u = h
        .state
        .usage(t0 + 100_000, t0 + 250_000, h.now, UsageBy::Family);
    assert_eq!(seconds(&u), vec![("web".to_string(), 150)]);
    assert!(h
        .state
        .usage(t0 + 600_000, t0 + 700_000, h.now, UsageBy::Family)
        .is_empty());
}

#[test]
fn the_record_outlives_the_task_and_folding_keeps_the_totals() {
    let mut h = cluster();
    let t0 = h.now;
    // Across midnight: 10 minutes each side.
    let midnight = (t0 / DAY_MS + 1) * DAY_MS;
    ran(&mut h, "t1", midnight - 600_000, midnight + 600_000);
    ran(&mut h, "t2", t0, t0 + 30_000);
    let before = h.state.usage(0, u64::MAX, h.now, UsageBy::Day);
    let family_before = h.state.usage(0, u64::MAX, h.now, UsageBy::Family);
    // Past the task retention: the tasks are gone, their usage is not.
    h.now += STOPPED_TASK_RETENTION_MS + 1;
    h.one(agent("a2", 1024, 2048)).unwrap();
    assert!(h.state.task("t1").is_none());
    assert_eq!(h.state.usage(0, u64::MAX, h.now, UsageBy::Day), before);
    // Past the record retention: folded into days, the same totals.
    h.now += USAGE_RECORD_RETENTION_MS + 2 * DAY_MS;
    h.one(agent("a3", 1024, 2048)).unwrap();
    assert_eq!(h.state.usage_record_count(), 0);
    let after = h.state.usage(0, u64::MAX, h.now, UsageBy::Day);
    assert_eq!(
        seconds(&after),
        seconds(&before),
        "per day: {after:?} vs {before:?}"
    );
    let family_after = h.state.usage(0, u64::MAX, h.now, UsageBy::Family);
    assert_eq!(
        family_after[0].amount.cpu_unit_ms,
        family_before[0].amount.cpu_unit_ms
    );
    let by_task = h.state.usage(0, u64::MAX, h.now, UsageBy::Task);
    assert_eq!(by_task[0].key, crate::state::FOLDED);
    // And a snapshot carries it.
    let back: ClusterState =
        serde_json::from_slice(&serde_json::to_vec(&h.state).unwrap()).unwrap();
    assert_eq!(back.usage(0, u64::MAX, h.now, UsageBy::Day), after);
}

#[test]
fn a_running_task_counts_up_to_now() {
    let mut h = cluster();
    let t0 = h.now;
    tasks_of(h.one(run(None, 0, &[("t1", "a1")])));
    h.one(reports("a1", 1, vec![report("t1", TaskState::Running, t0)]))
        .unwrap();
    let u = h.state.usage(0, u64::MAX, t0 + 120_000, UsageBy::Task);
    assert_eq!(seconds(&u), vec![("t1".to_string(), 120)]);
    // Not yet a minute: a minute.
    let u = h.state.usage(0, u64::MAX, t0 + 5_000, UsageBy::Task);
    assert_eq!(seconds(&u), vec![("t1".to_string(), 60)]);
}
