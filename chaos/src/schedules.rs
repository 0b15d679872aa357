//! Schedules through the faults: schedules at `rate(10 seconds)` are created before the first
//! fault and fire through every leader kill, pause, partition and full restart. After
//! healing, each schedule's records must cover every scheduled time from its first to its
//! last exactly once (a run, or a SKIPPED record saying why), and no run may have started the
//! same attempt twice or have two live attempts.
//!
//! Most of the schedules can never place their task (a constraint no agent meets), so they
//! exercise every fire and its compare-and-set without starting containers; two run a real
//! short task, so launches, task stops settling their runs, and overlap are exercised too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_proto::bearer::Api;
use berth_proto::v1::schedules_client::SchedulesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use crate::checks::CheckResult;

/// Schedules that run a real task, and schedules that can never place theirs.
const PLACEABLE: usize = 2;
const UNPLACEABLE: usize = 18;
const PERIOD_MS: u64 = 10_000;
const EXPRESSION: &str = "rate(10 seconds)";
const FAMILY: &str = "chaos-sched";
/// How long the final check waits for every schedule to fire past the healing.
const SETTLE: Duration = Duration::from_secs(60);

pub const CHECK_NAME: &str = "every scheduled time recorded once";

fn names() -> Vec<(String, bool)> {
    (0..PLACEABLE)
        .map(|i| (format!("chaos-run-{i}"), true))
        .chain((0..UNPLACEABLE).map(|i| (format!("chaos-tick-{i}"), false)))
        .collect()
}

/// Registers the schedules' task definition and creates the schedules (idempotently, by
/// token, through any node).
pub async fn create(endpoints: &[(String, Api)], seed: u64) -> Result<()> {
    let spec = TaskDefinitionSpec {
        family: FAMILY.into(),
        cpu: Some(256),
        memory: Some(512),
        // No network: no endpoint churn on the engine's bridge (see the workload's).
        network_mode: Some("none".into()),
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            command: vec!["sleep".into(), "1".into()],
            stop_timeout: Some(2),
            ..Default::default()
        }],
        timeouts: Some(Timeouts {
            start_timeout: None,
            max_runtime: Some(60),
        }),
    };
    crate::register_spec(endpoints, spec).await?;
    for (name, placeable) in names() {
        let req = CreateScheduleRequest {
            name: name.clone(),
            task_definition: FAMILY.into(),
            expression: EXPRESSION.into(),
            overlap: "forbid".into(),
            catch_up: "latest".into(),
            client_token: format!("chaos-{seed}-{name}"),
            placement_constraints: if placeable {
                vec![]
            } else {
                vec![PlacementConstraint {
                    r#type: "memberOf".into(),
                    expression: "attribute:zone == nowhere".into(),
                }]
            },
            ..Default::default()
        };
        crate::any_node(endpoints, &format!("creating schedule {name}"), |ch| {
            let req = req.clone();
            async move { SchedulesClient::new(ch).create(req).await }
        })
        .await?;
    }
    Ok(())
}

/// What is wrong with one schedule's records: a time recorded twice, or a time missing
/// between the first and the last record.
pub fn record_violations(name: &str, runs: &[ScheduleRun], period: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut times: BTreeMap<u64, &str> = BTreeMap::new();
    for r in runs {
        for k in 0..r.count.max(1) {
            let t = r.scheduled_time_ms + k * period;
            if let Some(prev) = times.insert(t, &r.run_id) {
                out.push(format!(
                    "{name}: time {t} recorded by {prev} and by {}",
                    r.run_id
                ));
            }
        }
    }
    let ts: Vec<u64> = times.keys().copied().collect();
    for w in ts.windows(2) {
        if w[1] - w[0] != period {
            out.push(format!(
                "{name}: no record for the times between {} and {}",
                w[0], w[1]
            ));
        }
    }
    out
}

/// What is wrong with the tasks a schedule started: an attempt started twice, or a run with
/// two live tasks.
pub fn task_violations(name: &str, tasks: &[Task]) -> Vec<String> {
    let mut out = Vec::new();
    let mut attempts: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        *attempts.entry((t.run_id.clone(), t.attempt)).or_default() += 1;
        if t.desired_status == "RUNNING" {
            *live.entry(t.run_id.clone()).or_default() += 1;
        }
    }
    for ((run, attempt), n) in attempts {
        if n > 1 {
            out.push(format!(
                "{name}: run {run} attempt {attempt} started {n} times"
            ));
        }
    }
    for (run, n) in live {
        if n > 1 {
            out.push(format!("{name}: run {run} has {n} live tasks"));
        }
    }
    out
}

async fn runs_of(endpoints: &[(String, Api)], name: &str) -> Result<Vec<ScheduleRun>> {
    crate::any_node(endpoints, &format!("runs of {name}"), |ch| async move {
        SchedulesClient::new(ch)
            .runs(ScheduleRunsRequest { name: name.into() })
            .await
            .map(|r| r.into_inner().runs)
    })
    .await
}

async fn tasks_of(endpoints: &[(String, Api)], name: &str) -> Result<Vec<Task>> {
    let mut out = Vec::new();
    for desired_status in ["RUNNING", "STOPPED"] {
        let mut next_token = String::new();
        loop {
            let req = ListTasksRequest {
                started_by: format!("schedule:{name}"),
                desired_status: desired_status.into(),
                max_results: 1000,
                next_token: next_token.clone(),
                ..Default::default()
            };
            let page = crate::any_node(endpoints, &format!("tasks of {name}"), |ch| {
                let req = req.clone();
                async move { TasksClient::new(ch).list(req).await }
            })
            .await?
            .into_inner();
            out.extend(page.tasks);
            if page.next_token.is_empty() {
                break;
            }
            next_token = page.next_token;
        }
    }
    Ok(out)
}

/// After healing: every schedule fires past `healed_at` (ms), then its records and tasks
/// are checked.
pub async fn check(endpoints: &[(String, Api)], healed_at: u64) -> CheckResult {
    let started = Instant::now();
    let deadline = started + SETTLE;
    let mut waiting = names();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (name, placeable) in waiting {
            let caught_up = runs_of(endpoints, &name).await.is_ok_and(|v| {
                v.first()
                    .is_some_and(|r| r.scheduled_time_ms.max(r.last_time_ms) > healed_at)
            });
            if !caught_up {
                still.push((name, placeable));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut violations = Vec::new();
    for (name, _) in &waiting {
        violations.push(format!(
            "{name}: fired nothing after healing within {}",
            humantime(SETTLE)
        ));
    }
    let (mut times, mut skipped, mut ran, mut tasks_seen) = (0u64, 0u64, 0u64, 0usize);
    for (name, placeable) in names() {
        let runs = match runs_of(endpoints, &name).await {
            Ok(v) => v,
            Err(e) => {
                violations.push(format!("{name}: {e}"));
                continue;
            }
        };
        violations.extend(record_violations(&name, &runs, PERIOD_MS));
        for r in &runs {
            times += r.count.max(1);
            if r.status == "SKIPPED" {
                skipped += r.count.max(1);
            } else {
                ran += 1;
            }
        }
        if placeable {
            match tasks_of(endpoints, &name).await {
                Ok(tasks) => {
                    tasks_seen += tasks.len();
                    violations.extend(task_violations(&name, &tasks));
                }
                Err(e) => violations.push(format!("{name}: {e}")),
            }
        }
    }
    CheckResult::new(
        CHECK_NAME,
        violations,
        format!(
            "{} schedules at {EXPRESSION}: {times} scheduled times recorded ({ran} runs, {skipped} \
             SKIPPED), {tasks_seen} tasks of the {PLACEABLE} that place; caught up {} after \
             healing",
            PLACEABLE + UNPLACEABLE,
            humantime(started.elapsed())
        ),
    )
}

fn humantime(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, t: u64, count: u64, status: &str) -> ScheduleRun {
        ScheduleRun {
            run_id: id.into(),
            scheduled_time_ms: t,
            last_time_ms: t + (count - 1) * 10,
            count,
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_time_twice_or_a_gap_is_a_violation() {
        let ok = [
            run("a", 10, 1, "SUCCEEDED"),
            run("b", 20, 3, "SKIPPED"),
            run("c", 50, 1, "FAILED"),
        ];
        assert!(record_violations("s", &ok, 10).is_empty());
        let twice = [run("a", 10, 2, "SKIPPED"), run("b", 20, 1, "SUCCEEDED")];
        assert_eq!(record_violations("s", &twice, 10).len(), 1);
        let gap = [run("a", 10, 1, "SUCCEEDED"), run("b", 40, 1, "SUCCEEDED")];
        assert_eq!(record_violations("s", &gap, 10).len(), 1);
    }

    #[test]
    fn an_attempt_started_twice_or_two_live_tasks_is_a_violation() {
        let task = |run: &str, attempt: u32, desired: &str| Task {
            run_id: run.into(),
            attempt,
            desired_status: desired.into(),
            ..Default::default()
        };
        assert!(
            task_violations("s", &[task("r1", 1, "STOPPED"), task("r1", 2, "RUNNING")]).is_empty()
        );
        assert_eq!(
            task_violations("s", &[task("r1", 1, "STOPPED"), task("r1", 1, "STOPPED")]).len(),
            1
        );
        assert_eq!(
            task_violations("s", &[task("r1", 1, "RUNNING"), task("r1", 2, "RUNNING")]).len(),
            1
        );
    }
}
