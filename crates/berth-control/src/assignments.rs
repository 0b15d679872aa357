//! Routes applied changes to the agents' assignment streams.
//!
//! One task reads the state's change feed and hands each stream only what concerns its own
//! agent: the tasks placed on it and its own record. An applied entry then costs one pass
//! over its changes plus one wake-up per agent it touched, however many agents hold a
//! stream. (Each stream reading the whole feed itself cost agents × changes, and woke every
//! stream for every entry.)
//!
//! A stream that cannot keep up, and every stream when the feed itself was missed (a
//! snapshot replaced the state, or the router fell behind), is told to resend its agent's
//! full set, which is read from the state and so holds everything missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_core::state::Change;
use berth_core::{Agent, Task};
use berth_raft::store::StateEvent;
use tokio::sync::{broadcast, mpsc};

/// Messages queued per stream before it is told to resend its full set instead: deltas
/// beyond it would be read later than the state they describe anyway.
pub const STREAM_QUEUE: usize = 64;

/// What one stream is told.
#[derive(Debug)]
pub enum Message {
    /// What the entry at `revision` changed for the stream's agent.
    Delta {
        revision: u64,
        tasks: Vec<Task>,
        /// The agent's record, when the entry changed it: a new registration ends the
        /// streams of older ones. Boxed: most deltas carry none.
        agent: Option<Box<Agent>>,
    },
    /// Something was missed; send the agent's full set.
    Resync,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Message>,
    /// Set when a message could not be queued: the stream resends its full set as soon as
    /// it reads its queue again.
    missed: Arc<AtomicBool>,
}

/// The routing table: agent id → its streams (an agent whose session is being replaced
/// may briefly hold two).
pub struct Hub {
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// The change feed, taken by [`run`]. Subscribed when the hub is made, before the node
    /// serves, so no entry applied after a stream's first read escapes the router.
    feed: Mutex<Option<broadcast::Receiver<StateEvent>>>,
}

/// One stream's end: its queue, and its place in the table until dropped.
pub struct Subscription {
    pub rx: mpsc::Receiver<Message>,
    missed: Arc<AtomicBool>,
    hub: Arc<Hub>,
    agent_id: String,
    id: u64,
}

impl Subscription {
    /// Whether messages were lost since the last call (the full set must be sent).
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = lock(&self.hub.subscribers);
        if let Some(list) = subs.get_mut(&self.agent_id) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                subs.remove(&self.agent_id);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The table stays consistent whatever a panicking holder did: every change is one
    // insert or retain.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(feed: broadcast::Receiver<StateEvent>) -> Self {
        Hub {
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            feed: Mutex::new(Some(feed)),
        }
    }

    /// A stream for `agent_id`: call before reading the agent's full set, so nothing
    /// applied after that read is missed.
    pub fn subscribe(self: &Arc<Self>, agent_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let missed = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers)
            .entry(agent_id.to_string())
            .or_default()
            .push(Subscriber {
                id,
                tx,
                missed: missed.clone(),
            });
        Subscription {
            rx,
            missed,
            hub: self.clone(),
            agent_id: agent_id.to_string(),
            id,
        }
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        lock(&self.subscribers).values().map(Vec::len).sum()
    }

    /// Hands the changes of the entry at `revision` to the streams of the agents they
    /// concern. Agents without a stream cost a lookup.
    pub fn dispatch(&self, revision: u64, changes: &[Change]) {
        let subs = lock(&self.subscribers);
        let mut touched: HashMap<&str, (Vec<Task>, Option<Agent>)> = HashMap::new();
        for c in changes {
            match c {
                Change::Task(t) if subs.contains_key(&t.agent_id) => {
                    touched
                        .entry(t.agent_id.as_str())
                        .or_default()
                        .0
                        .push(t.clone());
                }
                Change::Agent(a) if subs.contains_key(&a.id) => {
                    touched.entry(a.id.as_str()).or_default().1 = Some(a.clone());
                }
                _ => {}
            }
        }
        for (agent_id, (tasks, agent)) in touched {
            for s in subs.get(agent_id).into_iter().flatten() {
                send(
                    s,
                    Message::Delta {
                        revision,
                        tasks: tasks.clone(),
                        agent: agent.clone().map(Box::new),
                    },
                );
            }
        }
    }

    /// Tells every stream to resend its full set.
    pub fn resync_all(&self) {
        for s in lock(&self.subscribers).values().flatten() {
            send(s, Message::Resync);
        }
    }
}

fn send(s: &Subscriber, m: Message) {
    if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(m) {
        s.missed.store(true, Ordering::Release);
    }
}

/// Feeds the hub until the node shuts down.
pub(crate) async fn run(node: Arc<crate::node::Node>) {
    let Some(mut feed) = lock(&node.assignments.feed).take() else {
        return;
    };
    loop {
        tokio::select! {
            _ = node.shutdown.wait() => return,
            ev = feed.recv() => match ev {
                Ok(StateEvent::Applied { revision, changes }) => {
                    node.assignments.dispatch(revision, &changes);
                }
                Ok(StateEvent::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    node.assignments.resync_all();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, agent: &str) -> Change {
        let t: Task = serde_json::from_value(serde_json::json!({
            "id": id, "family": "web", "revision": 1, "cpu": 256, "memory": 512,
            "agentId": agent, "lastStatus": "PROVISIONING", "desiredStatus": "RUNNING",
            "containers": [], "createdAt": 0, "version": 1
        }))
        .expect("a task");
        Change::Task(t)
    }

    fn hub() -> Arc<Hub> {
        let (_tx, rx) = broadcast::channel(4);
        Arc::new(Hub::new(rx))
    }

    #[test]
    fn each_stream_gets_only_its_agents_changes() {
        let hub = hub();
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.dispatch(7, &[task("t1", "a"), task("t2", "c"), task("t3", "a")]);
        match a.rx.try_recv() {
            Ok(Message::Delta {
                revision, tasks, ..
            }) => {
                assert_eq!(revision, 7);
                let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
                assert_eq!(ids, ["t1", "t3"]);
            }
            other => panic!("a got {other:?}"),
        }
        assert!(a.rx.try_recv().is_err(), "one message per entry");
        assert!(b.rx.try_recv().is_err(), "nothing of b's changed");
    }

    #[test]
    fn a_stream_that_falls_behind_is_told_to_resend_its_full_set() {
        let hub = hub();
        let mut a = hub.subscribe("a");
        for r in 0..=STREAM_QUEUE as u64 {
            hub.dispatch(r, &[task("t1", "a")]);
        }
        assert!(a.take_missed());
        assert!(!a.take_missed(), "told once");
        let mut n = 0;
        while a.rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, STREAM_QUEUE);
        hub.resync_all();
        assert!(matches!(a.rx.try_recv(), Ok(Message::Resync)));
    }

    #[test]
    fn a_dropped_stream_leaves_the_table() {
        let hub = hub();
        let a = hub.subscribe("a");
        let a2 = hub.subscribe("a");
        assert_eq!(hub.streams(), 2);
        drop(a);
        assert_eq!(hub.streams(), 1);
        drop(a2);
        assert!(lock(&hub.subscribers).is_empty());
    }
}
