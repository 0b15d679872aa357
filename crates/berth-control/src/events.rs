//! The cluster's event feed. Every node turns each applied entry's changes into events and
//! keeps the last `KEPT` in memory: all nodes apply the same log, so a client that lost its
//! node resumes from its last revision on another. What a node holds is complete only from
//! the revision it started at (or last installed a snapshot at, or last lagged behind).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use berth_core::namespace as ns;
use berth_core::state::Change;
use berth_raft::store::StateEvent;
use tokio::sync::broadcast;

use crate::node::Node;

/// Events kept per node for resuming.
pub const KEPT: usize = 10_000;
/// Live batches buffered per follower before it is told to resume.
const LIVE_BUFFER: usize = 1024;

#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: &'static str,
    pub id: String,
    pub message: String,
    pub change: Option<Change>,
    /// The namespace the event is about; None for the cluster's own (agents, membership,
    /// an admin's tokens and namespaces).
    pub namespace: Option<String>,
}

struct Inner {
    events: VecDeque<Event>,
    /// Every event with a revision at or above this one is kept.
    complete_from: u64,
}

pub struct EventLog {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                complete_from: u64::MAX,
            }),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

/// The live feed: one batch per applied entry.
pub type Live = broadcast::Receiver<Arc<Vec<Event>>>;

/// Why a replay cannot be served.
pub struct Gone {
    pub complete_from: u64,
}

impl EventLog {
    /// Live batches from now on, and the kept events after `since` (none for 0).
    pub fn follow(&self, since: u64) -> Result<(Live, Vec<Event>), Gone> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.subscribe();
        if since == 0 {
            return Ok((live, Vec::new()));
        }
        if since.saturating_add(1) < inner.complete_from {
            return Err(Gone {
                complete_from: inner.complete_from,
            });
        }
        let replay = inner
            .events
            .iter()
            .filter(|e| e.revision > since)
            .cloned()
            .collect();
        Ok((live, replay))
    }

    fn start_at(&self, revision: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.events.clear();
        inner.complete_from = revision.saturating_add(1);
    }

    fn push(&self, batch: Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.events.extend(batch.iter().cloned());
            while inner.events.len() > KEPT {
                if let Some(old) = inner.events.pop_front() {
                    inner.complete_from = inner.complete_from.max(old.revision + 1);
                }
            }
        }
        let _ = self.live.send(Arc::new(batch));
    }
}

fn describe(revision: u64, c: &Change) -> Event {
    let (kind, id, message) = match c {
        Change::Task(t) => (
            "task",
            t.id.clone(),
            format!(
                "task {} ({}) on {} is {} (desired {}){}",
                t.id,
                t.task_definition(),
                t.agent_id,
                t.last_status,
                t.desired_status,
                match (&t.stop_code, &t.stopped_reason) {
                    (Some(code), Some(why)) => format!(": {code}: {why}"),
                    _ => String::new(),
                }
            ),
        ),
        Change::Agent(a) => (
            "agent",
            a.id.clone(),
            format!(
                "agent {} is {} (registration {}){}",
                a.id,
                a.status,
                a.epoch,
                a.engine_error
                    .as_ref()
                    .map(|e| format!("; its engine does not answer: {e}"))
                    .unwrap_or_default()
            ),
        ),
        Change::TaskDefinition(d) => (
            "task-definition",
            d.name(),
            format!(
                "task definition {} is {}",
                d.name(),
                match d.status {
                    berth_core::TaskDefinitionStatus::Active => "ACTIVE",
                    berth_core::TaskDefinitionStatus::Inactive => "INACTIVE",
                }
            ),
        ),
        Change::ServiceEvent { service, message } => ("service", service.clone(), message.clone()),
        Change::Audit {
            accessor,
            name,
            action,
            refused,
            ..
        } => (
            "audit",
            accessor.clone(),
            match refused {
                None => format!("token {accessor} ({name}): {action}"),
                Some(why) => format!("token {accessor} ({name}) refused at apply: {action}: {why}"),
            },
        ),
        Change::Membership { voters, learners } => {
            let ids = |v: &[u64]| {
                let v: Vec<String> = v.iter().map(u64::to_string).collect();
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            (
                "cluster",
                "membership".to_string(),
                format!(
                    "cluster membership: voters {}; learners {}",
                    ids(voters),
                    ids(learners)
                ),
            )
        }
    };
    Event {
        revision,
        kind,
        id,
        message,
        change: match c {
            Change::Task(_) | Change::Agent(_) => Some(c.clone()),
            _ => None,
        },
        namespace: match c {
            Change::Task(t) => Some(ns::of(&t.family).to_string()),
            Change::TaskDefinition(d) => Some(ns::of(&d.family).to_string()),
            Change::ServiceEvent { service, .. } => Some(ns::of(service).to_string()),
            Change::Audit { namespace, .. } => namespace.clone(),
            Change::Agent(_) | Change::Membership { .. } => None,
        },
    }
}

/// Feeds the node's event log from the applied state until the node stops.
pub(crate) async fn run(node: Arc<Node>) {
    loop {
        let mut applied = node.state.subscribe();
        node.events.start_at(node.state.read().state.revision());
        loop {
            tokio::select! {
                _ = node.shutdown.wait() => return,
                ev = applied.recv() => match ev {
                    Ok(StateEvent::Applied { revision, changes }) => {
                        node.events
                            .push(changes.iter().map(|c| describe(revision, c)).collect());
                    }
                    // A snapshot replaced the state, or this loop fell behind: what was
                    // missed cannot be told, so the log starts afresh from here.
                    Ok(StateEvent::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64) -> Event {
        Event {
            revision,
            kind: "task",
            id: format!("t{revision}"),
            message: String::new(),
            change: None,
            namespace: None,
        }
    }

    #[test]
    fn a_replay_is_served_only_from_what_the_node_holds_completely() {
        let log = EventLog::default();
        log.start_at(10);
        for r in 11..=20 {
            log.push(vec![ev(r)]);
        }
        let (_, replay) = log.follow(15).ok().expect("held");
        assert_eq!(
            replay.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![16, 17, 18, 19, 20]
        );
        assert!(log.follow(10).is_ok(), "everything after 10 is held");
        assert!(log.follow(9).is_err(), "revision 10 itself was never seen");
        // Past the bound the oldest go, and with them the right to replay from before.
        for r in 21..=(20 + KEPT as u64) {
            log.push(vec![ev(r)]);
        }
        match log.follow(15) {
            Err(g) => assert_eq!(g.complete_from, 21),
            Ok(_) => panic!("events 16..=20 are gone"),
        }
        let (_, replay) = log.follow(20).ok().expect("held");
        assert_eq!(replay.len(), KEPT);
        let (_, replay) = log.follow(0).ok().expect("from now");
        assert!(replay.is_empty());
    }
}
