//! The leader's heartbeat monitor. Heartbeats live in the leader's memory only; this loop
//! turns prolonged silence into the one Raft write that matters — the agent is DOWN, its
//! tasks are stopped with `InfrastructureHealth`, its capacity is freed and its epoch
//! retired (so it registers again, and becomes READY, as soon as it is heard from).
//!
//! After any leader change every agent gets a fresh, longer grace before it can be
//! declared DOWN: a new leader has heard nobody yet, and agents need a moment to find it.
//!
//! Every time here is monotonic (`Instant`): a wall-clock step on the leader must not
//! declare agents DOWN early, which would break the margin agents fence themselves by.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::AgentStatus;

use crate::node::{LeaderRequest, Node, WriteRequest};

/// How often silence is checked; a fraction of the TTL, so DOWN is declared within about
/// TTL + this.
const TICK: Duration = Duration::from_millis(250);

/// The decision for one agent: silent past its deadline, and for how long.
fn overdue(
    last_contact: Instant,
    leading_since: Instant,
    now: Instant,
    ttl: Duration,
    grace: Duration,
) -> Option<Duration> {
    let deadline = (last_contact + ttl).max(leading_since + grace);
    (now > deadline).then(|| now.saturating_duration_since(last_contact))
}

pub(crate) async fn run(node: Arc<Node>) {
    // The term this node leads in, and since when.
    let mut leading: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = node.shutdown.wait() => return,
        }
        let term = node.raft.metrics().borrow().current_term;
        if !node.is_leader() {
            leading = None;
            continue;
        }
        let since = match leading {
            Some((t, since)) if t == term => since,
            _ => {
                // A new leadership: what an earlier one heard is not evidence of life now.
                node.heartbeats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                node.engine_reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                let now = Instant::now();
                leading = Some((term, now));
                now
            }
        };
        let now = Instant::now();
        let silent: Vec<(String, Duration)> = {
            let s = node.state.read();
            let mut heard = node.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
            heard.retain(|id, _| s.state.agent(id).is_some());
            s.state
                .agents()
                .filter(|a| a.status != AgentStatus::Down)
                .filter_map(|a| {
                    // A registration this leader has not heard a heartbeat under yet counts
                    // as contact when first seen: an agent that registers and never
                    // heartbeats is DOWN a TTL later, and a heartbeat under an older
                    // registration says nothing of this one.
                    let last = match heard.get(&a.id) {
                        Some((epoch, at)) if *epoch == a.epoch => *at,
                        _ => {
                            heard.insert(a.id.clone(), (a.epoch, now));
                            now
                        }
                    };
                    overdue(last, since, now, node.cfg.agent_ttl, node.cfg.agent_grace)
                        .map(|silent| (a.id.clone(), silent))
                })
                .collect()
        };
        // Engine reports that differ from the agents' records, under their current epoch.
        let engine_changes: Vec<(String, u64, Option<String>)> = {
            let s = node.state.read();
            let mut reports = node
                .engine_reports
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            reports.retain(|id, _| s.state.agent(id).is_some());
            reports
                .iter()
                .filter_map(|(id, (epoch, error))| {
                    let a = s.state.agent(id)?;
                    (a.epoch == *epoch && a.status != AgentStatus::Down && a.engine_error != *error)
                        .then(|| (id.clone(), *epoch, error.clone()))
                })
                .collect()
        };
        for (agent_id, epoch, error) in engine_changes {
            match &error {
                Some(e) => {
                    tracing::warn!(agent = %agent_id, error = %e, "agent reports its container engine does not answer; its service tasks go elsewhere")
                }
                None => {
                    tracing::info!(agent = %agent_id, "agent reports its container engine answers again")
                }
            }
            let req = LeaderRequest::Write(WriteRequest::SetAgentEngine {
                agent_id: agent_id.clone(),
                epoch,
                error,
            });
            if let Err(e) = node.handle_as_leader(req).await {
                tracing::warn!(agent = %agent_id, error = %e, "could not record the agent's engine health");
            }
        }
        for (agent_id, silent_for) in silent {
            tracing::warn!(agent = %agent_id, silent_ms = silent_for.as_millis() as u64, "agent missed its heartbeats; marking it DOWN");
            let req = LeaderRequest::Write(WriteRequest::SetAgentStatus {
                agent_id: agent_id.clone(),
                status: AgentStatus::Down,
                reason: format!("agent {agent_id} stopped heartbeating"),
            });
            if let Err(e) = node.handle_as_leader(req).await {
                tracing::warn!(agent = %agent_id, error = %e, "could not mark the agent DOWN");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);
    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn silence_past_the_ttl_is_overdue_once_the_grace_has_passed() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Within the grace of a new leadership nobody is overdue.
        assert_eq!(overdue(at(0), at(0), at(9_000), TTL, GRACE), None);
        // Past the grace, silence since the leadership began counts.
        assert_eq!(
            overdue(at(0), at(0), at(10_001), TTL, GRACE),
            Some(Duration::from_millis(10_001))
        );
        // A heartbeat 4 s ago keeps an agent alive; 6 s ago does not.
        assert_eq!(overdue(at(16_000), at(0), at(20_000), TTL, GRACE), None);
        assert_eq!(
            overdue(at(14_000), at(0), at(20_000), TTL, GRACE),
            Some(Duration::from_secs(6))
        );
    }
}
