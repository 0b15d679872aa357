//! The placement engine the batcher keeps between batches.
//!
//! Built once from the applied state (O(agents)), then kept: before each batch it reads
//! again, from the state, only the agents that changed since the one before — those an
//! applied entry touched (a task placed, stopped or moved on, a registration, a status)
//! and those the previous batch placed on (whose plan apply may have refused) — so a
//! batch costs what it places, not what the cluster holds. This is the engine and the
//! update path `berth-sched`'s benchmark measures.
//!
//! The engine is built again from scratch whenever what changed cannot be told: the first
//! batch, after a snapshot replaced the state, or after the change feed ran ahead of it.

use std::collections::{BTreeMap, HashSet};

use berth_core::command::{Placement, RunTasks};
use berth_core::state::Change;
use berth_core::{AgentStatus, ClusterState, Failure};
use berth_raft::store::StateEvent;
use berth_sched as sched;
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};

/// The engine and how it follows the applied state.
pub(crate) struct Planner {
    engine: sched::Engine,
    /// Applied changes since the engine was last brought up to date. Subscribed before
    /// the state the engine was built from was read, so nothing applied after escapes it.
    feed: broadcast::Receiver<StateEvent>,
    /// Agents to read again from the state before the next placement.
    dirty: HashSet<String>,
    seed: u64,
}

/// What the engine needs of an agent, from the applied state. An agent the state no
/// longer holds (collected after being DOWN) stays in the engine as DOWN: indexes are
/// never reused.
fn agent_info(state: &ClusterState, id: &str) -> sched::AgentInfo {
    let Some(a) = state.agent(id) else {
        return sched::AgentInfo {
            id: id.to_string(),
            cpu: 0,
            memory: 0,
            used_cpu: 0,
            used_memory: 0,
            attributes: BTreeMap::new(),
            eligibility: sched::Eligibility::Down,
            groups: BTreeMap::new(),
        };
    };
    sched::AgentInfo {
        id: a.id.clone(),
        cpu: a.cpu,
        memory: a.memory,
        used_cpu: a.used_cpu,
        used_memory: a.used_memory,
        attributes: a.attributes.clone(),
        eligibility: match a.status {
            // An engine that does not answer could not start the task.
            AgentStatus::Ready if a.engine_error.is_some() => sched::Eligibility::Draining,
            AgentStatus::Ready => sched::Eligibility::Eligible,
            AgentStatus::Draining => sched::Eligibility::Draining,
            AgentStatus::Down => sched::Eligibility::Down,
        },
        groups: state.agent_groups(&a.id).cloned().unwrap_or_default(),
    }
}

impl Planner {
    /// An engine holding every agent of `state`, following `feed` from there: subscribed
    /// before `state` was read, or while its read lock is held.
    pub fn from_state(feed: broadcast::Receiver<StateEvent>, state: &ClusterState) -> Self {
        let agents: Vec<sched::AgentInfo> =
            state.agents().map(|a| agent_info(state, &a.id)).collect();
        Planner {
            engine: sched::Engine::new(&agents),
            feed,
            dirty: HashSet::new(),
            seed: state.revision(),
        }
    }

    /// Takes in what was applied since the last call. False when that cannot be told and
    /// the engine must be built again.
    pub fn follow(&mut self) -> bool {
        loop {
            match self.feed.try_recv() {
                Ok(StateEvent::Applied { changes, .. }) => {
                    for c in changes.iter() {
                        match c {
                            Change::Task(t) => {
                                self.dirty.insert(t.agent_id.clone());
                            }
                            Change::Agent(a) => {
                                self.dirty.insert(a.id.clone());
                            }
                            _ => {}
                        }
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Ok(StateEvent::Reset { .. })
                | Err(broadcast::error::TryRecvError::Lagged(_))
                | Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    /// Reads the agents that changed again from `state` (which must hold everything
    /// [`Planner::follow`] took in). Returns how many.
    pub fn refresh(&mut self, state: &ClusterState) -> usize {
        let n = self.dirty.len();
        for id in self.dirty.drain() {
            self.engine.upsert(agent_info(state, &id));
        }
        self.seed = self.seed.max(state.revision());
        n
    }

    /// Places one RunTask; later requests of the batch see what it placed.
    pub fn place(&mut self, demand: &sched::Demand, run: &mut RunTasks) -> ApiResult<()> {
        let outcome = self
            .engine
            .place(std::slice::from_ref(demand), self.seed)
            .map_err(|e| ApiError::invalid(e.to_string()))?
            .pop()
            .unwrap_or_default();
        self.seed = self.seed.wrapping_add(1);
        for i in outcome.placements {
            let Some(agent) = self.engine.agent_id(i) else {
                continue;
            };
            // Whatever apply makes of this plan, the next batch reads the agent again.
            self.dirty.insert(agent.to_string());
            run.placements.push(Placement {
                task_id: crate::batcher::new_task_id(),
                agent_id: agent.to_string(),
            });
        }
        run.failures
            .extend(outcome.failures.into_iter().map(|f| Failure {
                reason: f.reason,
                detail: f.detail,
            }));
        Ok(())
    }

    #[cfg(test)]
    fn free(&self, agent: &str) -> Option<(u32, u32)> {
        self.engine.agent_index(agent).map(|i| self.engine.free(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::command::AgentRegistration;
    use berth_core::{Batch, Command, ContainerDefinition, TaskDefinitionSpec};

    fn register(id: &str) -> Command {
        Command::RegisterAgent(AgentRegistration {
            id: id.into(),
            cpu: 1024,
            memory: 2048,
            attributes: BTreeMap::new(),
            address: String::new(),
        })
    }

    fn demand() -> sched::Demand {
        sched::Demand {
            cpu: 256,
            memory: 512,
            count: 1,
            group: "family:web".into(),
            strategies: vec![sched::Strategy::Binpack(sched::BinpackField::Both)],
            constraints: vec![],
        }
    }

    fn run_tasks() -> RunTasks {
        RunTasks {
            family: "web".into(),
            revision: 1,
            client_token: None,
            fingerprint: 0,
            started_by: String::new(),
            group: "family:web".into(),
            overrides: vec![],
            placements: vec![],
            failures: vec![],
            service: None,
            run: None,
            timeouts: Default::default(),
            retry: None,
        }
    }

    /// A state driven the way the Raft state machine drives it: apply, then its changes
    /// on the feed.
    struct Driven {
        state: ClusterState,
        feed: broadcast::Sender<StateEvent>,
        index: u64,
    }

    impl Driven {
        fn apply(&mut self, commands: Vec<Command>) {
            self.index += 1;
            self.state.apply(self.index, &Batch { now: 1, commands });
            let changes = self.state.take_changes();
            let _ = self.feed.send(StateEvent::Applied {
                revision: self.index,
                changes: std::sync::Arc::new(changes),
            });
        }
    }

    #[test]
    fn the_kept_engine_follows_applied_changes_and_forgets_refused_plans() {
        let (feed, _) = broadcast::channel(16);
        let mut d = Driven {
            state: ClusterState::new(),
            feed,
            index: 0,
        };
        d.apply(vec![
            Command::RegisterTaskDefinition {
                spec: TaskDefinitionSpec {
                    family: "web".into(),
                    cpu: Some(256),
                    memory: Some(512),
                    network_mode: None,
                    container_definitions: vec![ContainerDefinition {
                        name: "app".into(),
                        image: "busybox".into(),
                        ..Default::default()
                    }],
                    timeouts: Default::default(),
                },
            },
            register("a1"),
        ]);
        let mut p = Planner::from_state(d.feed.subscribe(), &d.state);
        assert_eq!(p.free("a1"), Some((1024, 2048)));

        // A plan that is never applied: the next batch reads a1 again and gets it back.
        let mut run = run_tasks();
        p.place(&demand(), &mut run).unwrap();
        assert_eq!(run.placements.len(), 1);
        assert_eq!(p.free("a1"), Some((768, 1536)));
        assert!(p.follow());
        assert_eq!(p.refresh(&d.state), 1);
        assert_eq!(p.free("a1"), Some((1024, 2048)));

        // One that is applied stays taken; an agent registered since is learned.
        let mut run = run_tasks();
        p.place(&demand(), &mut run).unwrap();
        d.apply(vec![Command::RunTasks(run), register("a2")]);
        assert!(p.follow());
        p.refresh(&d.state);
        assert_eq!(p.free("a1"), Some((768, 1536)));
        assert_eq!(p.free("a2"), Some((1024, 2048)));
        assert_eq!(p.refresh(&d.state), 0, "nothing new");

        // A feed that ran ahead cannot be followed: the engine is built again.
        for _ in 0..20 {
            d.apply(vec![register("a3")]);
        }
        assert!(!p.follow());
    }
}
