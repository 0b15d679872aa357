//! A control node's Prometheus metrics. Latencies and batch sizes are observed where they
//! happen (the batcher); everything that describes the cluster — Raft role and indexes,
//! tasks by state, services by rollout, each agent's capacity, allocation, measured use and
//! heartbeat age — is read from the node at scrape time, so it is never stale.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use berth_core::service::ServiceStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rollout {
    rollout_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentUse {
    agent: String,
    /// capacity, allocated (what its tasks reserve) or measured (what they use).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    proposal: Histogram,
    batch: Histogram,
    placement: Histogram,
    leader: Gauge,
    term: Gauge,
    last_log: Gauge,
    applied: Gauge,
    /// Assignment streams open on this node (one per connected agent).
    streams: Gauge,
    /// Leadership confirmations run for linearizable reads.
    read_rounds: Counter,
    tasks: Family<State, Gauge>,
    services: Family<Rollout, Gauge>,
    agent_cpu: Family<AgentUse, Gauge>,
    agent_memory: Family<AgentUse, Gauge>,
    heartbeat_age: Family<AgentLabel, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("berth");
        let proposal = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        r.register_with_unit(
            "proposal_duration",
            "Time from proposing a batch to Raft until it is committed and applied here",
            Unit::Seconds,
            proposal.clone(),
        );
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        r.register(
            "proposal_batch_commands",
            "Commands per proposed Raft entry (group commit)",
            batch.clone(),
        );
        let placement = Histogram::new(exponential_buckets(0.00001, 2.0, 18));
        r.register_with_unit(
            "placement_duration",
            "Time the placement engine took for one RunTask request",
            Unit::Seconds,
            placement.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "raft_leader",
            "1 on the Raft leader, else 0",
            leader.clone(),
        );
        let term = Gauge::default();
        r.register("raft_term", "This node's current Raft term", term.clone());
        let last_log = Gauge::default();
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this node's Raft log",
            last_log.clone(),
        );
        let applied = Gauge::default();
        r.register(
            "raft_applied_index",
            "Index of the last entry applied here (entries are applied as soon as committed)",
            applied.clone(),
        );
        let tasks = Family::<State, Gauge>::default();
        r.register("tasks", "Tasks by last status", tasks.clone());
        let services = Family::<Rollout, Gauge>::default();
        r.register(
            "services",
            "ACTIVE services by their PRIMARY deployment's rollout state",
            services.clone(),
        );
        let agent_cpu = Family::<AgentUse, Gauge>::default();
        r.register(
            "agent_cpu_units",
            "Per agent, CPU units (1024 per vCPU): capacity, allocated to tasks, measured in use",
            agent_cpu.clone(),
        );
        let agent_memory = Family::<AgentUse, Gauge>::default();
        r.register_with_unit(
            "agent_memory",
            "Per agent, memory: capacity, allocated to tasks, measured in use",
            Unit::Bytes,
            agent_memory.clone(),
        );
        let heartbeat_age = Family::<AgentLabel, FloatGauge>::default();
        r.register_with_unit(
            "agent_heartbeat_age",
            "Per agent, time since its last heartbeat (on the leader only)",
            Unit::Seconds,
            heartbeat_age.clone(),
        );
        let streams = Gauge::default();
        r.register(
            "assignment_streams",
            "Agents' assignment streams this node serves",
            streams.clone(),
        );
        let read_rounds = Counter::default();
        r.register(
            "read_index_rounds",
            "Leadership confirmations this node ran for linearizable reads since it started, \
             each shared by every read waiting when it began",
            read_rounds.clone(),
        );
        Metrics {
            registry: r,
            streams,
            read_rounds,
            proposal,
            batch,
            placement,
            leader,
            term,
            last_log,
            applied,
            tasks,
            services,
            agent_cpu,
            agent_memory,
            heartbeat_age,
        }
    }
}

const MIB: i64 = 1024 * 1024;

impl Metrics {
    pub fn observe_proposal(&self, took: Duration, commands: usize) {
        self.proposal.observe(took.as_secs_f64());
        self.batch.observe(commands as f64);
    }

    pub fn observe_placement(&self, took: Duration) {
        self.placement.observe(took.as_secs_f64());
    }

    /// The registry's text, with the cluster figures read from `node` now.
    pub fn render(&self, node: &Node) -> String {
        let m = node.raft.metrics().borrow().clone();
        self.leader
            .set(i64::from(m.current_leader == Some(node.id)));
        self.term.set(to_i64(m.current_term));
        self.last_log.set(to_i64(m.last_log_index.unwrap_or(0)));
        self.applied
            .set(to_i64(m.last_applied.map_or(0, |l| l.index)));
        self.streams.set(to_i64(node.assignments.streams() as u64));
        // The node counts rounds as they run; the counter catches up at each scrape.
        let rounds = node.read_index.rounds();
        self.read_rounds
            .inc_by(rounds.saturating_sub(self.read_rounds.get()));
        {
            let s = node.state.read();
            let state = &s.state;
            // Every state, zeros included, so a series does not vanish when it empties.
            for (st, n) in state.task_counts() {
                self.tasks
                    .get_or_create(&State {
                        state: st.as_str().to_string(),
                    })
                    .set(to_i64(n as u64));
            }
            self.services.clear();
            for svc in state.services() {
                if svc.status != ServiceStatus::Active {
                    continue;
                }
                let Some(d) = svc.primary() else {
                    continue;
                };
                self.services
                    .get_or_create(&Rollout {
                        rollout_state: d.rollout_state.as_str().to_string(),
                    })
                    .inc();
            }
            self.agent_cpu.clear();
            self.agent_memory.clear();
            let now = crate::node::now_ms();
            for a in state.agents() {
                let (cpu, memory) = state.agent_used(&a.id, now);
                for (kind, c, mem) in [
                    ("capacity", a.cpu, a.memory),
                    ("allocated", a.used_cpu, a.used_memory),
                    ("measured", cpu, memory),
                ] {
                    let label = AgentUse {
                        agent: a.id.clone(),
                        kind: kind.to_string(),
                    };
                    self.agent_cpu.get_or_create(&label).set(i64::from(c));
                    self.agent_memory
                        .get_or_create(&label)
                        .set(i64::from(mem) * MIB);
                }
            }
        }
        self.heartbeat_age.clear();
        let beats = node
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (agent, (_, at)) in beats {
            self.heartbeat_age
                .get_or_create(&AgentLabel { agent })
                .set(at.elapsed().as_secs_f64());
        }
        berth_metrics::encode(&self.registry)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
