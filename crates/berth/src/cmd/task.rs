//! `berth task`: run, list, describe, stop and follow tasks, and read their logs.

use std::process::ExitCode;

use anyhow::{bail, Result};
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use clap::Subcommand;
use tokio_stream::StreamExt;

use super::{status_err, wait, PARTIAL};
use crate::client::{all_pages, Client, Retry};
use crate::output::{line, show, time, Table};
use crate::{ClientOpts, Format};

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Start tasks from FAMILY (latest ACTIVE revision) or FAMILY:REVISION.
    Run {
        task_definition: String,
        /// 1..10 tasks.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Makes the call idempotent for an hour (generated when absent, so the CLI's own
        /// retries never start a task twice).
        #[arg(long)]
        client_token: Option<String>,
        #[arg(long, default_value = "")]
        started_by: String,
        /// Default family:FAMILY.
        #[arg(long, default_value = "")]
        group: String,
        /// binpack[:cpu|memory], spread:instanceId, spread:attribute:NAME, random; repeat to chain.
        #[arg(long = "strategy")]
        strategies: Vec<String>,
        /// distinctInstance, or memberOf:EXPRESSION; repeat to combine.
        #[arg(long = "constraint")]
        constraints: Vec<String>,
        #[command(flatten)]
        timeouts: TimeoutFlags,
        /// Start each task that fails (not started, lost, timed out, or exited non-zero)
        /// again, up to this many times, with exponential back-off (5s doubling to 5m).
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// No retry starts later than this after the call (default 1h).
        #[arg(long, value_parser = humantime::parse_duration, requires = "retries")]
        retry_max_age: Option<std::time::Duration>,
        /// Follow the tasks (and their retries) until they stop, showing each state on
        /// stderr; the exit status is then the last attempts' exit code (the first non-zero;
        /// 1 if one never ran).
        #[arg(long)]
        wait: bool,
    },
    /// List tasks.
    Ls {
        #[arg(long)]
        family: Option<String>,
        /// RUNNING or STOPPED.
        #[arg(long)]
        desired_status: Option<String>,
        #[arg(long)]
        started_by: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Show tasks by id (up to 100).
    Describe {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop a task.
    Stop {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A task container's output, streamed from the agent that runs it.
    Logs {
        id: String,
        /// Container name (default: the task's first container).
        #[arg(long, default_value = "")]
        container: String,
        /// Keep streaming new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, default_value_t = 0)]
        tail: u32,
    },
    /// Follow tasks' changes as they happen.
    Watch {
        #[arg(long)]
        family: Option<String>,
        ids: Vec<String>,
    },
}

fn tasks_table(tasks: &[Task]) -> Table {
    let mut t = Table::new(&[
        "TASK",
        "DEFINITION",
        "AGENT",
        "LAST",
        "DESIRED",
        "CPU",
        "MEM",
        "CREATED",
        "STOPPED",
    ]);
    for x in tasks {
        let stopped = if x.stop_code.is_empty() {
            String::new()
        } else {
            format!("{}: {}", x.stop_code, x.stopped_reason)
        };
        t.row(vec![
            x.task_id.clone(),
            x.task_definition.clone(),
            x.agent_id.clone(),
            x.last_status.clone(),
            x.desired_status.clone(),
            x.cpu.to_string(),
            x.memory.to_string(),
            time(Some(x.created_at_ms)),
            stopped,
        ]);
    }
    t
}

/// Every container of the tasks: state, exit, health (task health beside the task id) and
/// published ports.
fn containers_table(tasks: &[Task]) -> Table {
    let mut t = Table::new(&[
        "TASK",
        "HEALTH",
        "CONTAINER",
        "LAST",
        "EXIT",
        "HEALTH",
        "PORTS",
        "REASON",
    ]);
    for x in tasks {
        for c in &x.containers {
            let ports: Vec<String> = c
                .network_bindings
                .iter()
                .map(|b| {
                    format!(
                        "{}:{}->{}/{}",
                        b.bind_ip, b.host_port, b.container_port, b.protocol
                    )
                })
                .collect();
            t.row(vec![
                x.task_id.clone(),
                x.health_status.clone(),
                c.name.clone(),
                c.last_status.clone(),
                c.exit_code.map(|e| e.to_string()).unwrap_or_default(),
                c.health_status.clone(),
                ports.join(" "),
                c.reason.clone(),
            ]);
        }
    }
    t
}

/// One task in words: every state it reached with its time and the time since it was
/// created, why it stopped, and what it is billed so far.
fn details(t: &Task) -> std::io::Result<()> {
    line(format_args!(
        "task {} ({}) on {}: {} (desired {})",
        t.task_id, t.task_definition, t.agent_id, t.last_status, t.desired_status
    ))?;
    for x in &t.transitions {
        let since = x.at_ms.saturating_sub(t.created_at_ms) as f64 / 1000.0;
        line(format_args!(
            "  {:<14} {}  +{since:.1}s",
            x.status,
            time(Some(x.at_ms))
        ))?;
    }
    if !t.stop_code.is_empty() {
        line(format_args!(
            "  stopped: {}: {}",
            t.stop_code, t.stopped_reason
        ))?;
    }
    if !t.run_id.is_empty() && t.retried_run.is_none() {
        line(format_args!("  run {} attempt {}", t.run_id, t.attempt))?;
    }
    if let Some(r) = &t.retried_run {
        let mut s = format!("  attempt {} of run {}: {}", t.attempt, r.run_id, r.status);
        if !r.reason.is_empty() {
            s.push_str(&format!(" ({})", r.reason));
        }
        if r.retry_at_ms > 0 {
            s.push_str(&format!(", next attempt at {}", time(Some(r.retry_at_ms))));
        }
        line(format_args!("{s}"))?;
        for a in &r.attempts {
            let task = if a.task_id.is_empty() {
                "no task"
            } else {
                a.task_id.as_str()
            };
            let failure = if a.failure.is_empty() {
                String::new()
            } else {
                format!(": {}", a.failure)
            };
            line(format_args!(
                "    attempt {} at {}  {task}{failure}",
                a.number,
                time(Some(a.started_at_ms))
            ))?;
        }
    }
    if let Some(u) = &t.usage {
        line(format_args!(
            "  billed so far: {:.6} vCPU-hours, {:.6} GiB-hours, cost {:.6}",
            u.vcpu_hours, u.gib_hours, u.cost
        ))?;
    }
    line(format_args!(""))
}

/// Measured use beside the reservation: CPU in percent of the task's CPU, memory in MiB of
/// its limit.
fn utilization_table(tasks: &[Task]) -> Table {
    let mut t = Table::new(&[
        "TASK", "CPU AVG", "CPU PEAK", "CPU LAST", "MEM AVG", "MEM PEAK", "MEM LAST", "MEASURED",
    ]);
    for x in tasks {
        let Some(u) = &x.utilization else {
            continue;
        };
        let mib = |m: u32| format!("{m}/{} MiB", x.memory);
        t.row(vec![
            x.task_id.clone(),
            format!("{:.1}%", u.cpu_average_percent),
            format!("{:.1}%", u.cpu_peak_percent),
            format!("{:.1}%", u.last_cpu_percent),
            mib(u.memory_average_mib),
            mib(u.memory_peak_mib),
            mib(u.last_memory_mib),
            format!(
                "{}s to {}",
                u.measured_ms / 1000,
                time(Some(u.last_window_end_ms))
            ),
        ]);
    }
    t
}

pub(crate) fn failures_table(failures: &[Failure]) -> Table {
    let mut t = Table::new(&["FAILURE", "ARN", "DETAIL"]);
    for f in failures {
        t.row(vec![f.reason.clone(), f.arn.clone(), f.detail.clone()]);
    }
    t
}

/// Overrides of the task definition's time limits.
#[derive(clap::Args)]
pub struct TimeoutFlags {
    /// Stop a task that has not reached RUNNING this long after placement (default 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    start_timeout: Option<u32>,
    /// Stop a task this long after its containers started (SIGTERM, then SIGKILL after
    /// their stopTimeout); default none.
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    max_runtime: Option<u32>,
}

impl TimeoutFlags {
    pub(crate) fn to_wire(&self) -> Option<Timeouts> {
        (self.start_timeout.is_some() || self.max_runtime.is_some()).then_some(Timeouts {
            start_timeout: self.start_timeout,
            max_runtime: self.max_runtime,
        })
    }
}

fn parse_seconds(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; give a duration such as 90s, 10m or 2h"))?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!("{s}: give whole seconds, at least 1s"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{s} is too long"))
}

pub(crate) fn parse_strategy(s: &str) -> PlacementStrategy {
    match s.split_once(':') {
        Some((k, f)) => PlacementStrategy {
            r#type: k.to_string(),
            field: f.to_string(),
        },
        None => PlacementStrategy {
            r#type: s.to_string(),
            field: String::new(),
        },
    }
}

pub(crate) fn parse_constraint(s: &str) -> PlacementConstraint {
    match s.split_once(':') {
        Some((k, e)) => PlacementConstraint {
            r#type: k.to_string(),
            expression: e.to_string(),
        },
        None => PlacementConstraint {
            r#type: s.to_string(),
            expression: String::new(),
        },
    }
}

pub async fn task(opts: &ClientOpts, cmd: TaskCmd) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    let stale = opts.stale;
    match cmd {
        TaskCmd::Run {
            task_definition,
            count,
            client_token,
            started_by,
            group,
            strategies,
            constraints,
            timeouts,
            retries,
            retry_max_age,
            wait,
        } => {
            let token =
                client_token.unwrap_or_else(|| format!("cli-{:032x}", rand::random::<u128>()));
            let req = RunTaskRequest {
                task_definition,
                count,
                client_token: token,
                started_by,
                group,
                overrides: vec![],
                placement_strategy: strategies.iter().map(|s| parse_strategy(s)).collect(),
                placement_constraints: constraints.iter().map(|s| parse_constraint(s)).collect(),
                timeouts: timeouts.to_wire(),
                retries,
                retry_max_age_ms: retry_max_age.map(|d| d.as_millis() as u64),
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TasksClient::new(ch).run(req).await
                })
                .await?;
            if wait && !r.tasks.is_empty() {
                if !r.failures.is_empty() {
                    failures_table(&r.failures).print()?;
                }
                let ids = r.tasks.iter().map(|t| t.task_id.clone()).collect();
                let ended = wait::tasks(&client, ids, stale).await?;
                show(opts.output, &ended, || Ok(tasks_table(&ended)))?;
                return Ok(wait::exit_code(&ended));
            }
            show(opts.output, &r, || {
                if !r.failures.is_empty() {
                    failures_table(&r.failures).print()?;
                }
                Ok(tasks_table(&r.tasks))
            })?;
            if !r.failures.is_empty() {
                return Ok(ExitCode::from(PARTIAL));
            }
        }
        TaskCmd::Ls {
            family,
            desired_status,
            started_by,
            agent,
        } => {
            let client = &client;
            let all = all_pages(|next_token| {
                let req = ListTasksRequest {
                    family: family.clone().unwrap_or_default(),
                    desired_status: desired_status.clone().unwrap_or_default(),
                    started_by: started_by.clone().unwrap_or_default(),
                    agent_id: agent.clone().unwrap_or_default(),
                    group: String::new(),
                    max_results: 1000,
                    next_token,
                    stale,
                };
                async move {
                    let r = client
                        .unary(Retry::Safe, &req, |ch, req| async move {
                            TasksClient::new(ch).list(req).await
                        })
                        .await?;
                    Ok((r.tasks, r.next_token))
                }
            })
            .await?;
            show(opts.output, &all, || Ok(tasks_table(&all)))?;
        }
        TaskCmd::Describe { ids } => {
            let req = DescribeTasksRequest {
                task_ids: ids,
                stale,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TasksClient::new(ch).describe(req).await
                })
                .await?;
            show(opts.output, &r, || {
                if !r.failures.is_empty() {
                    failures_table(&r.failures).print()?;
                }
                tasks_table(&r.tasks).print()?;
                crate::output::line(format_args!(""))?;
                for t in &r.tasks {
                    details(t)?;
                }
                if r.tasks.iter().any(|t| t.utilization.is_some()) {
                    containers_table(&r.tasks).print()?;
                    crate::output::line(format_args!(""))?;
                    return Ok(utilization_table(&r.tasks));
                }
                Ok(containers_table(&r.tasks))
            })?;
            if !r.failures.is_empty() {
                return Ok(ExitCode::from(PARTIAL));
            }
        }
        TaskCmd::Stop { id, reason } => {
            let req = StopTaskRequest {
                task_id: id,
                reason,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TasksClient::new(ch).stop(req).await
                })
                .await?;
            let tasks: Vec<Task> = r.task.clone().into_iter().collect();
            show(opts.output, &r, || Ok(tasks_table(&tasks)))?;
        }
        TaskCmd::Logs {
            id,
            container,
            follow,
            tail,
        } => {
            use std::io::Write;
            let req = TaskLogsRequest {
                task_id: id,
                container,
                follow,
                tail,
            };
            let mut stream = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TasksClient::new(ch).logs(req).await
                })
                .await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(status_err)?;
                if chunk.stream == "stderr" {
                    std::io::stderr().write_all(&chunk.data)?;
                } else {
                    std::io::stdout().write_all(&chunk.data)?;
                }
            }
        }
        TaskCmd::Watch { family, ids } => {
            let req = WatchTasksRequest {
                family: family.unwrap_or_default(),
                task_ids: ids,
                stale,
            };
            let mut stream = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TasksClient::new(ch).watch(req).await
                })
                .await?;
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(status_err)?;
                match opts.output {
                    Format::Json => line(format_args!("{}", serde_json::to_string(&ev)?))?,
                    Format::Table | Format::Csv => {
                        if let Some(t) = &ev.task {
                            line(format_args!(
                                "rev {:>8}  {}  {}  {} → {}{}",
                                ev.revision,
                                t.task_id,
                                t.task_definition,
                                t.last_status,
                                t.desired_status,
                                if ev.initial { "  (current)" } else { "" }
                            ))?;
                        }
                    }
                }
            }
            bail!("the watch stream ended (the node may have stopped); run it again to resume");
        }
    }
    Ok(ExitCode::SUCCESS)
}
