//! `berth service …`: long-running applications kept at a desired count.

use std::process::ExitCode;

use anyhow::Result;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use clap::Subcommand;

use super::task::{failures_table, parse_constraint, parse_strategy};
use super::PARTIAL;
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
        #[command(flatten)]
        deployment: DeploymentFlags,
        /// Follow the first deployment until its tasks run (exit 0) or it fails (exit 1),
        /// showing its progress on stderr.
        #[arg(long)]
        wait: bool,
    },
    /// Change a service: its desired count, its task definition (a rolling deployment),
    /// or how deployments replace tasks.
    Update {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        desired: Option<i64>,
        /// FAMILY (its latest ACTIVE revision) or FAMILY:REVISION: rolls the service's
        /// tasks over to it.
        #[arg(long = "taskdef")]
        task_definition: Option<String>,
        /// Replace every task with a fresh one of the same revision.
        #[arg(long)]
        force_new_deployment: bool,
        #[command(flatten)]
        deployment: DeploymentFlags,
        /// Follow the deployment until it is COMPLETED (exit 0) or FAILED or rolled back
        /// (exit 1), showing its progress on stderr.
        #[arg(long)]
        wait: bool,
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
    /// Target-tracking autoscaling: the desired count follows the tasks' measured average
    /// CPU or memory utilization toward a target, within --min and --max.
    Autoscale(AutoscaleArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(["cpu_target", "memory_target", "off"]).required(true)))]
pub struct AutoscaleArgs {
    name: String,
    /// Average CPU utilization to keep, percent of what the tasks reserve (1..100).
    #[arg(long, value_name = "PERCENT", requires_all = ["min", "max"])]
    cpu_target: Option<u32>,
    /// Average memory utilization to keep, percent of the tasks' memory (1..100).
    #[arg(long, value_name = "PERCENT", requires_all = ["min", "max"])]
    memory_target: Option<u32>,
    #[arg(long)]
    min: Option<u32>,
    #[arg(long)]
    max: Option<u32>,
    /// After a scale-out, no more scaling for this long (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    scale_out_cooldown: Option<std::time::Duration>,
    /// After a scale-in, no more scale-in for this long (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    scale_in_cooldown: Option<std::time::Duration>,
    /// Scale out only.
    #[arg(long)]
    disable_scale_in: bool,
    /// Remove the service's autoscaling.
    #[arg(long)]
    off: bool,
}

impl AutoscaleArgs {
    fn policy(&self) -> Option<ScalingPolicy> {
        let (metric, target) = match (self.cpu_target, self.memory_target) {
            (Some(t), _) => ("CPU", t),
            (None, Some(t)) => ("MEMORY", t),
            (None, None) => return None,
        };
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        Some(ScalingPolicy {
            metric: metric.into(),
            target_percent: target,
            min_count: self.min.unwrap_or(0),
            max_count: self.max.unwrap_or(0),
            scale_out_cooldown_ms: ms(self.scale_out_cooldown),
            scale_in_cooldown_ms: ms(self.scale_in_cooldown),
            disable_scale_in: self.disable_scale_in,
        })
    }
}

/// ECS's deploymentConfiguration; on update, flags not given keep the service's.
#[derive(clap::Args)]
pub struct DeploymentFlags {
    /// Healthy tasks kept during a deployment, percent of desired, rounded up (default 100).
    #[arg(long, value_name = "PERCENT")]
    min_healthy_percent: Option<u32>,
    /// Tasks allowed at once during a deployment, percent of desired, rounded down
    /// (default 200).
    #[arg(long, value_name = "PERCENT")]
    max_percent: Option<u32>,
    /// Fail a deployment after clamp(ceil(desired / 2), 3, 200) failed tasks.
    #[arg(long)]
    circuit_breaker: bool,
    /// With --circuit-breaker: a failed deployment returns to the last completed one.
    #[arg(long)]
    rollback: bool,
    /// How long a new task must stay RUNNING (and HEALTHY, where checked) before it counts
    /// as healthy, e.g. 5s, 500ms, 2m (default 5s, at most 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_min_healthy_time)]
    min_healthy_time: Option<u32>,
}

fn parse_min_healthy_time(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; give a duration such as 5s, 500ms or 2m"))?;
    u32::try_from(d.as_millis()).map_err(|_| format!("{s} is too long; at most 10m"))
}

impl DeploymentFlags {
    fn to_wire(&self) -> Option<DeploymentConfiguration> {
        let given = self.min_healthy_percent.is_some()
            || self.max_percent.is_some()
            || self.min_healthy_time.is_some()
            || self.circuit_breaker
            || self.rollback;
        given.then(|| DeploymentConfiguration {
            minimum_healthy_percent: self.min_healthy_percent,
            maximum_percent: self.max_percent,
            circuit_breaker: (self.circuit_breaker || self.rollback).then_some(true),
            rollback: self.rollback.then_some(true),
            min_healthy_time_ms: self.min_healthy_time,
        })
    }
}

fn deployments_table(s: &Service) -> Table {
    let mut t = Table::new(&[
        "DEPLOYMENT",
        "STATUS",
        "DEFINITION",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "FAILED",
        "ROLLOUT",
        "REASON",
    ]);
    for d in &s.deployments {
        t.row(vec![
            d.id.clone(),
            d.status.clone(),
            d.task_definition.clone(),
            d.desired_count.to_string(),
            d.running_count.to_string(),
            d.pending_count.to_string(),
            d.failed_tasks.to_string(),
            d.rollout_state.clone(),
            d.rollout_state_reason.clone(),
        ]);
    }
    t
}

fn service_tasks_table(s: &Service) -> Table {
    let mut t = Table::new(&[
        "TASK",
        "AGENT",
        "DEPLOYMENT",
        "STATUS",
        "HEALTH",
        "ENDPOINTS",
    ]);
    for x in &s.tasks {
        t.row(vec![
            x.task_id.clone(),
            x.agent_id.clone(),
            x.deployment_id.clone(),
            x.last_status.clone(),
            x.health_status.clone(),
            x.endpoints.join(" "),
        ]);
    }
    t
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
    let client = Client::for_opts(opts)?;
    let stale = opts.stale;
    match cmd {
        ServiceCmd::Create {
            name,
            task_definition,
            desired,
            strategies,
            constraints,
            client_token,
            deployment,
            wait,
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
                deployment_configuration: deployment.to_wire(),
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ServicesClient::new(ch).create(req).await
                })
                .await?;
            let services: Vec<Service> = r.service.into_iter().collect();
            show(opts.output, &services, || Ok(services_table(&services)))?;
            if wait {
                if let Some(s) = services.first() {
                    return super::wait::deployment(&client, &s.service_name, stale).await;
                }
            }
        }
        ServiceCmd::Update {
            name,
            desired,
            task_definition,
            force_new_deployment,
            deployment,
            wait,
        } => {
            let req = UpdateServiceRequest {
                service: name,
                desired_count: desired,
                task_definition,
                force_new_deployment,
                deployment_configuration: deployment.to_wire(),
            };
            // A forced deployment sent twice would replace every task twice.
            let retry = if force_new_deployment {
                Retry::OnlyIfUnsent
            } else {
                Retry::Safe
            };
            let r = client
                .unary(retry, &req, |ch, req| async move {
                    ServicesClient::new(ch).update(req).await
                })
                .await?;
            let services: Vec<Service> = r.service.into_iter().collect();
            show(opts.output, &services, || Ok(services_table(&services)))?;
            if wait {
                if let Some(s) = services.first() {
                    return super::wait::deployment(&client, &s.service_name, stale).await;
                }
            }
        }
        ServiceCmd::Autoscale(a) => {
            let req = PutScalingPolicyRequest {
                service_name: a.name.clone(),
                policy: a.policy(),
            };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    ServicesClient::new(ch).put_scaling_policy(req).await
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
                if let Some(c) = &s.deployment_configuration {
                    line(format_args!(
                        "deployments: minimum healthy {}% for {}, maximum {}%, circuit breaker {}{}",
                        c.minimum_healthy_percent.unwrap_or(100),
                        humantime::format_duration(std::time::Duration::from_millis(
                            c.min_healthy_time_ms.map_or(5_000, u64::from)
                        )),
                        c.maximum_percent.unwrap_or(200),
                        if c.circuit_breaker.unwrap_or(false) {
                            "on"
                        } else {
                            "off"
                        },
                        if c.rollback.unwrap_or(false) {
                            " with rollback"
                        } else {
                            ""
                        },
                    ))?;
                }
                if let Some(p) = &s.scaling_policy {
                    line(format_args!(
                        "autoscaling: average {} toward {}%, {}..{} tasks, cooldowns out {} / in {}{}{}",
                        p.metric,
                        p.target_percent,
                        p.min_count,
                        p.max_count,
                        humantime::format_duration(std::time::Duration::from_millis(
                            p.scale_out_cooldown_ms.unwrap_or(0)
                        )),
                        humantime::format_duration(std::time::Duration::from_millis(
                            p.scale_in_cooldown_ms.unwrap_or(0)
                        )),
                        if p.disable_scale_in { ", scale-in off" } else { "" },
                        match s.last_scale_out_at_ms.max(s.last_scale_in_at_ms) {
                            Some(at) => format!(", last scaled {}", time(Some(at))),
                            None => String::new(),
                        },
                    ))?;
                }
                line(format_args!(""))?;
                deployments_table(s).print()?;
                line(format_args!(""))?;
                service_tasks_table(s).print()?;
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

#[cfg(test)]
mod tests {
    use super::parse_min_healthy_time;

    #[test]
    fn min_healthy_time_takes_human_durations_in_milliseconds() {
        assert_eq!(parse_min_healthy_time("5s"), Ok(5_000));
        assert_eq!(parse_min_healthy_time("0s"), Ok(0));
        assert_eq!(parse_min_healthy_time("1m 500ms"), Ok(60_500));
        let e = parse_min_healthy_time("5").unwrap_err();
        assert!(e.contains("such as 5s"), "{e}");
        assert!(parse_min_healthy_time("100days").is_err());
    }
}
