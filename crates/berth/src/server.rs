//! `berth control` and `berth dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_control::config::parse_peers;
use berth_control::{shutdown, ControlNode, NodeConfig};
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9400); off by default.
    #[arg(long, env = "BERTH_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// A `berth tls` directory holding ca.pem and control-ID.pem/.key: the raft port takes
    /// only the cluster's nodes and agents (mutual TLS), the API port serves TLS.
    #[arg(
        long,
        env = "BERTH_TLS_DIR",
        value_name = "DIR",
        conflicts_with = "insecure"
    )]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Run without TLS: anyone who reaches the raft port can join, leave and pose as any
    /// agent, and anyone who reaches the API can read and change everything. Only for a
    /// network no one else can reach.
    #[arg(long, env = "BERTH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Leave the ports bound beyond loopback open to task containers on this host. By
    /// default iptables rules refuse them (see the README's security page).
    #[arg(long, env = "BERTH_NO_HOST_FIREWALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_host_firewall: bool,
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
    /// Interval agents are told to heartbeat at.
    #[arg(long, env = "BERTH_AGENT_HEARTBEAT_MS", default_value_t = 1_000)]
    pub agent_heartbeat_ms: u64,
    /// Silence after which the leader marks an agent DOWN and stops its tasks.
    #[arg(long, env = "BERTH_AGENT_TTL_MS", default_value_t = 5_000)]
    pub agent_ttl_ms: u64,
    /// After a leader change, no agent is marked DOWN before this much time has passed.
    #[arg(long, env = "BERTH_AGENT_GRACE_MS", default_value_t = 10_000)]
    pub agent_grace_ms: u64,
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
        if self.agent_ttl_ms < 2 * self.agent_heartbeat_ms {
            bail!("--agent-ttl-ms must be at least two heartbeats (--agent-heartbeat-ms)");
        }
        if self.agent_grace_ms < self.agent_ttl_ms {
            bail!("--agent-grace-ms must not be shorter than --agent-ttl-ms");
        }
        cfg.heartbeat_interval = Duration::from_millis(self.agent_heartbeat_ms);
        cfg.agent_ttl = Duration::from_millis(self.agent_ttl_ms);
        cfg.agent_grace = Duration::from_millis(self.agent_grace_ms);
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
    cfg.metrics_listen = a.metrics;
    cfg.host_firewall = !a.no_host_firewall;
    match &a.tls_dir {
        Some(dir) => {
            let creds =
                berth_tls::grpc::Credentials::load(dir, &berth_tls::Identity::control(a.id))
                    .with_context(|| format!("--tls-dir {}", dir.display()))?;
            cfg.tls = Some(std::sync::Arc::new(creds));
            cfg.initial_admin = berth_control::auth::initial_admin(dir)?;
            cfg.secrets_key = berth_control::secrets::read_key(dir)?.map(std::sync::Arc::new);
            if cfg.secrets_key.is_none() {
                tracing::warn!(dir = %dir.display(), "no secrets.key in the TLS directory: this node takes no secrets (`berth tls secrets-key --dir DIR` makes one; every node needs the same)");
            }
        }
        None if a.insecure => warn_insecure(&format!("{} and {}", a.api, a.raft)),
        None => bail!(
            "no TLS credentials: give --tls-dir DIR holding ca.pem and control-{id}.pem/.key \
             (`berth tls init --out DIR` makes a cluster's), or --insecure to run without TLS \
             on a network no one else can reach",
            id = a.id
        ),
    }
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

fn warn_insecure(ports: &str) {
    tracing::warn!(
        "running without TLS (--insecure): anyone who reaches {ports} can read and change the \
         cluster, join or remove nodes, and pose as any agent"
    );
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
    /// Do not start the local agent (no Docker engine here, or agents run elsewhere).
    #[arg(long)]
    pub no_agent: bool,
    /// The local agent's id.
    #[arg(long, default_value = "local")]
    pub agent_id: String,
    /// Where the local agent serves logs.
    #[arg(long, default_value = "127.0.0.1:7600")]
    pub agent_listen: SocketAddr,
    /// Run without TLS (and write no config file): every client needs --insecure too.
    #[arg(long)]
    pub insecure: bool,
}

/// `berth dev`'s cluster identity, made on its first start in DIR/tls and kept after.
fn dev_credentials(a: &DevArgs, ids: &[u64]) -> Result<Option<PathBuf>> {
    if a.insecure {
        warn_insecure(&format!(
            "ports {}-{} and {}-{}",
            a.api_port,
            a.api_port + 2,
            a.raft_port,
            a.raft_port + 2
        ));
        return Ok(None);
    }
    let dir = a.dir.join("tls");
    let mut who: Vec<berth_tls::Identity> = ids
        .iter()
        .map(|&i| berth_tls::Identity::control(i))
        .collect();
    if !a.no_agent {
        who.push(berth_tls::Identity::agent(&a.agent_id).context("--agent-id")?);
    }
    let made = berth_tls::files::ensure(&dir, &who, berth_tls::CERT_VALIDITY)
        .map_err(|e| anyhow::anyhow!(berth_tls::error_chain(&e)))?;
    berth_control::auth::ensure_admin_token(&dir)?;
    berth_control::secrets::ensure_key(&dir)?;
    if !made.is_empty() {
        tracing::info!(dir = %dir.display(), files = made.len(), "made the dev cluster's certificates");
    }
    Ok(Some(dir))
}

fn load_credentials(
    dir: &std::path::Path,
    who: berth_tls::Identity,
) -> Result<std::sync::Arc<berth_tls::grpc::Credentials>> {
    berth_tls::grpc::Credentials::load(dir, &who)
        .map(std::sync::Arc::new)
        .map_err(|e| anyhow::anyhow!(berth_tls::error_chain(&e)))
}

pub async fn dev(a: DevArgs) -> Result<ExitCode> {
    let ids = [1u64, 2, 3];
    let raft_addr = |i: u64| SocketAddr::from(([127, 0, 0, 1], a.raft_port + (i as u16 - 1)));
    let api_addr = |i: u64| SocketAddr::from(([127, 0, 0, 1], a.api_port + (i as u16 - 1)));
    let peers: std::collections::BTreeMap<u64, String> =
        ids.iter().map(|&i| (i, raft_addr(i).to_string())).collect();
    let tls = dev_credentials(&a, &ids)?;
    let mut nodes = Vec::new();
    for &i in &ids {
        let mut cfg = NodeConfig::new(
            i,
            api_addr(i),
            raft_addr(i),
            a.dir.join(format!("node-{i}")),
        );
        cfg.peers = peers.clone();
        if let Some(dir) = &tls {
            cfg.tls = Some(load_credentials(dir, berth_tls::Identity::control(i))?);
            cfg.initial_admin = berth_control::auth::initial_admin(dir)?;
            cfg.secrets_key = berth_control::secrets::read_key(dir)?.map(std::sync::Arc::new);
        }
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
    let Some(l) = leader else {
        eprintln!("berth dev: no leader elected within 30 s; stopping");
        for n in nodes {
            n.shutdown().await;
        }
        return Ok(ExitCode::FAILURE);
    };
    // The agent starts once a leader is up, so it registers at once instead of fencing
    // whatever it adopted while waiting.
    let stop_agent = shutdown::Shutdown::default();
    let agent = if a.no_agent {
        None
    } else {
        let mut cfg = berth_agent::AgentConfig::new(
            ids.iter().map(|&i| raft_addr(i).to_string()).collect(),
            a.dir.join("agent"),
        );
        cfg.id = a.agent_id.clone();
        if let Some(dir) = &tls {
            cfg.tls = Some(load_credentials(
                dir,
                berth_tls::Identity::agent(&a.agent_id)?,
            )?);
        }
        cfg.listen = a.agent_listen;
        cfg.advertise = a.agent_listen.to_string();
        let stop = stop_agent.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = berth_agent::run(cfg, async move { stop.wait().await }).await {
                eprintln!(
                    "berth dev: the local agent stopped: {e}\n  (is the Docker engine running? `berth dev --no-agent` runs without it)"
                );
            }
        }))
    };
    // The CLI finds this cluster with no flags: its endpoints and CA go in the config file.
    let config_note = match &tls {
        None => "none written (--insecure: give clients --insecure)".to_string(),
        Some(dir) => write_dev_config(&endpoints, dir),
    };
    println!("berth dev: three control nodes running, leader is node {l}");
    println!("  endpoint:  {}", endpoints.join(","));
    if let Some(dir) = &tls {
        println!(
            "  tls:       {} (mutual TLS between nodes and the agent; the API serves TLS)",
            dir.display()
        );
    }
    println!("  config:    {config_note}");
    match &agent {
        Some(_) => println!(
            "  agent:     {} on the local Docker engine (logs at {})",
            a.agent_id, a.agent_listen
        ),
        None => println!("  agent:     none (--no-agent)"),
    }
    println!("  data:      {}", a.dir.display());
    println!("  try:       berth cluster status; berth agent ls");
    println!("Ctrl-C stops the cluster; running `berth dev` again resumes it (task containers are adopted).");
    terminated().await;
    stop_agent.trigger();
    if let Some(h) = agent {
        let _ = h.await;
    }
    // All at once: a node that stopped before the others would have them fail to reach it
    // (and say so) for as long as the rest took.
    let mut stopping = tokio::task::JoinSet::new();
    for n in nodes {
        stopping.spawn(n.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    Ok(ExitCode::SUCCESS)
}

/// Points the CLI's config file at the dev cluster (its endpoints, CA and admin token
/// file); says where, or why not.
fn write_dev_config(endpoints: &[String], tls: &std::path::Path) -> String {
    let tls = std::fs::canonicalize(tls).unwrap_or_else(|_| tls.to_path_buf());
    let settings = [
        ("BERTH_ENDPOINT", endpoints.join(",")),
        (
            "BERTH_TLS_CA",
            tls.join(berth_tls::files::CA_CERT).display().to_string(),
        ),
        (
            "BERTH_TOKEN_FILE",
            tls.join(berth_control::auth::ADMIN_TOKEN_FILE)
                .display()
                .to_string(),
        ),
    ];
    let exports = settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let Some(path) = crate::config::path() else {
        return format!("none written (no HOME): export {exports}");
    };
    match crate::config::write(&path, "written by `berth dev`; the CLI reads it", &settings) {
        Ok(()) => format!(
            "{} (the CLI's endpoint, CA and admin token file)",
            path.display()
        ),
        Err(e) => format!("could not write {}: {e}; export {exports}", path.display()),
    }
}

/// `berth agent` with no subcommand: run the agent until Ctrl-C or SIGTERM. Its task
/// containers keep running; the next start adopts them.
pub async fn agent(args: berth_agent::cli::AgentArgs) -> Result<ExitCode> {
    let cfg = args.into_config()?;
    berth_agent::run(cfg, terminated()).await?;
    Ok(ExitCode::SUCCESS)
}
