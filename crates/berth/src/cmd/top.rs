//! `berth top`: the cluster on one screen — leader and term, every agent with bars for what
//! its tasks reserve and what they use, tasks by state, services and their deployments —
//! refreshed in place in a terminal, or printed once.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use crate::client::{Client, Retry};
use crate::output::{time, Table, TASK_STATES};
use crate::ClientOpts;

#[derive(clap::Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2)]
    interval: u64,
    /// Print one screen and exit (also what happens when stdout is not a terminal).
    #[arg(long)]
    once: bool,
}

/// Tasks counted per screen at most: a page of this many, the rest said to be left out.
const TASKS_COUNTED: u32 = 1000;
const BAR: usize = 20;

pub async fn top(opts: &ClientOpts, a: TopArgs) -> Result<ExitCode> {
    let client = Client::for_opts(opts)?;
    let once = a.once || !std::io::stdout().is_terminal();
    loop {
        let text = screen(&client, opts.stale).await?;
        let mut out = std::io::stdout().lock();
        if once {
            out.write_all(text.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        // Home, clear, draw: the screen is replaced in place.
        write!(out, "\x1b[H\x1b[2J{text}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.interval.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `[#####               ]`: `part` of `whole`, in `BAR` cells.
pub fn bar(part: u32, whole: u32) -> String {
    let filled = if whole == 0 {
        0
    } else {
        ((u64::from(part.min(whole)) * BAR as u64).div_ceil(u64::from(whole))) as usize
    };
    format!("[{}{}]", "#".repeat(filled), " ".repeat(BAR - filled))
}

async fn screen(client: &Client, stale: bool) -> Result<String> {
    let status = client
        .unary(
            Retry::Safe,
            &ClusterStatusRequest {},
            |ch, req| async move { ClusterClient::new(ch).status(req).await },
        )
        .await?;
    let agents = client
        .unary(
            Retry::Safe,
            &ListAgentsRequest {
                stale,
                max_results: 1000,
                next_token: String::new(),
            },
            |ch, req| async move { AgentsClient::new(ch).list(req).await },
        )
        .await?;
    let tasks = client
        .unary(
            Retry::Safe,
            &ListTasksRequest {
                max_results: TASKS_COUNTED,
                stale,
                ..Default::default()
            },
            |ch, req| async move { TasksClient::new(ch).list(req).await },
        )
        .await?;
    let services = client
        .unary(
            Retry::Safe,
            &ListServicesRequest {
                max_results: 1000,
                next_token: String::new(),
                include_inactive: false,
                stale,
            },
            |ch, req| async move { ServicesClient::new(ch).list(req).await },
        )
        .await?;
    Ok(render(
        &status,
        &agents.agents,
        &tasks.tasks,
        !tasks.next_token.is_empty(),
        &services.services,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    ))
}

/// The screen as text, from what the cluster answered.
pub fn render(
    status: &ClusterStatusResponse,
    agents: &[Agent],
    tasks: &[Task],
    more_tasks: bool,
    services: &[Service],
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let leader = status.members.iter().find(|m| m.id == status.leader_id);
    let voters = status.members.iter().filter(|m| m.voter).count();
    out.push_str(&format!(
        "berth top  {}  leader {}  revision {}  members {} ({} voters)\n\n",
        time(Some(now_ms)),
        match leader {
            Some(m) => format!("node {} (term {})", m.id, m.term),
            None => "none".to_string(),
        },
        status.revision,
        status.members.len(),
        voters
    ));

    let mut t = Table::new(&[
        "AGENT",
        "STATUS",
        "CPU RESERVED",
        "CPU USED",
        "MEM RESERVED",
        "MEM USED",
        "TASKS",
    ]);
    for a in agents {
        t.row(vec![
            a.agent_id.clone(),
            a.status.clone(),
            format!("{} {}/{}", bar(a.used_cpu, a.cpu), a.used_cpu, a.cpu),
            format!("{} {}", bar(a.measured_cpu, a.cpu), a.measured_cpu),
            format!(
                "{} {}/{} MiB",
                bar(a.used_memory, a.memory),
                a.used_memory,
                a.memory
            ),
            format!(
                "{} {} MiB",
                bar(a.measured_memory, a.memory),
                a.measured_memory
            ),
            a.task_count.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');

    let counts: Vec<String> = TASK_STATES
        .iter()
        .map(|s| {
            let n = tasks.iter().filter(|t| t.last_status == *s).count();
            format!("{s} {n}")
        })
        .collect();
    out.push_str(&format!(
        "tasks{}  {}\n\n",
        if more_tasks {
            format!(" (first {TASKS_COUNTED})")
        } else {
            String::new()
        },
        counts.join("  ")
    ));

    let mut t = Table::new(&[
        "SERVICE",
        "DEFINITION",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "DEPLOYMENT",
        "ROLLOUT",
        "AUTOSCALING",
    ]);
    for s in services {
        let primary = s.deployments.iter().find(|d| d.status == "PRIMARY");
        t.row(vec![
            s.service_name.clone(),
            s.task_definition.clone(),
            s.desired_count.to_string(),
            s.running_count.to_string(),
            s.pending_count.to_string(),
            primary.map(|d| d.id.clone()).unwrap_or_default(),
            primary.map(|d| d.rollout_state.clone()).unwrap_or_default(),
            s.scaling_policy
                .as_ref()
                .map(|p| {
                    format!(
                        "{} {}% {}..{}",
                        p.metric, p.target_percent, p.min_count, p.max_count
                    )
                })
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion_and_never_overflow() {
        assert_eq!(bar(0, 100), format!("[{}]", " ".repeat(20)));
        assert_eq!(
            bar(50, 100),
            format!("[{}{}]", "#".repeat(10), " ".repeat(10))
        );
        assert_eq!(bar(1, 100), format!("[#{}]", " ".repeat(19)));
        assert_eq!(bar(300, 100), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(5, 0), format!("[{}]", " ".repeat(20)));
    }
}
