//! `--wait`: follow tasks, or a service's deployment, to their end, printing each change on
//! stderr as it happens (stdout keeps the final answer, for scripts).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use crate::client::{Client, Retry};

const POLL: Duration = Duration::from_millis(250);

/// What `--wait` shows on stderr: a line per change, and on a terminal a status line under
/// them, redrawn in place every poll with the time so far.
struct Live {
    started: Instant,
    tty: bool,
    /// A status line is on screen (to be cleared before the next line).
    shown: bool,
}

impl Live {
    fn new() -> Self {
        Live {
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn change(&mut self, what: std::fmt::Arguments<'_>) {
        let mut err = std::io::stderr().lock();
        if self.shown {
            let _ = write!(err, "\r\x1b[2K");
            self.shown = false;
        }
        let _ = writeln!(err, "{:>7.1}s  {what}", self.elapsed());
    }

    fn status(&mut self, what: &str) {
        if !self.tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{:>7.1}s  {what}", self.elapsed());
        let _ = err.flush();
        self.shown = true;
    }

    fn done(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// `2 RUNNING, 1 PENDING`: the tasks by state, in the order states come.
fn summary(tasks: &[Task]) -> String {
    let parts: Vec<String> = crate::output::TASK_STATES
        .iter()
        .filter_map(|s| {
            let n = tasks.iter().filter(|t| t.last_status == *s).count();
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    format!("waiting: {}", parts.join(", "))
}

/// Until every task is STOPPED; returns them as they ended.
pub async fn tasks(client: &Client, mut ids: Vec<String>, stale: bool) -> Result<Vec<Task>> {
    let mut live = Live::new();
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
                live.change(format_args!("task {short}  {now}{extra}"));
                seen.insert(t.task_id.clone(), now);
            }
        }
        // A task under a retry policy is followed to its run's newest attempt.
        let mut retrying = false;
        for t in &r.tasks {
            let Some(run) = &t.retried_run else { continue };
            retrying |= run.status == "RUNNING";
            let newest = run.attempts.last().map(|a| a.task_id.as_str());
            if let Some(newest) = newest.filter(|n| !n.is_empty() && *n != t.task_id) {
                if let Some(id) = ids.iter_mut().find(|id| **id == t.task_id) {
                    let short = &newest[..newest.len().min(12)];
                    live.change(format_args!(
                        "run {}  attempt {}: task {short}",
                        &run.run_id[..run.run_id.len().min(12)],
                        run.attempts.len()
                    ));
                    *id = newest.to_string();
                    retrying = true;
                }
            }
        }
        if !retrying && !r.tasks.is_empty() && r.tasks.iter().all(|t| t.last_status == "STOPPED") {
            live.done();
            return Ok(r.tasks);
        }
        live.status(&summary(&r.tasks));
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
    let mut live = Live::new();
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
            live.change(format_args!("deployment {id} is no longer listed"));
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
            live.change(format_args!("{now}"));
            last = now;
        }
        match d.rollout_state.as_str() {
            "COMPLETED" => {
                live.done();
                return Ok(ExitCode::SUCCESS);
            }
            "FAILED" => {
                live.change(format_args!("{}", d.rollout_state_reason));
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
        live.status(&format!(
            "waiting for deployment {id}: {} of {} running",
            d.running_count, d.desired_count
        ));
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str) -> Task {
        Task {
            last_status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_status_line_counts_tasks_by_state_in_the_order_states_come() {
        let tasks = [task("RUNNING"), task("PENDING"), task("RUNNING")];
        assert_eq!(summary(&tasks), "waiting: 1 PENDING, 2 RUNNING");
        assert_eq!(summary(&[]), "waiting: ");
    }
}
