//! `berth control` and `berth dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_control::config::parse_peers;
use berth_control::{ControlNode, NodeConfig};
use clap::Args;

#[derive(Args, Clone)]
pub struct ControlArgs {
    /// This node's id (1, 2, 3, …), unique in the cluster.
    #[arg(long, env = "BERTH_ID")]
    pub id: u64,
    /// Address the public gRPC API listens on.
    #[arg(long, env = "BERTH_API", default_value = "127.0.0.1:7400")]
    pub api: SocketAddr,
    /// Address Raft, node-to-node and agent RPCs listen on.
    #[arg(long, env = "BERTH_RAFT", default_value = "127.0.0.1:7500")]
    pub raft: SocketAddr,
    /// Data directory (Raft log, snapshots).
    #[arg(long, env = "BERTH_DATA")]
    pub data: PathBuf,
    /// The initial voters as ID=RAFT_ADDRESS, comma-separated, this node included. Leave
    /// out for a node that will be added with `berth cluster join`.
    #[arg(long, env = "BERTH_PEERS", default_value = "")]
    pub peers: String,
    /// API address others should use to reach this node (default: --api).
    #[arg(long, env = "BERTH_ADVERTISE_API")]
    pub advertise_api: Option<String>,
    /// Raft address others should use to reach this node (default: --raft).
    #[arg(long, env = "BERTH_ADVERTISE_RAFT")]
    pub advertise_raft: Option<String>,
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Raft timing and compaction. Defaults are what BENCHMARKS.md measured as stable on a
/// loaded 2-core machine.
#[derive(Args, Clone)]
pub struct TuningArgs {
    #[arg(long, env = "BERTH_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    #[arg(long, env = "BERTH_ELECTION_MIN_MS", default_value_t = 300)]
    pub election_min_ms: u64,
    #[arg(long, env = "BERTH_ELECTION_MAX_MS", default_value_t = 500)]
    pub election_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    #[arg(long, env = "BERTH_SNAPSHOT_EVERY", default_value_t = 20_000)]
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for lagging followers.
    #[arg(long, env = "BERTH_KEEP_BEHIND_SNAPSHOT", default_value_t = 5_000)]
    pub keep_behind_snapshot: u64,
    /// How long a request waits for a leader before answering UNAVAILABLE.
    #[arg(long, env = "BERTH_LEADER_WAIT_MS", default_value_t = 5_000)]
    pub leader_wait_ms: u64,
}

impl TuningArgs {
    fn apply(&self, cfg: &mut NodeConfig) -> Result<()> {
        if self.election_min_ms <= self.heartbeat_ms * 2 {
            bail!(
                "--election-min-ms ({}) must be well above --heartbeat-ms ({}); use at least three heartbeats",
                self.election_min_ms,
                self.heartbeat_ms
            );
        }
        if self.election_max_ms <= self.election_min_ms {
            bail!("--election-max-ms must be above --election-min-ms");
        }
        cfg.tuning.heartbeat = Duration::from_millis(self.heartbeat_ms);
        cfg.tuning.election_min = Duration::from_millis(self.election_min_ms);
        cfg.tuning.election_max = Duration::from_millis(self.election_max_ms);
        cfg.tuning.snapshot_every = self.snapshot_every.max(1);
        cfg.tuning.keep_behind_snapshot = self.keep_behind_snapshot;
        cfg.leader_wait = Duration::from_millis(self.leader_wait_ms.max(100));
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn control(a: ControlArgs) -> Result<ExitCode> {
    if a.id == 0 {
        bail!("--id: node ids start at 1");
    }
    let peers = parse_peers(&a.peers).map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
    if !peers.is_empty() && !peers.contains_key(&a.id) {
        bail!("--peers must include this node ({})", a.id);
    }
    let mut cfg = NodeConfig::new(a.id, a.api, a.raft, a.data.clone());
    cfg.peers = peers;
    if let Some(x) = a.advertise_api {
        cfg.api_advertise = x;
    }
    if let Some(x) = a.advertise_raft {
        cfg.raft_advertise = x;
    }
    a.tuning.apply(&mut cfg)?;
    let node = ControlNode::start(cfg).await?;
    terminated().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Clone)]
pub struct DevArgs {
    /// Where the three nodes keep their data; reusing it resumes the same cluster.
    #[arg(long, env = "BERTH_DEV_DIR", default_value = ".berth-dev")]
    pub dir: PathBuf,
    /// First API port; nodes use this and the next two.
    #[arg(long, default_value_t = 7400)]
    pub api_port: u16,
    /// First raft port; nodes use this and the next two.
    #[arg(long, default_value_t = 7500)]
    pub raft_port: u16,
}

pub async fn dev(a: DevArgs) -> Result<ExitCode> {
    let ids = [1u64, 2, 3];
    let raft_addr = |i: u64| SocketAddr::from(([127, 0, 0, 1], a.raft_port + (i as u16 - 1)));
    let api_addr = |i: u64| SocketAddr::from(([127, 0, 0, 1], a.api_port + (i as u16 - 1)));
    let peers: std::collections::BTreeMap<u64, String> =
        ids.iter().map(|&i| (i, raft_addr(i).to_string())).collect();
    let mut nodes = Vec::new();
    for &i in &ids {
        let mut cfg = NodeConfig::new(
            i,
            api_addr(i),
            raft_addr(i),
            a.dir.join(format!("node-{i}")),
        );
        cfg.peers = peers.clone();
        let node = ControlNode::start(cfg)
            .await
            .with_context(|| format!("starting dev node {i}"))?;
        nodes.push(node);
    }
    // Ready means a leader is elected and has applied its first entry.
    let first = nodes[0].node().clone();
    let waiter = first.raft.wait(Some(Duration::from_secs(30)));
    let leader = tokio::select! {
        r = waiter.metrics(|m| m.current_leader.is_some() && m.last_applied.is_some(), "leader elected") => r.ok().and_then(|m| m.current_leader),
        _ = terminated() => None,
    };
    let endpoints: Vec<String> = ids.iter().map(|&i| api_addr(i).to_string()).collect();
    match leader {
        Some(l) => {
            println!("berth dev: three control nodes running, leader is node {l}");
            println!("  endpoint:  {}", endpoints.join(","));
            println!("  data:      {}", a.dir.display());
            println!("  try:       berth cluster status");
            println!("Ctrl-C stops the cluster; running `berth dev` again resumes it.");
            terminated().await;
        }
        None => eprintln!("berth dev: no leader elected within 30 s; stopping"),
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}
