//! The client verbs. Each builds a request, calls the cluster through [`Client`], and
//! prints the answer as a table or JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::AgentRegisterRequest;
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use clap::Subcommand;
use tokio_stream::StreamExt;

use crate::client::{all_pages, describe, Client, Retry};
use crate::output::{line, show, time, Table};
use crate::{ClientOpts, Format};

pub mod events;
pub mod service;
pub mod usage;
pub mod wait;

/// Exit status when the call worked but some of what was asked could not be done
/// (tasks not placed, ids not found).
const PARTIAL: u8 = 2;

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!(describe(&s))
}

// ---------------------------------------------------------------------------------------
// cluster

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Members, their roles, terms and log positions.
    Status,
    /// Add a running, empty control node: as a learner, then as a voter.
    Join {
        #[arg(long)]
        id: u64,
        /// The new node's raft address (its --raft / --advertise-raft).
        #[arg(long)]
        raft: String,
        /// The new node's API address.
        #[arg(long)]
        api: String,
    },
    /// Remove a member.
    Leave { id: u64 },
    /// Cluster-wide settings: shown without options, changed with them.
    Settings {
        /// Accept any CPU/memory pair instead of Fargate's table (`--free-sizing` alone
        /// means true; `--free-sizing false` returns to the table).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        free_sizing: Option<bool>,
        /// Price of one vCPU for an hour, for `berth usage` (default 0.04048).
        #[arg(long)]
        vcpu_hour_price: Option<f64>,
        /// Price of one GiB of memory for an hour (default 0.004445).
        #[arg(long)]
        gib_hour_price: Option<f64>,
    },
}

fn members_table(members: &[Member], leader: u64) -> Table {
    let mut t = Table::new(&[
        "ID", "ROLE", "VOTER", "TERM", "LAST LOG", "APPLIED", "RAFT", "API",
    ]);
    for m in members {
        let role = if m.id == leader && m.role == "leader" {
            "leader *".to_string()
        } else {
            m.role.clone()
        };
        t.row(vec![
            m.id.to_string(),
            if m.error.is_empty() {
                role
            } else {
                format!("{role} ({})", m.error)
            },
            if m.voter { "yes".into() } else { "no".into() },
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.applied_index.to_string(),
            m.raft_address.clone(),
            m.api_address.clone(),
        ]);
    }
    t
}

pub async fn cluster(opts: &ClientOpts, cmd: ClusterCmd) -> Result<ExitCode> {
    let client = Client::new(&opts.endpoint)?;
    match cmd {
        ClusterCmd::Status => {
            let r = client
                .unary(
                    Retry::Safe,
                    &ClusterStatusRequest {},
                    |ch, req| async move { ClusterClient::new(ch).status(req).await },
                )
                .await?;
            show(opts.output, &r, || {
                line(format_args!(
                    "answered by node {}, leader {}, revision {}, sizing {}",
                    r.node_id,
                    if r.leader_id == 0 {
                        "none".to_string()
                    } else {
                        r.leader_id.to_string()
                    },
                    r.revision,
                    if r.free_sizing { "free" } else { "fargate" }
                ))?;
                Ok(members_table(&r.members, r.leader_id))
            })?;
        }
        ClusterCmd::Join { id, raft, api } => {
            let req = JoinRequest {
                id,
                raft_address: raft,
                api_address: api,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ClusterClient::new(ch).join(req).await
                })
                .await?;
            show(opts.output, &r, || Ok(members_table(&r.members, 0)))?;
        }
        ClusterCmd::Leave { id } => {
            let r = client
                .unary(Retry::Safe, &LeaveRequest { id }, |ch, req| async move {
                    ClusterClient::new(ch).leave(req).await
                })
                .await?;
            show(opts.output, &r, || Ok(members_table(&r.members, 0)))?;
        }
        ClusterCmd::Settings {
            free_sizing,
            vcpu_hour_price,
            gib_hour_price,
        } => {
            let settings_table = |r: &UpdateSettingsResponse| {
                let mut t = Table::new(&["SETTING", "VALUE"]);
                t.row(vec!["free sizing".into(), r.free_sizing.to_string()]);
                t.row(vec![
                    "vCPU-hour price".into(),
                    r.vcpu_hour_price.to_string(),
                ]);
                t.row(vec!["GiB-hour price".into(), r.gib_hour_price.to_string()]);
                Ok(t)
            };
            if free_sizing.is_none() && vcpu_hour_price.is_none() && gib_hour_price.is_none() {
                // Nothing to change: show what is set (the status answer carries it).
                let r = client
                    .unary(
                        Retry::Safe,
                        &ClusterStatusRequest {},
                        |ch, req| async move { ClusterClient::new(ch).status(req).await },
                    )
                    .await?;
                let shown = UpdateSettingsResponse {
                    free_sizing: r.free_sizing,
                    revision: r.revision,
                    vcpu_hour_price: r.vcpu_hour_price,
                    gib_hour_price: r.gib_hour_price,
                };
                show(opts.output, &shown, || settings_table(&shown))?;
                return Ok(ExitCode::SUCCESS);
            }
            let r = client
                .unary(
                    Retry::Safe,
                    &UpdateSettingsRequest {
                        free_sizing,
                        vcpu_hour_price,
                        gib_hour_price,
                    },
                    |ch, req| async move { ClusterClient::new(ch).update_settings(req).await },
                )
                .await?;
            show(opts.output, &r, || settings_table(&r))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// task definitions

#[derive(Subcommand)]
pub enum TaskdefCmd {
    /// Register the next revision of a family from a JSON or YAML file (ECS field names).
    Register { file: PathBuf },
    /// List task definitions.
    Ls {
        #[arg(long)]
        family: Option<String>,
        /// ACTIVE or INACTIVE.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one task definition: FAMILY (latest ACTIVE) or FAMILY:REVISION.
    Describe { task_definition: String },
    /// Mark FAMILY:REVISION inactive.
    Deregister { task_definition: String },
}

/// Reads a task definition file. JSON or YAML (ECS's camelCase field names); errors name
/// the file, the line and the field.
pub fn read_spec(path: &Path) -> Result<berth_core::TaskDefinitionSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let looks_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if looks_json {
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: invalid task definition: {e}", path.display()))
    } else {
        serde_yaml::from_str(&text)
            .map_err(|e| anyhow!("{}: invalid task definition: {e}", path.display()))
    }
}

fn taskdefs_table(defs: &[TaskDefinition]) -> Table {
    let mut t = Table::new(&["TASK DEFINITION", "STATUS", "CPU", "MEMORY", "CONTAINERS"]);
    for d in defs {
        t.row(vec![
            format!("{}:{}", d.family, d.revision),
            d.status.clone(),
            d.cpu.to_string(),
            d.memory.to_string(),
            d.container_definitions
                .iter()
                .map(|c| format!("{} ({})", c.name, c.image))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    t
}

pub async fn taskdef(opts: &ClientOpts, cmd: TaskdefCmd) -> Result<ExitCode> {
    let client = Client::new(&opts.endpoint)?;
    let stale = opts.stale;
    match cmd {
        TaskdefCmd::Register { file } => {
            let spec = read_spec(&file)?;
            let req = RegisterTaskDefinitionRequest {
                task_definition: Some((&spec).into()),
            };
            // Registering twice would make two revisions: retry only if nothing was sent.
            let r = client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    TaskDefinitionsClient::new(ch).register(req).await
                })
                .await?;
            let defs: Vec<TaskDefinition> = r.task_definition.clone().into_iter().collect();
            show(opts.output, &r, || Ok(taskdefs_table(&defs)))?;
        }
        TaskdefCmd::Ls { family, status } => {
            let client = &client;
            let all = all_pages(|next_token| {
                let req = ListTaskDefinitionsRequest {
                    family: family.clone().unwrap_or_default(),
                    status: status.clone().unwrap_or_default(),
                    max_results: 1000,
                    next_token,
                    stale,
                };
                async move {
                    let r = client
                        .unary(Retry::Safe, &req, |ch, req| async move {
                            TaskDefinitionsClient::new(ch).list(req).await
                        })
                        .await?;
                    Ok((r.task_definitions, r.next_token))
                }
            })
            .await?;
            show(opts.output, &all, || Ok(taskdefs_table(&all)))?;
        }
        TaskdefCmd::Describe { task_definition } => {
            let req = DescribeTaskDefinitionRequest {
                task_definition,
                stale,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TaskDefinitionsClient::new(ch).describe(req).await
                })
                .await?;
            match opts.output {
                Format::Json => crate::output::json(&r)?,
                // The whole definition is the point of describe: print it as YAML-ish JSON.
                Format::Table | Format::Csv => crate::output::json(&r.task_definition)?,
            }
        }
        TaskdefCmd::Deregister { task_definition } => {
            let req = DeregisterTaskDefinitionRequest { task_definition };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    TaskDefinitionsClient::new(ch).deregister(req).await
                })
                .await?;
            let defs: Vec<TaskDefinition> = r.task_definition.clone().into_iter().collect();
            show(opts.output, &r, || Ok(taskdefs_table(&defs)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// tasks

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Start tasks from FAMILY (latest ACTIVE revision) or FAMILY:REVISION.
    Run {
        task_definition: String,
        /// 1..10 tasks.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Makes the call idempotent for 24 h (generated when absent, so the CLI's own
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
        /// Follow the tasks until they stop, showing each state on stderr; the exit status
        /// is then the tasks' exit code (the first non-zero; 1 if one never ran).
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

fn failures_table(failures: &[Failure]) -> Table {
    let mut t = Table::new(&["FAILURE", "ARN", "DETAIL"]);
    for f in failures {
        t.row(vec![f.reason.clone(), f.arn.clone(), f.detail.clone()]);
    }
    t
}

fn parse_strategy(s: &str) -> PlacementStrategy {
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

fn parse_constraint(s: &str) -> PlacementConstraint {
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
    let client = Client::new(&opts.endpoint)?;
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

// ---------------------------------------------------------------------------------------
// agents

#[derive(Subcommand)]
pub enum AgentCmd {
    /// List agents with their capacity and what is allocated.
    Ls,
    /// Show one agent.
    Describe { id: String },
    /// Stop new placements on an agent (its tasks keep running); --undo makes it eligible again.
    Drain {
        id: String,
        #[arg(long)]
        undo: bool,
    },
    /// Register capacity without running an agent process (exercises placement against a
    /// control plane with no workers; tasks placed there are never started).
    Register {
        #[arg(long)]
        id: String,
        /// CPU units (1024 = 1 vCPU).
        #[arg(long)]
        cpu: u32,
        /// MiB.
        #[arg(long)]
        memory: u32,
        /// KEY=VALUE, repeatable (e.g. zone=a).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// A control node's raft address (the agent protocol lives on the raft port).
        #[arg(long, env = "BERTH_CONTROL", default_value = "127.0.0.1:7500")]
        control: String,
    },
}

fn agents_table(agents: &[Agent]) -> Table {
    let mut t = Table::new(&[
        "AGENT",
        "STATUS",
        "CPU ALLOC/TOTAL",
        "CPU FREE",
        "MEM ALLOC/TOTAL",
        "MEM FREE",
        "TASKS",
        "LAST DOWN",
        "ENGINE",
        "ATTRIBUTES",
    ]);
    for a in agents {
        let mut attrs: Vec<String> = a
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attrs.sort();
        t.row(vec![
            a.agent_id.clone(),
            a.status.clone(),
            format!("{}/{}", a.used_cpu, a.cpu),
            a.cpu.saturating_sub(a.used_cpu).to_string(),
            format!("{}/{}", a.used_memory, a.memory),
            a.memory.saturating_sub(a.used_memory).to_string(),
            a.task_count.to_string(),
            last_down(a),
            if a.engine_error.is_empty() {
                "ok".to_string()
            } else {
                format!(
                    "not answering since {}: {}",
                    time(a.engine_error_since_ms),
                    a.engine_error
                )
            },
            attrs.join(","),
        ]);
    }
    t
}

/// When the agent was last DOWN and for how long: `since 12:00:03Z` while it is,
/// `12:00:03Z for 9.2s` once it is back, `-` if never.
fn last_down(a: &Agent) -> String {
    match (a.down_at_ms, a.back_at_ms) {
        (Some(down), None) => format!("since {}", time(Some(down))),
        (Some(down), Some(back)) => format!(
            "{} for {:.1}s",
            time(Some(down)),
            back.saturating_sub(down) as f64 / 1000.0
        ),
        _ => "-".into(),
    }
}

pub async fn agent(opts: &ClientOpts, cmd: AgentCmd) -> Result<ExitCode> {
    let stale = opts.stale;
    match cmd {
        AgentCmd::Ls => {
            let client = Client::new(&opts.endpoint)?;
            let client = &client;
            let all = all_pages(|next_token| {
                let req = ListAgentsRequest {
                    stale,
                    max_results: 1000,
                    next_token,
                };
                async move {
                    let r = client
                        .unary(Retry::Safe, &req, |ch, req| async move {
                            AgentsClient::new(ch).list(req).await
                        })
                        .await?;
                    Ok((r.agents, r.next_token))
                }
            })
            .await?;
            show(opts.output, &all, || Ok(agents_table(&all)))?;
        }
        AgentCmd::Describe { id } => {
            let client = Client::new(&opts.endpoint)?;
            let r = client
                .unary(
                    Retry::Safe,
                    &DescribeAgentRequest {
                        agent_id: id.clone(),
                        stale,
                    },
                    |ch, req| async move { AgentsClient::new(ch).describe(req).await },
                )
                .await?;
            let agents: Vec<Agent> = r.agent.clone().into_iter().collect();
            show(opts.output, &r, || Ok(agents_table(&agents)))?;
        }
        AgentCmd::Drain { id, undo } => {
            let client = Client::new(&opts.endpoint)?;
            let r = client
                .unary(
                    Retry::Safe,
                    &DrainAgentRequest {
                        agent_id: id.clone(),
                        drain: !undo,
                    },
                    |ch, req| async move { AgentsClient::new(ch).drain(req).await },
                )
                .await?;
            let agents: Vec<Agent> = r.agent.clone().into_iter().collect();
            show(opts.output, &r, || Ok(agents_table(&agents)))?;
        }
        AgentCmd::Register {
            id,
            cpu,
            memory,
            attrs,
            control,
        } => {
            let mut attributes = std::collections::HashMap::new();
            for a in &attrs {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--attr `{a}` is not KEY=VALUE"))?;
                attributes.insert(k.to_string(), v.to_string());
            }
            let req = AgentRegisterRequest {
                agent_id: id,
                cpu,
                memory,
                attributes,
                address: String::new(),
            };
            let client = Client::new(&control)?;
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    AgentProtocolClient::new(ch).register(req).await
                })
                .await?;
            match opts.output {
                Format::Json => line(format_args!(
                    "{{\"epoch\": {}, \"revision\": {}}}",
                    r.epoch, r.revision
                ))?,
                Format::Table | Format::Csv => line(format_args!(
                    "registered (epoch {}, revision {})",
                    r.epoch, r.revision
                ))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
