//! The nemesis: faults drawn from a seed, injected one at a time, each healed before the
//! next. Every fault is recorded with its start, end and the leader it found.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::history::{FaultRecord, History};
use berth_simagent::SimAgent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    KillLeader,
    KillFollower,
    PauseLeader,
    IsolateLeader,
    /// The leader cut off while clients write through it, until the majority's new leader
    /// has compacted its log past the old leader's (so healing installs a snapshot on it
    /// instead of truncating its unacknowledged entries); then the old leader is made
    /// leader again by killing whoever else leads. Regression case for seed 42 (a write
    /// path wedged by a proposal that is never answered).
    IsolateLeaderPastCompaction,
    /// A random node (3 nodes) or a random minority (5) cut from the rest.
    MinorityPartition,
    /// Two groups that see each other only through one node.
    Bridge,
    /// Each node sees only its two neighbours (5 nodes; with 3 it is no partition).
    Ring,
    KillAgent,
    /// An agent frozen (docker pause) past the TTL while its tasks keep running, then
    /// thawed: it must become READY again by itself. Regression case: such an agent
    /// stayed DOWN for good.
    AgentPaused,
    /// The same with the agent cut off from every control node by iptables (simulated
    /// agents are paused instead).
    AgentPartitioned,
    FullRestart,
    /// SIGKILL of a node when its log reaches the next snapshot point.
    KillDuringSnapshotBuild,
    /// A follower kept down until the leader compacted past it, restarted, and SIGKILLed
    /// while the snapshot is sent to it.
    KillDuringSnapshotInstall,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateLeaderPastCompaction => "isolate-leader-past-compaction",
            FaultKind::MinorityPartition => "partition-minority",
            FaultKind::Bridge => "partition-bridge",
            FaultKind::Ring => "partition-ring",
            FaultKind::KillAgent => "kill-agent",
            FaultKind::AgentPaused => "agent-paused",
            FaultKind::AgentPartitioned => "agent-partitioned",
            FaultKind::FullRestart => "full-restart",
            FaultKind::KillDuringSnapshotBuild => "kill-snapshot-build",
            FaultKind::KillDuringSnapshotInstall => "kill-snapshot-install",
        }
    }
}

/// The short run's faults: what CI requires (3 leader kills, a leader pause, a partition
/// isolating the leader, a full restart) and one of each other kind, in a seeded order.
pub fn short_plan(seed: u64, nodes: usize) -> Vec<FaultKind> {
    use FaultKind::*;
    let mut plan = vec![
        KillLeader,
        KillLeader,
        KillLeader,
        PauseLeader,
        IsolateLeader,
        FullRestart,
        IsolateLeaderPastCompaction,
        KillFollower,
        MinorityPartition,
        Bridge,
        KillAgent,
        AgentPaused,
        AgentPartitioned,
        KillDuringSnapshotBuild,
        KillDuringSnapshotInstall,
    ];
    if nodes >= 5 {
        plan.push(Ring);
    }
    plan.shuffle(&mut StdRng::seed_from_u64(seed));
    plan
}

/// The long run's next fault: weighted towards leader faults, everything represented.
pub fn draw(rng: &mut StdRng, nodes: usize) -> FaultKind {
    use FaultKind::*;
    let mut table = vec![
        (KillLeader, 5),
        (KillFollower, 2),
        (PauseLeader, 2),
        (IsolateLeader, 2),
        (IsolateLeaderPastCompaction, 1),
        (MinorityPartition, 2),
        (Bridge, 1),
        (KillAgent, 1),
        (AgentPaused, 1),
        (AgentPartitioned, 1),
        (FullRestart, 1),
        (KillDuringSnapshotBuild, 1),
        (KillDuringSnapshotInstall, 1),
    ];
    if nodes >= 5 {
        table.push((Ring, 1));
    }
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (k, w) in table {
        if x < w {
            return k;
        }
        x -= w;
    }
    KillLeader
}

/// The agent an agent fault hits: a compose container, or one simulated in this process.
enum AgentTarget {
    Real { container: String, id: String },
    Sim(Arc<SimAgent>),
}

pub struct Nemesis {
    pub cluster: Cluster,
    pub history: Arc<History>,
    pub sim_agents: Vec<Arc<SimAgent>>,
    pub snapshot_every: u64,
    pub keep_behind: u64,
    pub rng: StdRng,
    pub stop: Arc<AtomicBool>,
    /// Set by each injection when its fault took hold.
    pub effective: Option<u64>,
}

impl Nemesis {
    fn log(&self, msg: &str) {
        eprintln!("[{:8.2}s] {msg}", self.history.now() as f64 / 1e9);
    }

    fn took_hold(&mut self) {
        self.effective = Some(self.history.now());
    }

    fn all(&self) -> BTreeSet<u64> {
        self.cluster.ids.iter().copied().collect()
    }

    async fn leader_or_wait(&self) -> Result<u64> {
        self.cluster
            .wait_healthy(&self.all(), Duration::from_secs(30))
            .await
    }

    /// Waits for an agent healed from a cut-off to be READY again; says how it went (the
    /// final check fails the run if it never is).
    async fn agent_back(&self, id: &str, within: Duration) -> String {
        let healed = tokio::time::Instant::now();
        let endpoints = self.cluster.api_endpoints();
        let mut i = 0usize;
        while healed.elapsed() < within {
            let ep = &endpoints[i % endpoints.len()];
            i += 1;
            let Ok(ch) = crate::cluster::lazy_channel(ep, Duration::from_secs(2)) else {
                continue;
            };
            if let Ok((agents, _)) = crate::checks::list_agents(&ch, false).await {
                if let Some(a) = agents.iter().find(|a| a.agent_id == id) {
                    if a.status == "READY" {
                        let was_down = if a.back_at_ms.is_some() {
                            "was DOWN"
                        } else {
                            "never marked DOWN"
                        };
                        return format!(
                            "READY {} ms after healing ({was_down}, epoch {})",
                            healed.elapsed().as_millis(),
                            a.epoch
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        format!("not READY within {within:?} of healing")
    }

    /// An agent to aim an agent fault at, drawn from the seed.
    fn pick_agent(&mut self) -> Result<AgentTarget> {
        if self.cluster.agents.is_empty() {
            let a = self
                .sim_agents
                .choose(&mut self.rng)
                .cloned()
                .ok_or_else(|| anyhow!("no agent"))?;
            return Ok(AgentTarget::Sim(a));
        }
        let (container, id) = self
            .cluster
            .agents
            .choose(&mut self.rng)
            .cloned()
            .ok_or_else(|| anyhow!("no agent"))?;
        Ok(AgentTarget::Real { container, id })
    }

    fn hold(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.rng.gen_range(lo_ms..=hi_ms))
    }

    /// Injects one fault, holds it, heals it, and waits for the cluster to be whole again.
    pub async fn inject(&mut self, kind: FaultKind) -> Result<()> {
        let leader = self.leader_or_wait().await.unwrap_or(0);
        let start = self.history.now();
        self.effective = None;
        let detail = match self.inject_inner(kind, leader).await {
            Ok(d) => d,
            Err(e) => {
                // Heal whatever was left, then report the failure to inject (not a
                // violation: the checks decide that).
                self.heal_all().await;
                if e.chain().any(|c| c.is::<crate::cluster::EngineHung>()) {
                    self.log(&format!("{} failed: {e:#}", kind.name()));
                    return Err(e);
                }
                format!("injection error: {e:#}")
            }
        };
        let end = self.history.now();
        self.log(&format!("{} done: {detail}", kind.name()));
        self.history.fault(FaultRecord {
            kind: kind.name().to_string(),
            detail,
            start,
            effective: self.effective.unwrap_or(start),
            end,
            leader_before: leader,
        });
        if let Err(e) = self.leader_or_wait().await {
            self.log(&format!("after {}: {e:#}", kind.name()));
            self.heal_all().await;
        }
        Ok(())
    }

    /// Makes sure every control container runs unpaused and unpartitioned, and every agent
    /// is alive.
    pub async fn heal_all(&self) {
        for &id in &self.cluster.ids {
            let c = self.cluster.container(id);
            match self.cluster.status(&c).await.as_deref() {
                Ok("paused") => {
                    let _ = self.cluster.unpause(&c).await;
                }
                Ok("running") => {}
                _ => {
                    let _ = self.cluster.start(&c).await;
                }
            }
        }
        self.cluster.heal().await;
        for (c, _) in &self.cluster.agents {
            match self.cluster.status(c).await.ok().as_deref() {
                Some("running") => {}
                Some("paused") => {
                    let _ = self.cluster.unpause(c).await;
                }
                _ => {
                    let _ = self.cluster.start(c).await;
                }
            }
        }
        for a in &self.sim_agents {
            a.dead.store(false, Ordering::Relaxed);
            a.paused.store(false, Ordering::Relaxed);
        }
    }

    async fn inject_inner(&mut self, kind: FaultKind, leader: u64) -> Result<String> {
        // A clone (channels are cheap handles) so `self.rng` stays borrowable.
        let cluster = self.cluster.clone();
        let c = &cluster;
        let ids = c.ids.clone();
        let need_leader = || {
            if leader == 0 {
                Err(anyhow!("no leader to aim at"))
            } else {
                Ok(leader)
            }
        };
        match kind {
            FaultKind::KillLeader => {
                let l = need_leader()?;
                let down = self.hold(1000, 4000);
                self.log(&format!("SIGKILL leader {l}, restart after {down:?}"));
                c.kill(&c.container(l)).await?;
                self.took_hold();
                tokio::time::sleep(down).await;
                c.start(&c.container(l)).await?;
                Ok(format!("node {l} down {down:?}"))
            }
            FaultKind::KillFollower => {
                let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
                let f = *followers
                    .choose(&mut self.rng)
                    .ok_or_else(|| anyhow!("no follower"))?;
                let down = self.hold(1000, 5000);
                self.log(&format!("SIGKILL follower {f}, restart after {down:?}"));
                c.kill(&c.container(f)).await?;
                self.took_hold();
                tokio::time::sleep(down).await;
                c.start(&c.container(f)).await?;
                Ok(format!("node {f} down {down:?}"))
            }
            FaultKind::PauseLeader => {
                let l = need_leader()?;
                let d = self.hold(1500, 4000);
                self.log(&format!("pause leader {l} for {d:?}"));
                c.pause(&c.container(l)).await?;
                self.took_hold();
                tokio::time::sleep(d).await;
                c.unpause(&c.container(l)).await?;
                Ok(format!("node {l} paused {d:?}"))
            }
            FaultKind::IsolateLeader => {
                let l = need_leader()?;
                let d = self.hold(2000, 6000);
                self.log(&format!("isolate leader {l} for {d:?}"));
                let links: Vec<(u64, u64)> =
                    ids.iter().filter(|&&i| i != l).map(|&o| (l, o)).collect();
                c.cut(&links).await?;
                self.took_hold();
                tokio::time::sleep(d).await;
                c.heal().await;
                Ok(format!("node {l} cut off {d:?}"))
            }
            FaultKind::IsolateLeaderPastCompaction => {
                let l = need_leader()?;
                let behind = c
                    .info(l, false)
                    .await
                    .map(|i| i.last_log_index)
                    .unwrap_or(0);
                self.log(&format!(
                    "isolate leader {l} (log {behind}) until the others compact past it"
                ));
                let links: Vec<(u64, u64)> =
                    ids.iter().filter(|&&i| i != l).map(|&o| (l, o)).collect();
                c.cut(&links).await?;
                self.took_hold();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
                let mut purged = 0;
                while tokio::time::Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
                    for &o in ids.iter().filter(|&&i| i != l) {
                        if let Ok(i) = c.info(o, false).await {
                            if i.state == "leader" {
                                purged = i.purged_index;
                            }
                        }
                    }
                    if purged > behind + 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                c.heal().await;
                // Hand leadership back to the old leader: kill whoever else leads (it is
                // restarted at once), a few times at most.
                let mut regained = false;
                for _ in 0..6 {
                    let Ok(now) = c.wait_healthy(&self.all(), Duration::from_secs(30)).await else {
                        break;
                    };
                    if now == l {
                        regained = true;
                        break;
                    }
                    c.kill(&c.container(now)).await?;
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    c.start(&c.container(now)).await?;
                }
                Ok(format!(
                    "node {l} cut off at log {behind} until the new leader purged to {purged}; leader again: {regained}"
                ))
            }
            FaultKind::MinorityPartition => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let minority: Vec<u64> = shuffled[..(ids.len() - 1) / 2].to_vec();
                let d = self.hold(2000, 6000);
                self.log(&format!("partition {minority:?} | rest for {d:?}"));
                let mut links = Vec::new();
                for &m in &minority {
                    for &o in ids.iter().filter(|i| !minority.contains(i)) {
                        links.push((m, o));
                    }
                }
                c.cut(&links).await?;
                self.took_hold();
                tokio::time::sleep(d).await;
                c.heal().await;
                Ok(format!("minority {minority:?} cut off {d:?}"))
            }
            FaultKind::Bridge => {
                // Two halves joined only through the bridge node: every link between the
                // halves is cut, the bridge keeps both.
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let bridge = shuffled[0];
                let rest = &shuffled[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                let d = self.hold(2000, 6000);
                self.log(&format!("bridge {a:?} <{bridge}> {b:?} for {d:?}"));
                let mut links = Vec::new();
                for &x in a {
                    for &y in b {
                        links.push((x, y));
                    }
                }
                c.cut(&links).await?;
                self.took_hold();
                tokio::time::sleep(d).await;
                c.heal().await;
                Ok(format!("{a:?} <{bridge}> {b:?} {d:?}"))
            }
            FaultKind::Ring => {
                let mut ring = ids.clone();
                ring.shuffle(&mut self.rng);
                let n = ring.len();
                let d = self.hold(2000, 6000);
                self.log(&format!("ring {ring:?} for {d:?}"));
                let mut links = Vec::new();
                for i in 0..n {
                    for j in (i + 1)..n {
                        let adjacent = j == i + 1 || (i == 0 && j == n - 1);
                        if !adjacent {
                            links.push((ring[i], ring[j]));
                        }
                    }
                }
                c.cut(&links).await?;
                self.took_hold();
                tokio::time::sleep(d).await;
                c.heal().await;
                Ok(format!("ring {ring:?} {d:?}"))
            }
            FaultKind::KillAgent => {
                // Past the TTL (5 s) and the post-election grace, so the agent is declared
                // DOWN and its tasks are stopped.
                let d = self.hold(6000, 12000);
                match self.pick_agent()? {
                    AgentTarget::Real { container, id } => {
                        self.log(&format!("SIGKILL agent {id}, restart after {d:?}"));
                        c.kill(&container).await?;
                        tokio::time::sleep(d).await;
                        c.start(&container).await?;
                        Ok(format!("agent {id} down {d:?}"))
                    }
                    AgentTarget::Sim(a) => {
                        self.log(&format!("silence simulated agent {} for {d:?}", a.id));
                        a.dead.store(true, Ordering::Relaxed);
                        tokio::time::sleep(d).await;
                        a.dead.store(false, Ordering::Relaxed);
                        Ok(format!("agent {} silent {d:?}", a.id))
                    }
                }
            }
            FaultKind::AgentPaused | FaultKind::AgentPartitioned => {
                // Past the TTL (5 s), so the leader marks the agent DOWN while it still
                // runs; after healing it must come back by itself.
                let d = self.hold(7000, 10000);
                let (id, how) = match self.pick_agent()? {
                    AgentTarget::Real { container, id } => {
                        let pause = kind == FaultKind::AgentPaused;
                        let how = if pause { "paused" } else { "cut off" };
                        self.log(&format!("agent {id} {how} for {d:?}"));
                        if pause {
                            c.pause(&container).await?;
                        } else {
                            c.cut_agent(&container).await?;
                        }
                        self.took_hold();
                        tokio::time::sleep(d).await;
                        if pause {
                            c.unpause(&container).await?;
                        } else {
                            c.heal().await;
                        }
                        (id, how)
                    }
                    AgentTarget::Sim(a) => {
                        self.log(&format!("simulated agent {} paused for {d:?}", a.id));
                        a.paused.store(true, Ordering::Relaxed);
                        self.took_hold();
                        tokio::time::sleep(d).await;
                        a.paused.store(false, Ordering::Relaxed);
                        (a.id.clone(), "paused")
                    }
                };
                let back = self.agent_back(&id, Duration::from_secs(20)).await;
                Ok(format!("agent {id} {how} {d:?}; {back}"))
            }
            FaultKind::FullRestart => {
                let graceful = self.rng.gen_bool(0.5);
                let d = self.hold(1000, 3000);
                self.log(&format!(
                    "full restart ({}), down {d:?}",
                    if graceful {
                        "docker stop"
                    } else {
                        "SIGKILL all"
                    }
                ));
                let futs = ids.iter().map(|&i| {
                    let name = c.container(i);
                    async move {
                        if graceful {
                            c.stop_graceful(&name).await
                        } else {
                            c.kill(&name).await
                        }
                    }
                });
                for r in futures::future::join_all(futs).await {
                    r?;
                }
                self.took_hold();
                tokio::time::sleep(d).await;
                let futs = ids.iter().map(|&i| {
                    let name = c.container(i);
                    async move { c.start(&name).await }
                });
                for r in futures::future::join_all(futs).await {
                    r?;
                }
                Ok(format!(
                    "{} then start, down {d:?}",
                    if graceful { "stop" } else { "SIGKILL" }
                ))
            }
            FaultKind::KillDuringSnapshotBuild => {
                let target = *ids
                    .choose(&mut self.rng)
                    .ok_or_else(|| anyhow!("no node"))?;
                let every = self.snapshot_every.max(1);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                self.log(&format!(
                    "waiting to SIGKILL node {target} at its next snapshot point"
                ));
                let hit = loop {
                    if tokio::time::Instant::now() > deadline || self.stop.load(Ordering::Relaxed) {
                        break None;
                    }
                    if let Ok(i) = c.info(target, false).await {
                        let due = i.snapshot_index.max(i.purged_index) + every;
                        if i.applied_index + 1 >= due {
                            break Some((i.applied_index, i.snapshot_index));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let Some((applied, snap)) = hit else {
                    return Ok(format!(
                        "node {target}: no snapshot point reached in 60 s (no kill)"
                    ));
                };
                c.kill(&c.container(target)).await?;
                let down = self.hold(500, 2000);
                tokio::time::sleep(down).await;
                c.start(&c.container(target)).await?;
                Ok(format!(
                    "node {target} SIGKILLed at applied {applied} (last snapshot {snap}, every {every})"
                ))
            }
            FaultKind::KillDuringSnapshotInstall => {
                let l = need_leader()?;
                let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
                let f = *followers
                    .choose(&mut self.rng)
                    .ok_or_else(|| anyhow!("no follower"))?;
                let behind = c
                    .info(f, false)
                    .await
                    .map(|i| i.last_log_index)
                    .unwrap_or(0);
                self.log(&format!(
                    "SIGKILL follower {f} (log {behind}); restart once leader {l} compacted past it"
                ));
                c.kill(&c.container(f)).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                let mut purged = 0;
                while tokio::time::Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
                    if let Some(l) = c.leader().await {
                        if let Ok(i) = c.info(l, false).await {
                            purged = i.purged_index;
                            if purged > behind {
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                c.start(&c.container(f)).await?;
                let after = self.hold(100, 1500);
                tokio::time::sleep(after).await;
                let seen = c
                    .info(f, false)
                    .await
                    .map(|i| format!("applied {} snapshot {}", i.applied_index, i.snapshot_index))
                    .unwrap_or_else(|e| format!("not answering ({e})"));
                c.kill(&c.container(f)).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.start(&c.container(f)).await?;
                Ok(format!(
                    "node {f} behind at {behind}, leader purged to {purged}; killed {after:?} after restart ({seen})"
                ))
            }
        }
    }
}
