//! `berth bench`: measures a three-node local cluster of `berth control` processes (this
//! same binary) with fsync on, through the public gRPC API. Every figure printed is
//! measured in the run that prints it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::bearer::{Api, Bearer};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{AgentRegisterRequest, InfoRequest};
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use berth_tls::grpc::Credentials;
use berth_tls::Identity;
use clap::{Args, Subcommand};

mod agent_timing;
mod etcd;
mod placement;
mod scale;
mod schedules;
use tonic::transport::{Certificate, Channel, Endpoint};

#[derive(Args)]
pub struct BenchArgs {
    /// Where the benchmark's nodes keep their data (wiped first). Use a real disk: fsync
    /// cost is part of what is measured.
    #[arg(long, default_value = "target/bench-cluster")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Subcommand)]
pub enum Which {
    /// Committed tasks per second with many concurrent RunTask callers (group commit).
    Throughput {
        /// Concurrent callers.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Tasks per RunTask call (1..10).
        #[arg(long, default_value_t = 10)]
        count: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Send calls to the leader, or to followers (which forward).
        #[arg(long, default_value = "leader")]
        via: String,
        /// HTTP/2 connections the callers share (spread over the targets); by default one
        /// per target node.
        #[arg(long)]
        conns: Option<usize>,
    },
    /// Latency of RunTask (count 1) at a fixed arrival rate (open loop).
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "leader")]
        via: String,
    },
    /// Write gap after SIGKILL of the leader, under steady load, repeated.
    Failover {
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Calls per second of the steady load.
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// RunTask → RUNNING with a local agent on the Docker engine (image present), beside a
    /// bare `docker run -d` of the same image and command measured in the same run.
    Start {
        #[arg(long, default_value_t = 50)]
        tasks: usize,
        #[arg(long, default_value = "berth/workload")]
        image: String,
    },
    /// Many simulated agents (real protocol, mutual TLS, heartbeating every second) and
    /// many live tasks, then a steady RunTask/StopTask load: false DOWNs, elections, each
    /// node's CPU and memory, RunTask latency and snapshot costs.
    Scale {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Live tasks placed before the steady load (at most 4 per vCPU of each agent).
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        /// Length of the steady load.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// RunTask calls per second of the steady load (each followed by a StopTask).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Where agents send heartbeats: `leader`, or `any` (spread over the nodes;
        /// followers forward them).
        #[arg(long, default_value = "leader")]
        heartbeats_via: String,
        /// Each simulated agent's vCPUs (2 GiB of memory each): room for 4 tasks per vCPU.
        #[arg(long, default_value_t = 4)]
        agent_vcpus: u32,
        /// Also write every figure as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// How tightly placement packs through the control plane: a random Fargate size mix on
    /// simulated agents, agents used at each fill beside offline first-fit-decreasing.
    Placement(placement::PlacementArgs),
    /// Puts per second against an etcd v3 cluster (no Berth cluster is started), driven as
    /// `throughput` drives Berth: `scripts/bench-etcd.sh` sets the two side by side.
    Etcd(etcd::EtcdArgs),
    /// How closely schedules fire: many schedules (runs placed on simulated agents), each
    /// scheduled time's lag to the entry that recorded its run, and the records checked for
    /// every time exactly once.
    Schedules(schedules::SchedulesArgs),
    /// Tasks with a maximum run time on a real agent: the engine's SIGTERM against each
    /// container's start plus its limit.
    Timeouts(agent_timing::TimeoutsArgs),
    /// Schedules whose runs start real containers: each scheduled time to its task's
    /// RUNNING, with the image present.
    ScheduleStart(agent_timing::ScheduleStartArgs),
    /// Steady load for a while, counting elections (there should be none).
    Steady {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
}

struct Node {
    id: u64,
    api: SocketAddr,
    raft: SocketAddr,
    child: Option<Child>,
}

struct LocalCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    peers: String,
    /// The cluster's certificates (DIR/tls), as every cluster runs by default; None with
    /// --insecure, to measure what TLS costs.
    tls: Option<PathBuf>,
    /// What every API call carries: the admin token of `tls`; none without TLS.
    bearer: Bearer,
    /// The nodes' RUST_LOG.
    log: &'static str,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A channel to `addr`: plaintext without `tls`; with it, to an API port trusting the
/// cluster CA (`who` None) or to a raft port as `who`.
fn channel(addr: SocketAddr, tls: Option<&Path>, who: Option<&Identity>) -> Result<Channel> {
    let ep = Endpoint::from_shared(berth_tls::grpc::uri(&addr.to_string(), tls.is_some()))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let ep = match (tls, who) {
        (None, _) => ep,
        (Some(dir), None) => {
            let ca = std::fs::read(dir.join(berth_tls::files::CA_CERT))?;
            berth_tls::grpc::trusting(ep, Certificate::from_pem(ca))?
        }
        (Some(dir), Some(who)) => Credentials::load(dir, who)
            .map_err(|e| anyhow!(berth_tls::error_chain(&e)))?
            .secure(ep)?,
    };
    Ok(ep.connect_lazy())
}

impl LocalCluster {
    fn start(dir: &Path, insecure: bool, log: &'static str) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bearer = Bearer::default();
        let tls = if insecure {
            None
        } else {
            let tls = dir.join("tls");
            let who: Vec<Identity> = (1..=3)
                .map(Identity::control)
                .chain([
                    Identity::agent(PREPARED_AGENT)?,
                    Identity::agent(&local_agent_id())?,
                ])
                .collect();
            berth_tls::files::ensure(&tls, &who, berth_tls::CERT_VALIDITY)
                .map_err(|e| anyhow!(berth_tls::error_chain(&e)))?;
            let (token, _) = berth_control::auth::ensure_admin_token(&tls)?;
            bearer = Bearer::new(Some(&token))?;
            Some(tls)
        };
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            nodes.push(Node {
                id,
                api: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                raft: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.raft))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = LocalCluster {
            dir: dir.to_path_buf(),
            nodes,
            peers,
            tls,
            bearer,
            log,
        };
        for id in 1..=3 {
            c.spawn(id)?;
        }
        Ok(c)
    }

    fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let exe = std::env::current_exe()?;
        let dir = self.dir.clone();
        let peers = self.peers.clone();
        let security = self.security_args();
        let log_filter = self.log;
        let n = self.node(id)?;
        // Appended to: a node started again keeps its earlier log beside the new one.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{id}.log")))?;
        let child = Command::new(exe)
            .arg("control")
            .args(["--id", &id.to_string()])
            .args(["--api", &n.api.to_string()])
            .args(["--raft", &n.raft.to_string()])
            .args([
                "--data",
                &dir.join(format!("node-{id}")).display().to_string(),
            ])
            .args(["--peers", &peers])
            .args(&security)
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        n.child = Some(child);
        Ok(())
    }

    fn kill(&mut self, id: u64) -> Result<()> {
        if let Some(mut c) = self.node(id)?.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Node `id`'s API as the admin (the admin token of the cluster's directory): with
    /// TLS, every call pays for its token's check as users' calls do.
    fn api(&self, id: u64) -> Result<Api> {
        let n = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        Ok(self.bearer.on(channel(n.api, self.tls.as_deref(), None)?))
    }

    /// `--tls-dir DIR` or `--insecure`, for a node or an agent.
    fn security_args(&self) -> Vec<String> {
        match &self.tls {
            Some(dir) => vec!["--tls-dir".into(), dir.display().to_string()],
            None => vec!["--insecure".into()],
        }
    }

    fn raft(&self, id: u64) -> Result<Channel> {
        let n = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        channel(n.raft, self.tls.as_deref(), Some(&Identity::control(1)))
    }

    /// The raft port as agent `agent`.
    fn raft_as_agent(&self, id: u64, agent: &str) -> Result<Channel> {
        let n = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        channel(n.raft, self.tls.as_deref(), Some(&Identity::agent(agent)?))
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The leader the running nodes agree on, and its term.
    async fn leader(&self, within: Duration) -> Result<(u64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.running() {
                let mut c = NodeClient::new(self.raft(id)?);
                if let Ok(Ok(i)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    c.info(InfoRequest { digest: false }),
                )
                .await
                {
                    let i = i.into_inner();
                    if i.state == "leader" {
                        leaders.push((i.id, i.term));
                    }
                }
            }
            if leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if Instant::now() > deadline {
                bail!("no single leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn applied(&self, id: u64) -> Option<u64> {
        let mut c = NodeClient::new(self.raft(id).ok()?);
        match tokio::time::timeout(
            Duration::from_millis(500),
            c.info(InfoRequest { digest: false }),
        )
        .await
        {
            Ok(Ok(i)) => Some(i.into_inner().applied_index),
            _ => None,
        }
    }

    /// Registers `bench:1`, the smallest Fargate size, which every bench runs.
    async fn register_bench_definition(&self, leader: u64) -> Result<()> {
        self.register_definition(leader, "bench", 256, 512).await
    }

    /// Registers `family` (one `berth/workload` container) at a size of CPU units and MiB.
    async fn register_definition(
        &self,
        leader: u64,
        family: &str,
        cpu: u32,
        memory: u32,
    ) -> Result<()> {
        TaskDefinitionsClient::new(self.api(leader)?)
            .register(RegisterTaskDefinitionRequest {
                task_definition: Some(TaskDefinitionSpec {
                    family: family.into(),
                    cpu: Some(cpu),
                    memory: Some(memory),
                    network_mode: None,
                    container_definitions: vec![ContainerDefinition {
                        name: "app".into(),
                        image: "berth/workload".into(),
                        ..Default::default()
                    }],
                    timeouts: Default::default(),
                }),
            })
            .await?;
        Ok(())
    }

    /// A task definition and one agent big enough never to be the limit.
    async fn prepare(&self) -> Result<()> {
        let (leader, _) = self.leader(Duration::from_secs(30)).await?;
        self.register_bench_definition(leader).await?;
        AgentProtocolClient::new(self.raft_as_agent(leader, PREPARED_AGENT)?)
            .register(AgentRegisterRequest {
                agent_id: PREPARED_AGENT.into(),
                cpu: u32::MAX / 2,
                memory: u32::MAX / 2,
                attributes: Default::default(),
                address: String::new(),
            })
            .await?;
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn run_req(count: u32, token: String) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: "bench".into(),
        count,
        client_token: token,
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", millis(d))
}

/// Failed calls shared by a load's tasks: how many, and the first one's text (what a
/// person reads to see why).
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl Errors {
    fn record(&self, e: &dyn std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

async fn target_ids(c: &LocalCluster, via: &str) -> Result<Vec<u64>> {
    let (leader, _) = c.leader(Duration::from_secs(30)).await?;
    Ok(match via {
        "leader" => vec![leader],
        "follower" | "followers" => c.running().into_iter().filter(|i| *i != leader).collect(),
        "all" => c.running(),
        other => bail!("--via {other}: use leader, followers or all"),
    })
}

async fn targets(c: &LocalCluster, via: &str) -> Result<Vec<Api>> {
    target_ids(c, via)
        .await?
        .into_iter()
        .map(|i| c.api(i))
        .collect()
}

/// The capacity-only agent `prepare` registers.
const PREPARED_AGENT: &str = "bench";

/// The real agent `bench start` runs.
fn local_agent_id() -> String {
    format!("bench-{}", std::process::id())
}

pub async fn bench(a: BenchArgs, insecure: bool) -> Result<ExitCode> {
    if let Which::Etcd(args) = a.which {
        etcd::etcd(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // Snapshot builds are logged at info: the scale run reads what they cost from there.
    let log = match a.which {
        Which::Scale { .. } | Which::Schedules(_) => "warn,berth_raft::store=info",
        _ => "warn",
    };
    // An agent holds a connection to each node it heartbeats to: the leader, or all three.
    match &a.which {
        Which::Scale {
            agents,
            heartbeats_via,
            ..
        } => {
            let per_agent = if heartbeats_via == "any" { 3 } else { 1 };
            scale::raise_open_files(per_agent * *agents as u64 + 2048)?;
        }
        Which::Placement(p) => scale::raise_open_files(p.agents as u64 + 2048)?,
        Which::Schedules(s) => scale::raise_open_files(s.agents as u64 + 2048)?,
        _ => {}
    }
    let mut c = LocalCluster::start(&a.dir, insecure, log)?;
    if let Which::Placement(args) = a.which {
        placement::placement(&mut c, args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Which::Schedules(args) = a.which {
        schedules::schedules(&mut c, args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Which::Scale {
        agents,
        tasks,
        seconds,
        rate,
        heartbeats_via,
        agent_vcpus,
        report,
    } = a.which
    {
        println!(
            "cluster: 3 `berth control` processes on loopback, data in {}, fsync on every append, mutual TLS",
            a.dir.display()
        );
        scale::scale(
            &mut c,
            scale::ScaleArgs {
                agents,
                tasks,
                seconds,
                rate,
                heartbeats_via,
                agent_vcpus,
                report,
            },
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    c.prepare().await?;
    println!(
        "cluster: 3 `berth control` processes on loopback, data in {}, fsync on every append, {}",
        a.dir.display(),
        if insecure {
            "plaintext (--insecure)"
        } else {
            "mutual TLS between nodes, TLS to the API"
        }
    );
    match a.which {
        Which::Throughput {
            clients,
            count,
            seconds,
            via,
            conns,
        } => throughput(&c, clients, count, seconds, &via, conns).await?,
        Which::Latency { rate, seconds, via } => latency(&c, rate, seconds, &via).await?,
        Which::Failover { kills, rate } => failover(&mut c, kills, rate).await?,
        Which::Steady { seconds, rate } => steady(&c, seconds, rate).await?,
        Which::Start { tasks, image } => start_latency(&c, &a.dir, tasks, &image).await?,
        Which::Timeouts(args) => agent_timing::timeouts(&c, &a.dir, args).await?,
        Which::ScheduleStart(args) => agent_timing::schedule_start(&c, &a.dir, args).await?,
        Which::Scale { .. } | Which::Etcd(_) | Which::Placement(_) | Which::Schedules(_) => {
            bail!(
                "bench scale, placement, schedules and etcd are answered before the shared preparation"
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn throughput(
    c: &LocalCluster,
    clients: usize,
    count: u32,
    seconds: u64,
    via: &str,
    conns: Option<usize>,
) -> Result<()> {
    let ids = target_ids(c, via).await?;
    if ids.is_empty() {
        bail!("no running node to send to via {via}");
    }
    // `c.api` opens a connection per channel; callers share them round-robin.
    let conns = conns.unwrap_or(ids.len()).max(1);
    let targets: Vec<Api> = (0..conns)
        .map(|i| c.api(ids[i % ids.len()]))
        .collect::<Result<_>>()?;
    let (_, term0) = c.leader(Duration::from_secs(5)).await?;
    let tasks = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..clients {
        let ch = targets[w % targets.len()].clone();
        let (tasks, calls, errors, stop) =
            (tasks.clone(), calls.clone(), errors.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut client = TasksClient::new(ch);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match client.run(run_req(count, format!("t{w}-{n}"))).await {
                    Ok(r) => {
                        tasks.fetch_add(r.into_inner().tasks.len() as u64, Ordering::Relaxed);
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for h in handles {
        let _ = h.await;
    }
    let (_, term1) = c.leader(Duration::from_secs(5)).await?;
    let secs = elapsed.as_secs_f64();
    println!(
        "throughput: {clients} concurrent callers over {} connections via {via}, RunTask count {count}, {secs:.1} s",
        targets.len()
    );
    println!(
        "  committed tasks: {} ({:.0} tasks/s), calls: {} ({:.0} calls/s), errors: {}, elections during run: {}",
        tasks.load(Ordering::Relaxed),
        tasks.load(Ordering::Relaxed) as f64 / secs,
        calls.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed) as f64 / secs,
        errors.load(Ordering::Relaxed),
        term1 - term0
    );
    Ok(())
}

async fn latency(c: &LocalCluster, rate: u64, seconds: u64, via: &str) -> Result<()> {
    let targets = targets(c, via).await?;
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Duration, String>>(4096);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..total {
            // Open loop: calls leave on schedule whether or not earlier ones returned, so
            // a slow answer cannot hide behind a late request.
            let due = start + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let ch = targets[(i as usize) % targets.len()].clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = TasksClient::new(ch).run(run_req(1, format!("l{i}"))).await;
                let _ = tx
                    .send(r.map(|_| t0.elapsed()).map_err(|e| e.message().to_string()))
                    .await;
            });
        }
    });
    let mut lat = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for _ in 0..total {
        match rx.recv().await {
            Some(Ok(d)) => lat.push(d),
            Some(Err(_)) => errors += 1,
            None => break,
        }
    }
    let _ = sender.await;
    let wall = start.elapsed().as_secs_f64();
    lat.sort();
    println!("latency: RunTask count 1 at {rate} calls/s for {seconds} s via {via} ({} answered in {wall:.1} s, {errors} errors)", lat.len());
    println!(
        "  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 0.999)),
        ms(lat.last().copied().unwrap_or_default())
    );
    Ok(())
}

/// (invoked, acknowledged) instants of each write.
type Acks = Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

/// Steady load across every node; records when each write was invoked and acknowledged.
fn load(
    c: &LocalCluster,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Result<(tokio::task::JoinHandle<()>, Acks)> {
    let chans: Vec<Api> = c.nodes.iter().map(|n| c.api(n.id)).collect::<Result<_>>()?;
    let acks: Acks = Arc::default();
    let acks2 = acks.clone();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let h = tokio::spawn(async move {
        let mut i = 0u64;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
            i += 1;
            let chans = chans.clone();
            let acks = acks2.clone();
            tokio::spawn(async move {
                let invoked = Instant::now();
                // Each call tries the nodes in turn with the same token, as the CLI does.
                for attempt in 0..chans.len() * 20 {
                    let ch = chans[(i as usize + attempt) % chans.len()].clone();
                    if TasksClient::new(ch)
                        .run(run_req(1, format!("f{i}")))
                        .await
                        .is_ok()
                    {
                        if let Ok(mut a) = acks.lock() {
                            a.push((invoked, Instant::now()));
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            });
        }
    });
    Ok((h, acks))
}

async fn failover(c: &mut LocalCluster, kills: usize, rate: u64) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (h, acks) = load(c, rate, stop.clone())?;
    let mut gaps = Vec::new();
    let mut elections = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for k in 0..kills {
        let (leader, term) = c.leader(Duration::from_secs(30)).await?;
        let killed_at = Instant::now();
        c.kill(leader)?;
        // The gap: from the kill to the first acknowledgement of a write invoked after it
        // (answers already on the wire when the leader died do not count).
        let deadline = killed_at + Duration::from_secs(30);
        let gap = loop {
            let first_after = acks.lock().ok().and_then(|a| {
                a.iter()
                    .filter(|(inv, _)| *inv > killed_at)
                    .map(|(_, ack)| *ack)
                    .min()
            });
            if let Some(t) = first_after {
                break t - killed_at;
            }
            if Instant::now() > deadline {
                bail!("no write succeeded within 30 s of killing node {leader}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let (_, new_term) = c.leader(Duration::from_secs(30)).await?;
        elections.push(new_term - term);
        gaps.push(gap);
        println!(
            "  kill {:>2}: node {leader} killed, write gap {}, terms advanced {}",
            k + 1,
            ms(gap),
            new_term - term
        );
        c.spawn(leader)?;
        // Let the restarted node catch up before the next kill, so each kill leaves a
        // majority that includes an up-to-date node.
        let (l2, _) = c.leader(Duration::from_secs(30)).await?;
        let target = c.applied(l2).await.unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.applied(leader).await.unwrap_or(0) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = h.await;
    gaps.sort();
    println!("failover: {kills} leader SIGKILLs under {rate} calls/s");
    println!(
        "  write gap p50 {}  p99 {}  max {}; elections per kill (terms advanced): max {}",
        ms(percentile(&gaps, 0.5)),
        ms(percentile(&gaps, 0.99)),
        ms(gaps.last().copied().unwrap_or_default()),
        elections.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}

async fn steady(c: &LocalCluster, seconds: u64, rate: u64) -> Result<()> {
    let (_, term0) = c.leader(Duration::from_secs(5)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (h, acks) = load(c, rate, stop.clone())?;
    let started = Instant::now();
    let mut terms_seen = vec![term0];
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, t) = c.leader(Duration::from_secs(30)).await?;
        if terms_seen.last() != Some(&t) {
            terms_seen.push(t);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = h.await;
    let (_, term1) = c.leader(Duration::from_secs(5)).await?;
    let n = acks.lock().map(|a| a.len()).unwrap_or(0);
    let st = ClusterClient::new(c.api(1)?)
        .status(ClusterStatusRequest {})
        .await?
        .into_inner();
    println!(
        "steady: {seconds} s at {rate} calls/s: {n} writes acknowledged, final revision {}",
        st.revision
    );
    println!("  elections: {} (term {term0} → {term1})", term1 - term0);
    Ok(())
}

/// Runs `docker` and returns stdout, or an error with stderr.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A real agent (this binary) on the local Docker engine, registered with the bench
/// cluster; the capacity-only agent `prepare` registered is drained so every task lands
/// here.
struct LocalAgent {
    child: Child,
    id: String,
}

impl LocalAgent {
    /// Checks that `image` is present, then starts the agent; returns it with a channel to
    /// the leader.
    async fn start(c: &LocalCluster, dir: &Path, image: &str) -> Result<(Self, Api)> {
        docker(&["image", "inspect", image])
            .with_context(|| format!("image {image} is not present; run deploy/images/build.sh"))?;
        let (leader, _) = c.leader(Duration::from_secs(30)).await?;
        let api = &c.api(leader)?;
        let control = c
            .nodes
            .iter()
            .map(|n| n.raft.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let id = local_agent_id();
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("agent")
            .args([
                "--control",
                &control,
                "--id",
                &id,
                "--cpu",
                "1000000",
                "--memory",
                "1000000",
            ])
            .args([
                "--data",
                &dir.join("agent").display().to_string(),
                "--listen",
                &format!("127.0.0.1:{}", free_port()?),
            ])
            .args(c.security_args())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        let agent = LocalAgent { child, id };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = berth_proto::v1::agents_client::AgentsClient::new(api.clone())
                .describe(DescribeAgentRequest {
                    agent_id: agent.id.clone(),
                    stale: false,
                })
                .await;
            if r.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                agent.stop();
                bail!(
                    "the agent did not register; see {}",
                    dir.join("agent.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = berth_proto::v1::agents_client::AgentsClient::new(api.clone())
            .drain(DrainAgentRequest {
                agent_id: "bench".into(),
                drain: true,
            })
            .await
        {
            agent.stop();
            bail!("draining the capacity-only agent: {}", e.message());
        }
        Ok((agent, api.clone()))
    }

    /// Kills the agent and removes the containers it left.
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(left) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.agent={}", self.id),
        ]) {
            for id in left.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

async fn start_latency(c: &LocalCluster, dir: &Path, tasks: usize, image: &str) -> Result<()> {
    let (agent, api) = LocalAgent::start(c, dir, image).await?;
    let result = async {
        TaskDefinitionsClient::new(api.clone())
            .register(RegisterTaskDefinitionRequest {
                task_definition: Some(TaskDefinitionSpec {
                    family: "start".into(),
                    cpu: Some(256),
                    memory: Some(512),
                    network_mode: None,
                    container_definitions: vec![ContainerDefinition {
                        name: "app".into(),
                        image: image.into(),
                        command: vec!["sleep".into(), "3600".into()],
                        stop_timeout: Some(1),
                        ..Default::default()
                    }],
                    timeouts: Default::default(),
                }),
            })
            .await?;
        let mut watch = TasksClient::new(api.clone())
            .watch(WatchTasksRequest {
                family: "start".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut berth = Vec::new();
        let mut ids = Vec::new();
        for i in 0..tasks {
            let t0 = Instant::now();
            let r = TasksClient::new(api.clone())
                .run(run_start(i))
                .await?
                .into_inner();
            let id = r
                .tasks
                .first()
                .map(|t| t.task_id.clone())
                .ok_or_else(|| anyhow!("task {i} not placed: {:?}", r.failures))?;
            loop {
                let ev = tokio::time::timeout(
                    Duration::from_secs(60),
                    tokio_stream::StreamExt::next(&mut watch),
                )
                .await
                .map_err(|_| anyhow!("task {id} not RUNNING within 60 s"))?
                .ok_or_else(|| anyhow!("watch ended"))??;
                if let Some(t) = ev.task {
                    if t.task_id == id && t.last_status == "RUNNING" {
                        break;
                    }
                    if t.task_id == id && t.last_status == "STOPPED" {
                        bail!("task {id} stopped: {}", t.stopped_reason);
                    }
                }
            }
            berth.push(t0.elapsed());
            ids.push(id);
        }
        // The same image and command, started bare, one after another.
        let mut bare = Vec::new();
        let mut bare_ids = Vec::new();
        for _ in 0..tasks {
            let t0 = Instant::now();
            let id = docker(&[
                "run",
                "-d",
                "--label",
                "berth.bench=bare",
                image,
                "sleep",
                "3600",
            ])?;
            bare.push(t0.elapsed());
            bare_ids.push(id);
        }
        for id in &bare_ids {
            let _ = docker(&["rm", "-f", id]);
        }
        for id in &ids {
            let _ = TasksClient::new(api.clone())
                .stop(StopTaskRequest {
                    task_id: id.clone(),
                    reason: "bench over".into(),
                })
                .await;
        }
        berth.sort();
        bare.sort();
        let (b50, b99) = (percentile(&berth, 0.5), percentile(&berth, 0.99));
        let (d50, d99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
        println!(
            "start: {tasks} tasks one after another, image present, agent on the local engine"
        );
        println!(
            "  RunTask → RUNNING (watch event):  p50 {}  p99 {}  max {}",
            ms(b50),
            ms(b99),
            ms(berth.last().copied().unwrap_or_default())
        );
        println!(
            "  bare `docker run -d`:            p50 {}  p99 {}  max {}",
            ms(d50),
            ms(d99),
            ms(bare.last().copied().unwrap_or_default())
        );
        println!("  overhead at p50: {}", ms(b50.saturating_sub(d50)));
        // Give the agent a moment to stop and remove the tasks' containers.
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }
    .await;
    agent.stop();
    result
}

fn run_start(i: usize) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: "start".into(),
        count: 1,
        client_token: format!("start-{i}"),
        ..Default::default()
    }
}
