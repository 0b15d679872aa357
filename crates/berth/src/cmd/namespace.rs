//! `berth namespace`: namespaces and their quotas.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use berth_proto::v1::namespaces_client::NamespacesClient;
use berth_proto::v1::*;
use clap::{Args, Subcommand};

use crate::client::{Client, Retry};
use crate::output::{show, time, Table};
use crate::ClientOpts;

#[derive(Subcommand)]
pub enum NamespaceCmd {
    /// Make a namespace, with a quota if given.
    Create {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// The namespaces your token may use, with their quotas and what their tasks hold.
    Ls,
    /// Set a namespace's quota: the limits given, and none on what is left out (so with
    /// no flag at all, no quota). A quota below what the namespace holds stops nothing; it
    /// refuses new tasks until the namespace is back under it.
    SetQuota {
        name: String,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// Delete an empty namespace (no task definitions, tasks or services; stopped tasks
    /// are kept an hour).
    Delete { name: String },
}

/// Limits on what a namespace's running tasks hold at once.
#[derive(Args)]
pub struct QuotaArgs {
    /// vCPU (0.25, 4, …).
    #[arg(long)]
    vcpu: Option<f64>,
    /// Memory: MiB, or with a unit (`8 GB`, `512MiB`).
    #[arg(long)]
    memory: Option<String>,
    /// Tasks that hold capacity (placed and not yet stopped).
    #[arg(long)]
    tasks: Option<u64>,
}

impl QuotaArgs {
    fn to_wire(&self) -> Result<NamespaceQuota> {
        let cpu = match self.vcpu {
            None => None,
            Some(v) if (0.0..=1e9).contains(&v) => Some((v * 1024.0).round() as u64),
            Some(v) => return Err(anyhow!("--vcpu {v} is not a number of vCPU")),
        };
        let memory = match &self.memory {
            None => None,
            Some(m) => Some(u64::from(
                berth_core::size::parse_units(m).map_err(|e| anyhow!("--memory {e}"))?,
            )),
        };
        Ok(NamespaceQuota {
            cpu,
            memory,
            tasks: self.tasks,
        })
    }
}

fn limit(v: Option<u64>, show: impl Fn(u64) -> String) -> String {
    v.map(show).unwrap_or_else(|| "-".into())
}

fn vcpu(units: u64) -> String {
    format!("{}", units as f64 / 1024.0)
}

fn table(namespaces: &[Namespace]) -> Table {
    let mut t = Table::new(&["NAME", "VCPU", "MEMORY (MiB)", "TASKS", "CREATED"]);
    for n in namespaces {
        let q = n.quota.unwrap_or_default();
        t.row(vec![
            n.name.clone(),
            format!("{} / {}", vcpu(n.used_cpu), limit(q.cpu, vcpu)),
            format!("{} / {}", n.used_memory, limit(q.memory, |m| m.to_string())),
            format!("{} / {}", n.used_tasks, limit(q.tasks, |m| m.to_string())),
            if n.created_at_ms == 0 {
                "-".into()
            } else {
                time(Some(n.created_at_ms))
            },
        ]);
    }
    t
}

pub async fn namespace(opts: &ClientOpts, cmd: NamespaceCmd) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    let r = match cmd {
        NamespaceCmd::Create { name, quota } => {
            let req = CreateNamespaceRequest {
                name,
                quota: Some(quota.to_wire()?),
            };
            client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    NamespacesClient::new(ch).create(req).await
                })
                .await?
        }
        NamespaceCmd::Ls => {
            let req = ListNamespacesRequest { stale: opts.stale };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    NamespacesClient::new(ch).list(req).await
                })
                .await?;
            show(opts.output, &r, || Ok(table(&r.namespaces)))?;
            return Ok(ExitCode::SUCCESS);
        }
        NamespaceCmd::SetQuota { name, quota } => {
            let req = SetNamespaceQuotaRequest {
                name,
                quota: Some(quota.to_wire()?),
            };
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    NamespacesClient::new(ch).set_quota(req).await
                })
                .await?
        }
        NamespaceCmd::Delete { name } => {
            let req = DeleteNamespaceRequest { name };
            client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    NamespacesClient::new(ch).delete(req).await
                })
                .await?
        }
    };
    let shown: Vec<Namespace> = r.namespace.clone().into_iter().collect();
    show(opts.output, &r, || Ok(table(&shown)))?;
    Ok(ExitCode::SUCCESS)
}
