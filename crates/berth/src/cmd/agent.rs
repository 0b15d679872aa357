//! `berth agent ls|describe|drain` (running an agent is `berth agent` without a verb).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::AgentRegisterRequest;
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::*;
use clap::Subcommand;

use crate::client::{all_pages, Client, Retry, Trust};
use crate::output::{line, show, time, Table};
use crate::{ClientOpts, Format};

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
        /// A `berth tls` directory holding ca.pem and agent-ID.pem/.key: the raft port
        /// takes an agent only with its own certificate (or --insecure).
        #[arg(long, env = "BERTH_TLS_DIR", value_name = "DIR")]
        tls_dir: Option<std::path::PathBuf>,
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
        "CPU USED",
        "MEM USED",
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
            a.measured_cpu.to_string(),
            a.measured_memory.to_string(),
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

/// When the agent was last DOWN and for how long: `since 2026-11-30T12:00:03Z` while it is,
/// `2026-11-30T12:00:03Z for 9.2s` once it is back, `-` if never.
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
            let client = Client::for_opts(opts)?;
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
            let client = Client::for_opts(opts)?;
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
            let client = Client::for_opts(opts)?;
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
            tls_dir,
        } => {
            let trust = match (&tls_dir, opts.insecure) {
                (_, true) => Trust::Plain,
                (Some(dir), false) => {
                    let who = berth_tls::Identity::agent(&id)?;
                    Trust::Mutual(
                        berth_tls::grpc::Credentials::load(dir, &who)
                            .map_err(|e| anyhow!("--tls-dir: {}", berth_tls::error_chain(&e)))?,
                    )
                }
                (None, false) => bail!(
                    "the raft port takes an agent only with its certificate: give --tls-dir DIR \
                     holding agent-{id}.pem/.key (`berth tls issue --dir DIR --agent {id}`), \
                     or --insecure for a cluster started with --insecure"
                ),
            };
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
            // The raft port knows agents by their certificates; it takes no token.
            let client = Client::with_trust(&control, &trust, &Default::default())?;
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
