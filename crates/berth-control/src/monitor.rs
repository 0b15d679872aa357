//! The leader's heartbeat monitor. Heartbeats live in the leader's memory only; this loop
//! turns prolonged silence into the one Raft write that matters — the agent is DOWN, its
//! tasks are stopped with `InfrastructureHealth` and its capacity is freed.
//!
//! After any leader change every agent gets a fresh, longer grace before it can be
//! declared DOWN: a new leader has heard nobody yet, and agents need a moment to find it.

use std::sync::Arc;
use std::time::Duration;

use berth_core::AgentStatus;

use crate::node::{now_ms, LeaderRequest, Node, WriteRequest};

/// How often silence is checked; a fraction of the TTL, so DOWN is declared within about
/// TTL + this.
const TICK: Duration = Duration::from_millis(250);

pub(crate) async fn run(node: Arc<Node>) {
    // Wall-clock millis at which this node last became leader, and the term it was for.
    let mut leading: Option<(u64, u64)> = None;
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
                let now = now_ms();
                leading = Some((term, now));
                now
            }
        };
        let now = now_ms();
        let ttl = node.cfg.agent_ttl.as_millis() as u64;
        let grace = node.cfg.agent_grace.as_millis() as u64;
        let silent: Vec<(String, u64)> = {
            let heard = node
                .heartbeats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let s = node.state.read();
            s.state
                .agents()
                .filter(|a| a.status != AgentStatus::Down)
                .filter_map(|a| {
                    let last = heard.get(&a.id).copied().unwrap_or(0).max(a.registered_at);
                    let deadline = (last + ttl).max(since + grace);
                    (now > deadline).then(|| (a.id.clone(), now.saturating_sub(last)))
                })
                .collect()
        };
        for (agent_id, silent_for) in silent {
            tracing::warn!(agent = %agent_id, silent_ms = silent_for, "agent missed its heartbeats; marking it DOWN");
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
