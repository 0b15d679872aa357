//! Measured use in the state machine: windows of the agent's own live tasks are kept, others
//! skipped, a stale registration refused, and the figures leave with the task.

use super::*;
use crate::utilization::Window;

fn window(task: &str, start: Millis, end: Millis, cpu: u32, memory: u32) -> Window {
    Window {
        task_id: task.into(),
        start,
        end,
        cpu_avg: cpu,
        cpu_peak: cpu * 2,
        memory_avg: memory,
        memory_peak: memory + 1,
    }
}

fn record(agent: &str, epoch: u64, windows: Vec<Window>) -> Command {
    Command::RecordUtilization {
        agent_id: agent.into(),
        epoch,
        windows,
    }
}

fn cluster() -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 4096, 8192)).unwrap();
    h.one(agent("a2", 4096, 8192)).unwrap();
    tasks_of(h.one(run(None, 1, &[("t1", "a1"), ("t2", "a1"), ("t3", "a2")])));
    h
}

#[test]
fn an_agents_windows_for_its_own_live_tasks_are_kept_and_summed() {
    let mut h = cluster();
    h.one(record(
        "a1",
        1,
        vec![
            window("t1", 0, 10_000, 100, 40),
            window("t2", 0, 10_000, 300, 60),
            // Not a1's: skipped, the rest still kept.
            window("t3", 0, 10_000, 900, 90),
            window("nope", 0, 10_000, 900, 90),
        ],
    ))
    .unwrap();
    assert_eq!(h.state.task_utilization("t1").unwrap().last.cpu_avg, 100);
    assert!(h.state.task_utilization("t3").is_none());
    assert_eq!(h.state.agent_used("a1", h.now), (400, 100));
    assert_eq!(h.state.agent_used("a2", h.now), (0, 0));
    h.one(record("a1", 1, vec![window("t1", 10_000, 30_000, 400, 40)]))
        .unwrap();
    let u = h.state.task_utilization("t1").unwrap();
    assert_eq!(u.cpu_avg(), (100 * 10 + 400 * 20) / 30);
    assert_eq!(u.cpu_peak, 800);
    // Figures go stale when the agent stops sending them (two windows and 5 s).
    assert!(h.state.current_utilization("t1", h.now + 45_000).is_some());
    assert!(h.state.current_utilization("t1", h.now + 45_001).is_none());
}

#[test]
fn a_stale_registration_or_an_impossible_window_is_refused_whole() {
    let mut h = cluster();
    let e = h
        .one(record("a1", 7, vec![window("t1", 0, 10_000, 100, 40)]))
        .unwrap_err();
    assert!(e.to_string().contains("re-register"), "{e}");
    let e = h
        .one(record(
            "a1",
            1,
            vec![
                window("t1", 0, 10_000, 100, 40),
                window("t2", 10_000, 5_000, 100, 40),
            ],
        ))
        .unwrap_err();
    assert!(e.to_string().contains("t2"), "{e}");
    assert!(h.state.task_utilization("t1").is_none());
    assert!(h.one(record("ghost", 1, vec![])).is_err());
}

#[test]
fn a_tasks_figures_stay_while_it_is_stopped_and_leave_with_it() {
    let mut h = cluster();
    h.one(record("a1", 1, vec![window("t1", 0, 10_000, 100, 40)]))
        .unwrap();
    h.one(reports(
        "a1",
        1,
        vec![report("t1", TaskState::Stopped, h.now)],
    ))
    .unwrap();
    assert!(h.state.task_utilization("t1").is_some());
    // A stopped task has no current figures, and takes no new window.
    assert!(h.state.current_utilization("t1", h.now).is_none());
    h.one(record("a1", 1, vec![window("t1", 10_000, 20_000, 900, 40)]))
        .unwrap();
    assert_eq!(h.state.task_utilization("t1").unwrap().last.cpu_avg, 100);
    h.now += crate::limits::STOPPED_TASK_RETENTION_MS + 1;
    h.one(Command::Tick).unwrap();
    assert!(h.state.task("t1").is_none());
    assert!(h.state.task_utilization("t1").is_none());
}
