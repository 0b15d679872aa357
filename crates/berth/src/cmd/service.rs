//! `berth service …`: long-running applications kept at a desired count.

use std::process::ExitCode;

use anyhow::Result;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use clap::Subcommand;

use super::{failures_table, parse_constraint, parse_strategy, tasks_table, PARTIAL};
use crate::client::{all_pages, Client, Retry};
use crate::output::{line, show, time, Table};
use crate::{ClientOpts, Format};

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Keep DESIRED tasks of a task definition running.
    Create {
        name: String,
        /// FAMILY (its latest ACTIVE revision, resolved now) or FAMILY:REVISION.
        #[arg(long = "taskdef")]
        task_definition: String,
        /// 0..1000 tasks.
        #[arg(long, allow_negative_numbers = true)]
        desired: i64,
        /// binpack[:cpu|memory], spread:instanceId, spread:attribute:NAME, random; repeat to
        /// chain. Default: spread:attribute:zone, then binpack:memory.
        #[arg(long = "strategy")]
        strategies: Vec<String>,
        /// distinctInstance, or memberOf:EXPRESSION; repeat to combine.
        #[arg(long = "constraint")]
        constraints: Vec<String>,
        /// Makes the call idempotent (generated when absent, so the CLI's own retries
        /// never answer ALREADY_EXISTS for the service they created).
        #[arg(long)]
        client_token: Option<String>,
    },
    /// Change a service's desired count.
    Update {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        desired: i64,
    },
    /// Delete a service: its tasks are stopped. A desired count above 0 needs --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// List services.
    Ls {
        /// Deleted (INACTIVE) services too.
        #[arg(long)]
        all: bool,
    },
    /// A service, its tasks and its recent events.
    Describe { name: String },
}

fn services_table(services: &[Service]) -> Table {
    let mut t = Table::new(&[
        "SERVICE",
        "STATUS",
        "DEFINITION",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "CREATED",
    ]);
    for s in services {
        t.row(vec![
            s.service_name.clone(),
            s.status.clone(),
            s.task_definition.clone(),
            s.desired_count.to_string(),
            s.running_count.to_string(),
            s.pending_count.to_string(),
            time(Some(s.created_at_ms)),
        ]);
    }
    t
}

/// Shown by describe in table form; the JSON answer has all of them.
const EVENTS_SHOWN: usize = 10;

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Described {
    service: Service,
    tasks: Vec<Task>,
}

pub async fn service(opts: &ClientOpts, cmd: ServiceCmd) -> Result<ExitCode> {
    let client = Client::new(&opts.endpoint)?;
    let stale = opts.stale;
    match cmd {
        ServiceCmd::Create {
            name,
            task_definition,
            desired,
            strategies,
            constraints,
            client_token,
        } => {
            let token =
                client_token.unwrap_or_else(|| format!("cli-{:032x}", rand::random::<u128>()));
            let req = CreateServiceRequest {
                service_name: name,
                task_definition,
                desired_count: desired,
                client_token: token,
                placement_strategy: strategies.iter().map(|s| parse_strategy(s)).collect(),
                placement_constraints: constraints.iter().map(|s| parse_constraint(s)).collect(),
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ServicesClient::new(ch).create(req).await
                })
                .await?;
            let services: Vec<Service> = r.service.into_iter().collect();
            show(opts.output, &services, || Ok(services_table(&services)))?;
        }
        ServiceCmd::Update { name, desired } => {
            let req = UpdateServiceRequest {
                service: name,
                desired_count: Some(desired),
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ServicesClient::new(ch).update(req).await
                })
                .await?;
            let services: Vec<Service> = r.service.into_iter().collect();
            show(opts.output, &services, || Ok(services_table(&services)))?;
        }
        ServiceCmd::Delete { name, force } => {
            let req = DeleteServiceRequest {
                service: name,
                force,
            };
            let r = client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    ServicesClient::new(ch).delete(req).await
                })
                .await?;
            let services: Vec<Service> = r.service.into_iter().collect();
            show(opts.output, &services, || Ok(services_table(&services)))?;
        }
        ServiceCmd::Ls { all } => {
            let client = &client;
            let all = all_pages(|next_token| {
                let req = ListServicesRequest {
                    max_results: 1000,
                    next_token,
                    include_inactive: all,
                    stale,
                };
                async move {
                    let r = client
                        .unary(Retry::Safe, &req, |ch, req| async move {
                            ServicesClient::new(ch).list(req).await
                        })
                        .await?;
                    Ok((r.services, r.next_token))
                }
            })
            .await?;
            show(opts.output, &all, || Ok(services_table(&all)))?;
        }
        ServiceCmd::Describe { name } => {
            let req = DescribeServicesRequest {
                services: vec![name.clone()],
                stale,
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ServicesClient::new(ch).describe(req).await
                })
                .await?;
            let Some(service) = r.services.into_iter().next() else {
                if opts.output == Format::Table {
                    failures_table(&r.failures).print()?;
                } else {
                    crate::output::json(&r.failures)?;
                }
                return Ok(ExitCode::from(PARTIAL));
            };
            let client = &client;
            let group = format!("service:{}", service.service_name);
            let tasks = all_pages(|next_token| {
                let req = ListTasksRequest {
                    desired_status: "RUNNING".into(),
                    group: group.clone(),
                    max_results: 1000,
                    next_token,
                    stale,
                    ..Default::default()
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
            let d = Described { service, tasks };
            show(opts.output, &d, || {
                let s = &d.service;
                line(format_args!(
                    "service {}  {}  {}  desired {}  running {}  pending {}",
                    s.service_name,
                    s.status,
                    s.task_definition,
                    s.desired_count,
                    s.running_count,
                    s.pending_count
                ))?;
                let strategy: Vec<String> = s
                    .placement_strategy
                    .iter()
                    .map(|p| {
                        if p.field.is_empty() {
                            p.r#type.clone()
                        } else {
                            format!("{}:{}", p.r#type, p.field)
                        }
                    })
                    .collect();
                line(format_args!("placement {}", strategy.join(", ")))?;
                line(format_args!(""))?;
                tasks_table(&d.tasks).print()?;
                line(format_args!(""))?;
                let mut events = Table::new(&["TIME", "EVENT"]);
                for e in s.events.iter().take(EVENTS_SHOWN) {
                    events.row(vec![time(Some(e.at_ms)), e.message.clone()]);
                }
                Ok(events)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
