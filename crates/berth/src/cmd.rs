//! The client verbs. Each builds a request, calls the cluster through [`Client`], and
//! prints the answer as a table or JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::*;
use clap::Subcommand;

use crate::client::{all_pages, describe, Client, Retry};
use crate::output::{line, show, Table};
use crate::{ClientOpts, Format};

pub mod agent;
pub mod events;
pub mod namespace;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod task;
pub mod tls;
pub mod token;
pub mod top;
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
    let client = Client::for_opts(opts)?;
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
    let client = Client::for_opts(opts)?;
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
