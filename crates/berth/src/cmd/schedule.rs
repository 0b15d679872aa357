//! `berth schedule …`: task definitions launched on a cron, a rate or once, each scheduled
//! time exactly once.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Result};
use berth_proto::v1::schedules_client::SchedulesClient;
use berth_proto::v1::*;
use clap::Subcommand;

use super::task::{parse_constraint, parse_strategy};
use crate::client::{all_pages, Client, Retry};
use crate::output::{show, time, Table};
use crate::ClientOpts;

#[derive(clap::Args)]
pub struct ScheduleArgs {
    name: String,
    /// FAMILY (its latest ACTIVE revision at each run) or FAMILY:REVISION.
    #[arg(long = "taskdef")]
    task_definition: String,
    /// cron(MIN HOUR DOM MONTH DOW YEAR) as EventBridge, a 5-field cron, rate(N
    /// seconds|minutes|hours|days) or at(YYYY-MM-DDTHH:MM:SS).
    #[arg(long)]
    expression: String,
    /// IANA zone the expression is read in (default UTC).
    #[arg(long, default_value = "")]
    timezone: String,
    /// No time before this runs (RFC 3339, e.g. 2026-12-24T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    start_at: Option<u64>,
    /// No time after this runs.
    #[arg(long, value_parser = parse_time)]
    end_at: Option<u64>,
    /// forbid (skip a time while the last run is alive), allow, replace.
    #[arg(long, default_value = "forbid")]
    overlap: String,
    /// Times missed while no leader could fire: latest, all, none.
    #[arg(long, default_value = "latest")]
    catch_up: String,
    /// Missed times older than this are never run (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    catch_up_window: Option<Duration>,
    /// Attempts after a failed first (a task that did not start, or whose essential
    /// container exited non-zero), with exponential back-off.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// No attempt starts later than this after its scheduled time (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    retry_max_age: Option<Duration>,
    /// Each run starts up to this long after its time.
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<Duration>,
    #[command(flatten)]
    timeouts: super::task::TimeoutFlags,
    /// CONTAINER:NAME=VALUE added to a container's environment; repeat.
    #[arg(long = "env", value_name = "CONTAINER:NAME=VALUE")]
    env: Vec<String>,
    /// binpack[:cpu|memory], spread:instanceId, spread:attribute:NAME, random; repeat to chain.
    #[arg(long = "strategy")]
    strategies: Vec<String>,
    /// distinctInstance, or memberOf:EXPRESSION; repeat to combine.
    #[arg(long = "constraint")]
    constraints: Vec<String>,
}

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Launch a task definition at each time an expression names.
    Create(ScheduleArgs),
    /// Replace a schedule's definition (its runs and last fired time stay).
    Update(ScheduleArgs),
    /// List schedules.
    Ls,
    /// A schedule and its next time.
    Describe {
        name: String,
    },
    /// Stop firing (times still come due and are recorded SKIPPED).
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Forget a schedule and its runs; tasks it started run on.
    Delete {
        name: String,
    },
    /// Every recorded scheduled time with its outcome, newest first.
    Runs {
        name: String,
    },
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e}; give an RFC 3339 time such as 2026-12-24T00:00:00Z"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the time is before 1970".to_string())?;
    Ok(ms.as_millis() as u64)
}

/// `CONTAINER:NAME=VALUE` flags as overrides, one per container.
fn overrides(env: &[String]) -> Result<Vec<ContainerOverride>> {
    let mut out: Vec<ContainerOverride> = Vec::new();
    for e in env {
        let Some((container, kv)) = e.split_once(':') else {
            bail!("--env {e:?}: give CONTAINER:NAME=VALUE");
        };
        let Some((name, value)) = kv.split_once('=') else {
            bail!("--env {e:?}: give CONTAINER:NAME=VALUE");
        };
        let kv = KeyValue {
            name: name.into(),
            value: value.into(),
        };
        match out.iter_mut().find(|o| o.name == container) {
            Some(o) => o.environment.push(kv),
            None => out.push(ContainerOverride {
                name: container.into(),
                command: vec![],
                environment: vec![kv],
            }),
        }
    }
    Ok(out)
}

impl ScheduleArgs {
    fn request(self) -> Result<CreateScheduleRequest> {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        Ok(CreateScheduleRequest {
            overrides: overrides(&self.env)?,
            name: self.name,
            task_definition: self.task_definition,
            expression: self.expression,
            timezone: self.timezone,
            start_at_ms: self.start_at.unwrap_or(0),
            end_at_ms: self.end_at.unwrap_or(0),
            overlap: self.overlap,
            catch_up: self.catch_up,
            catch_up_window_ms: ms(self.catch_up_window),
            retries: self.retries,
            retry_max_age_ms: ms(self.retry_max_age),
            jitter_ms: ms(self.jitter).unwrap_or(0),
            placement_strategy: self.strategies.iter().map(|s| parse_strategy(s)).collect(),
            placement_constraints: self
                .constraints
                .iter()
                .map(|s| parse_constraint(s))
                .collect(),
            client_token: String::new(),
            timeouts: self.timeouts.to_wire(),
        })
    }
}

fn schedules_table(v: &[Schedule]) -> Table {
    let mut t = Table::new(&[
        "SCHEDULE",
        "STATE",
        "DEFINITION",
        "EXPRESSION",
        "ZONE",
        "OVERLAP",
        "LAST",
        "NEXT",
        "LIVE",
    ]);
    for s in v {
        t.row(vec![
            s.name.clone(),
            s.state.clone(),
            s.task_definition.clone(),
            s.expression.clone(),
            if s.timezone.is_empty() {
                "UTC".into()
            } else {
                s.timezone.clone()
            },
            s.overlap.clone(),
            time(Some(s.last_fired_ms)),
            time(Some(s.next_fire_ms)),
            s.live_runs.to_string(),
        ]);
    }
    t
}

fn runs_table(v: &[ScheduleRun]) -> Table {
    let mut t = Table::new(&["RUN", "SCHEDULED", "STATUS", "ATTEMPTS", "TASK", "REASON"]);
    for r in v {
        let scheduled = if r.count > 1 {
            format!(
                "{} .. {} ({} times)",
                time(Some(r.scheduled_time_ms)),
                time(Some(r.last_time_ms)),
                r.count
            )
        } else {
            time(Some(r.scheduled_time_ms))
        };
        let last = r.attempts.last();
        let reason = if !r.reason.is_empty() {
            r.reason.clone()
        } else if r.retry_at_ms > 0 {
            format!(
                "{}; retry at {}",
                last.map(|a| a.failure.as_str()).unwrap_or_default(),
                time(Some(r.retry_at_ms))
            )
        } else {
            String::new()
        };
        t.row(vec![
            r.run_id.clone(),
            scheduled,
            r.status.clone(),
            r.attempts.len().to_string(),
            last.map(|a| a.task_id.clone())
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "-".into()),
            reason,
        ]);
    }
    t
}

pub async fn schedule(opts: &ClientOpts, cmd: ScheduleCmd) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    // Every verb but `ls` and `runs` answers one schedule.
    let r: ScheduleResponse = match cmd {
        ScheduleCmd::Create(args) => {
            let mut req = args.request()?;
            // Generated once, so the CLI's own retries never answer ALREADY_EXISTS for the
            // schedule they made.
            req.client_token = format!("cli-{:032x}", rand::random::<u128>());
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).create(req).await
                })
                .await?
        }
        ScheduleCmd::Update(args) => {
            let req = args.request()?;
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).update(req).await
                })
                .await?
        }
        ScheduleCmd::Describe { name } => {
            let req = DescribeScheduleRequest { name };
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).describe(req).await
                })
                .await?
        }
        ScheduleCmd::Pause { name } => {
            let req = ScheduleNameRequest { name };
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).pause(req).await
                })
                .await?
        }
        ScheduleCmd::Resume { name } => {
            let req = ScheduleNameRequest { name };
            client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).resume(req).await
                })
                .await?
        }
        // A second delete would answer NOT_FOUND for the schedule the first one deleted.
        ScheduleCmd::Delete { name } => {
            let req = ScheduleNameRequest { name };
            client
                .unary(Retry::OnlyIfUnsent, &req, |ch, req| async move {
                    SchedulesClient::new(ch).delete(req).await
                })
                .await?
        }
        ScheduleCmd::Ls => {
            let client = &client;
            let all = all_pages(|next_token| {
                let req = ListSchedulesRequest {
                    max_results: 1000,
                    next_token,
                };
                async move {
                    let r = client
                        .unary(Retry::Safe, &req, |ch, req| async move {
                            SchedulesClient::new(ch).list(req).await
                        })
                        .await?;
                    Ok((r.schedules, r.next_token))
                }
            })
            .await?;
            show(opts.output, &all, || Ok(schedules_table(&all)))?;
            return Ok(ExitCode::SUCCESS);
        }
        ScheduleCmd::Runs { name } => {
            let req = ScheduleRunsRequest { name };
            let r = client
                .unary(Retry::Safe, &req, |ch, req| async move {
                    SchedulesClient::new(ch).runs(req).await
                })
                .await?;
            show(opts.output, &r.runs, || Ok(runs_table(&r.runs)))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let v: Vec<Schedule> = r.schedule.into_iter().collect();
    show(opts.output, &v, || Ok(schedules_table(&v)))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_flags_become_one_override_per_container() {
        let o = overrides(&["app:A=1".into(), "app:B=x=y".into(), "side:C=".into()]).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].environment[1].value, "x=y");
        assert_eq!(o[1].environment[0].name, "C");
        assert!(overrides(&["A=1".into()]).is_err());
    }

    #[test]
    fn times_parse_as_rfc3339() {
        assert_eq!(parse_time("2026-06-01T08:00:00Z"), Ok(1_780_300_800_000));
        assert!(parse_time("tomorrow").is_err());
    }
}
