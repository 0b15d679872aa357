//! Autoscaling in the state machine: a policy brings the desired count into its bounds, a
//! scale action applies only from the count it was computed on and outside its cooldowns,
//! and the service's metric averages its RUNNING tasks' current windows.

use super::*;
use crate::scaling::*;
use crate::utilization::Window;

fn policy(min: u32, max: u32) -> ScalingPolicy {
    ScalingPolicy {
        metric: ScalingMetric::Cpu,
        target_percent: 50,
        min_count: min,
        max_count: max,
        scale_out_cooldown_ms: 10_000,
        scale_in_cooldown_ms: 60_000,
        disable_scale_in: false,
    }
}

fn cluster(desired: u32) -> Harness {
    let mut h = Harness::new();
    h.one(Command::RegisterTaskDefinition { spec: spec("web") })
        .unwrap();
    h.one(agent("a1", 16384, 65536)).unwrap();
    h.one(Command::CreateService(service_create("api", desired)))
        .unwrap();
    h
}

fn put(name: &str, p: Option<ScalingPolicy>) -> Command {
    Command::PutScalingPolicy {
        name: name.into(),
        policy: p,
    }
}

fn scale(from: u32, to: u32) -> Command {
    Command::AutoscaleService {
        name: "api".into(),
        from,
        to,
        reason: "CPU 100.0 % of reservation over 1 task (target 50 %)".into(),
    }
}

fn desired(h: &Harness) -> u32 {
    h.state.service("api").unwrap().desired_count
}

#[test]
fn a_policy_brings_the_desired_count_into_its_bounds_and_can_be_removed() {
    let mut h = cluster(1);
    h.one(put("api", Some(policy(2, 5)))).unwrap();
    assert_eq!(desired(&h), 2);
    let bad = ScalingPolicy {
        target_percent: 0,
        ..policy(2, 5)
    };
    assert!(h.one(put("api", Some(bad))).is_err());
    assert!(h.one(put("nope", Some(policy(1, 2)))).is_err());
    h.one(put("api", None)).unwrap();
    assert!(h.state.service("api").unwrap().scaling.is_none());
    assert!(h.one(scale(2, 3)).is_err(), "no policy, no autoscaling");
}

#[test]
fn a_scale_action_applies_only_from_its_count_within_bounds_and_cooldowns() {
    let mut h = cluster(1);
    h.one(put("api", Some(policy(1, 5)))).unwrap();
    // Computed on a count the service no longer has: stale.
    assert!(h.one(scale(2, 4)).is_err());
    assert!(h.one(scale(1, 6)).is_err(), "above the maximum");
    h.one(scale(1, 3)).unwrap();
    assert_eq!(desired(&h), 3);
    let events = &h.state.service("api").unwrap().events;
    assert!(events[0]
        .message
        .contains("scaled out from 1 to 3: CPU 100.0 %"));
    // Scale-out cooldown: no more out, no in.
    h.now += 5_000;
    assert!(h.one(scale(3, 4)).is_err());
    assert!(h.one(scale(3, 1)).is_err());
    h.now += 5_000;
    h.one(scale(3, 5)).unwrap();
    h.now += 10_000;
    h.one(scale(5, 2)).unwrap();
    // Scale-in cooldown holds further scale-in, not scale-out.
    h.now += 1_000;
    assert!(h.one(scale(2, 1)).is_err());
    h.one(scale(2, 4)).unwrap();
    assert_eq!(desired(&h), 4);
    h.state.check_invariants().unwrap();
}

#[test]
fn the_service_metric_averages_running_tasks_with_current_figures() {
    let mut h = cluster(2);
    let d = h
        .state
        .service("api")
        .unwrap()
        .primary()
        .unwrap()
        .id
        .clone();
    let mut r = run(None, 1, &[("t1", "a1"), ("t2", "a1"), ("t3", "a1")]);
    if let Command::RunTasks(ref mut x) = r {
        x.started_by = d;
        x.group = "service:api".into();
        x.service = Some("api".into());
    }
    // The third is refused by the desired count; two run.
    assert_eq!(tasks_of(h.one(r)).0.len(), 2);
    assert_eq!(
        h.state.service_metric("api", ScalingMetric::Cpu, h.now),
        None
    );
    h.one(reports(
        "a1",
        1,
        vec![
            report("t1", TaskState::Running, h.now),
            report("t2", TaskState::Running, h.now),
        ],
    ))
    .unwrap();
    let w = |id: &str, cpu: u32| Window {
        task_id: id.into(),
        start: 0,
        end: 10_000,
        cpu_avg: cpu,
        cpu_peak: cpu,
        memory_avg: 64,
        memory_peak: 64,
    };
    // spec("web") reserves 1024 CPU units and 2048 MiB per task.
    h.one(Command::RecordUtilization {
        agent_id: "a1".into(),
        epoch: 1,
        windows: vec![w("t1", 1024), w("t2", 256)],
    })
    .unwrap();
    let m = h
        .state
        .service_metric("api", ScalingMetric::Cpu, h.now)
        .unwrap();
    assert_eq!((m.tenths, m.tasks), ((1000 + 250) / 2, 2));
    let m = h
        .state
        .service_metric("api", ScalingMetric::Memory, h.now)
        .unwrap();
    assert_eq!(m.tenths, 31);
    // Stale figures count for nothing.
    assert_eq!(
        h.state
            .service_metric("api", ScalingMetric::Cpu, h.now + 60_000),
        None
    );
}
