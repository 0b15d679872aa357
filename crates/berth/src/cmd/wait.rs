//! `--wait`: follow tasks, or a service's deployment, to their end, printing each change on
//! stderr as it happens (stdout keeps the final answer, for scripts).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use crate::client::{Client, Retry};

const POLL: Duration = Duration::from_millis(250);

fn progress(started: Instant, what: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{:>7.1}s  {what}", started.elapsed().as_secs_f64());
}

/// Until every task is STOPPED; returns them as they ended.
pub async fn tasks(client: &Client, ids: Vec<String>, stale: bool) -> Result<Vec<Task>> {
    let started = Instant::now();
    let mut seen: HashMap<String, String> = HashMap::new();
    loop {
        let req = DescribeTasksRequest {
            task_ids: ids.clone(),
            stale,
        };
        let r = client
            .unary(Retry::Safe, &req, |ch, req| async move {
                TasksClient::new(ch).describe(req).await
            })
            .await?;
        for t in &r.tasks {
            let now = if t.health_status.is_empty() || t.health_status == "UNKNOWN" {
                t.last_status.clone()
            } else {
                format!("{} ({})", t.last_status, t.health_status)
            };
            if seen.get(&t.task_id) != Some(&now) {
                let short = &t.task_id[..t.task_id.len().min(12)];
                let extra = if t.last_status == "STOPPED" {
                    format!(
                        "  {}: {}{}",
                        t.stop_code,
                        t.stopped_reason,
                        exit_of(t)
                            .map(|c| format!(" (exit code {c})"))
                            .unwrap_or_default()
                    )
                } else {
                    String::new()
                };
                progress(started, format_args!("task {short}  {now}{extra}"));
                seen.insert(t.task_id.clone(), now);
            }
        }
        if !r.tasks.is_empty() && r.tasks.iter().all(|t| t.last_status == "STOPPED") {
            return Ok(r.tasks);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The exit code the task's end stands for: the first non-zero container exit code, else 0
/// if a container exited, else none (it never ran).
fn exit_of(t: &Task) -> Option<i32> {
    let codes: Vec<i32> = t.containers.iter().filter_map(|c| c.exit_code).collect();
    codes
        .iter()
        .copied()
        .find(|c| *c != 0)
        .or(codes.first().copied())
}

/// `task run --wait`'s own exit status: the tasks' exit code (the first non-zero), 1 for a
/// task that never ran.
pub fn exit_code(tasks: &[Task]) -> ExitCode {
    let mut code = 0i32;
    for t in tasks {
        match exit_of(t) {
            Some(0) => {}
            Some(c) => {
                code = c;
                break;
            }
            None => {
                code = 1;
                break;
            }
        }
    }
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Until the deployment that is PRIMARY when called is COMPLETED (exit 0), or FAILED —
/// rolled back or not — or gone (exit 1).
pub async fn deployment(client: &Client, service: &str, stale: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let mut last = String::new();
    let mut target: Option<String> = None;
    loop {
        let req = DescribeServicesRequest {
            services: vec![service.to_string()],
            stale,
        };
        let r = client
            .unary(Retry::Safe, &req, |ch, req| async move {
                ServicesClient::new(ch).describe(req).await
            })
            .await?;
        let Some(s) = r.services.into_iter().next() else {
            anyhow::bail!("service {service} does not exist");
        };
        let id = target
            .get_or_insert_with(|| {
                s.deployments
                    .first()
                    .map(|d| d.id.clone())
                    .unwrap_or_default()
            })
            .clone();
        let Some(d) = s.deployments.iter().find(|d| d.id == id) else {
            progress(started, format_args!("deployment {id} is no longer listed"));
            return Ok(ExitCode::from(1));
        };
        let old: u32 = s
            .deployments
            .iter()
            .filter(|x| x.id != id && x.status != "INACTIVE")
            .map(|x| x.running_count + x.pending_count)
            .sum();
        let now = format!(
            "deployment {} ({}) {} {}: {} running, {} pending, {} failed; {} other task{} left",
            d.id,
            d.task_definition,
            d.status,
            d.rollout_state,
            d.running_count,
            d.pending_count,
            d.failed_tasks,
            old,
            if old == 1 { "" } else { "s" }
        );
        if now != last {
            progress(started, format_args!("{now}"));
            last = now;
        }
        match d.rollout_state.as_str() {
            "COMPLETED" => return Ok(ExitCode::SUCCESS),
            "FAILED" => {
                progress(started, format_args!("{}", d.rollout_state_reason));
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}
