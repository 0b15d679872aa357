//! A cluster of `berth control` processes on loopback, for integration tests. Each node is
//! a separate OS process of the built binary, so kill -9 is a real kill -9.

#![allow(dead_code)]

pub mod agent;
pub mod service;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use berth_proto::bearer::{Api, Bearer};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{AgentRegisterRequest, InfoRequest, NodeInfo};
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use berth_tls::grpc::Credentials;
use berth_tls::Identity;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

/// A port nobody listens on right now. Binding port 0 and releasing it leaves a small
/// window for another process to take it; good enough on a test machine.
/// A port no other node of this test process has had. Ports the kernel hands out for
/// `bind(0)` come from the ephemeral range, where a node killed for a restart could find its
/// port taken by a concurrently running test's new node (seen once: a wiped node's peers
/// reached another test's cluster). So ports come from a counter below that range (32768+),
/// offset by the process id, and are checked to be free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12_000 + (std::process::id() % 20) as u16 * 1_000;
    for _ in 0..1_000 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 1_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free local port between {base} and {}", base + 999)
}

pub struct NodeProc {
    pub id: u64,
    pub api: SocketAddr,
    pub raft: SocketAddr,
    /// Every node serves `/metrics` here.
    pub metrics: SocketAddr,
    pub data: PathBuf,
    child: Option<Child>,
}

/// This test process's cluster identity (`berth tls` layout): one CA, and certificates made
/// on first use, shared by every cluster and agent the process starts. Clusters run on TLS
/// as users' do; one started with `--insecure` runs without.
pub fn tls_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        // Before any node starts: control nodes take it as the cluster's first token.
        berth_control::auth::ensure_admin_token(&d).expect("make the admin token");
        berth_control::secrets::ensure_key(&d).expect("make the secrets key");
        d
    })
}

/// The admin token of [`tls_dir`]: every test cluster on TLS takes it as its first token.
pub fn admin_token() -> String {
    berth_control::auth::read_admin_token(tls_dir())
        .expect("read the admin token")
        .expect("the admin token is made with the directory")
}

/// `ch` carrying `token` on every call.
pub fn with_token(ch: Channel, token: &str) -> Api {
    Bearer::new(Some(token)).expect("token").on(ch)
}

/// `who`'s credentials from [`tls_dir`], made when missing.
pub fn credentials(who: &Identity) -> Credentials {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    berth_tls::files::ensure(
        tls_dir(),
        std::slice::from_ref(who),
        berth_tls::CERT_VALIDITY,
    )
    .expect("make test certificates");
    Credentials::load(tls_dir(), who).expect("load test certificates")
}

/// The test CA's certificate file.
pub fn ca_file() -> PathBuf {
    credentials(&Identity::control(1));
    tls_dir().join(berth_tls::files::CA_CERT)
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Started with TLS (the default) rather than `--insecure`.
    pub secure: bool,
    pub nodes: BTreeMap<u64, NodeProc>,
    peers: String,
    extra: Vec<String>,
    /// Environment given to every node process besides RUST_LOG.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `n` nodes forming one cluster; `extra` flags go to every node.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Self::start_with_env(n, extra, &[])
    }

    /// As `start`, with environment variables for every node process.
    pub fn start_with_env(n: u64, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Self::new_node(dir.path(), id));
        }
        let peers = nodes
            .values()
            .map(|p| format!("{}={}", p.id, p.raft))
            .collect::<Vec<_>>()
            .join(",");
        let secure = !extra.contains(&"--insecure");
        if secure {
            for id in nodes.keys() {
                credentials(&Identity::control(*id));
            }
        }
        let mut c = Cluster {
            dir,
            secure,
            nodes,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    fn new_node(dir: &Path, id: u64) -> NodeProc {
        NodeProc {
            id,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            raft: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data: dir.join(format!("node-{id}")),
            child: None,
        }
    }

    /// Adds a node that is not among the initial peers (to be joined).
    pub fn add_blank_node(&mut self, id: u64) {
        let p = Self::new_node(self.dir.path(), id);
        if self.secure {
            credentials(&Identity::control(id));
        }
        self.nodes.insert(id, p);
        self.spawn_with(id, false);
    }

    pub fn spawn(&mut self, id: u64) {
        self.spawn_with(id, true);
    }

    fn spawn_with(&mut self, id: u64, with_peers: bool) {
        let peers = if with_peers && self.peers.contains(&format!("{id}=")) {
            self.peers.clone()
        } else {
            String::new()
        };
        let p = self.nodes.get_mut(&id).expect("unknown node");
        assert!(p.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log file");
        let child = Command::new(BIN)
            .arg("control")
            .args(["--id", &id.to_string()])
            .args(["--api", &p.api.to_string()])
            .args(["--raft", &p.raft.to_string()])
            .args(["--data", &p.data.display().to_string()])
            .args(["--peers", &peers])
            .args(["--metrics", &p.metrics.to_string()])
            .args(if self.secure {
                vec!["--tls-dir".to_string(), tls_dir().display().to_string()]
            } else {
                vec![]
            })
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn berth control");
        p.child = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT: frozen, the node neither answers nor loses its
    /// connections, as a node behind a silent partition.
    pub fn signal(&self, id: u64, sig: &str) {
        let pid = self.nodes[&id]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    pub fn wipe(&mut self, id: u64) {
        let p = &self.nodes[&id];
        assert!(p.child.is_none(), "stop node {id} before wiping it");
        let _ = std::fs::remove_dir_all(&p.data);
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|p| p.child.is_some())
            .map(|p| p.id)
            .collect()
    }

    pub fn endpoint(&self) -> String {
        self.nodes
            .values()
            .map(|p| p.api.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node's API as its admin: over TLS trusting the test CA with the admin token
    /// (plaintext and no token when `--insecure`).
    pub fn api(&self, id: u64) -> Api {
        let addr = self.nodes[&id].api.to_string();
        if self.secure {
            channel(&addr)
        } else {
            Bearer::default().on(plain_channel(&addr))
        }
    }

    /// The node's API with `token` (or none), over TLS trusting the test CA.
    pub fn api_with(&self, id: u64, token: Option<&str>) -> Api {
        let ch = channel_trusting(&self.nodes[&id].api.to_string(), &ca_file());
        Bearer::new(token).expect("token").on(ch)
    }

    /// The node's API with `token`, acting in namespace `ns` (the `berth-namespace` header).
    pub fn api_in(&self, id: u64, token: &str, ns: &str) -> Api {
        let ch = channel_trusting(&self.nodes[&id].api.to_string(), &ca_file());
        Bearer::new(Some(token))
            .and_then(|b| b.in_namespace(Some(ns)))
            .expect("token and namespace")
            .on(ch)
    }

    /// The node's raft port as a control node (node 1's certificate) would call it.
    pub fn raft(&self, id: u64) -> Channel {
        self.raft_as(id, &Identity::control(1))
    }

    /// The node's raft port as agent `agent` calls it: an agent speaks only for itself.
    pub fn raft_agent(&self, id: u64, agent: &str) -> Channel {
        self.raft_as(id, &Identity::agent(agent).expect("agent id"))
    }

    pub fn raft_as(&self, id: u64, who: &Identity) -> Channel {
        let addr = self.nodes[&id].raft.to_string();
        if self.secure {
            channel_as(&addr, &credentials(who))
        } else {
            plain_channel(&addr)
        }
    }

    /// Runs the `berth` CLI against this cluster as a user would (its CA trusted, or
    /// `--insecure`) and waits for it.
    pub fn berth(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = cli_command(&self.endpoint());
        if !self.secure {
            cmd.env_remove("BERTH_TLS_CA").env("BERTH_INSECURE", "1");
        }
        cmd.args(args).output().expect("run berth")
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Node's own figures, or None when it does not answer.
    pub async fn info(&self, id: u64, digest: bool) -> Option<NodeInfo> {
        let mut c = NodeClient::new(self.raft(id));
        match tokio::time::timeout(Duration::from_secs(2), c.info(InfoRequest { digest })).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// Waits until the running nodes agree on a leader among them.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.running() {
                if let Some(i) = self.info(id, false).await {
                    if i.state == "leader" {
                        leaders.push(i.id);
                    }
                }
            }
            if leaders.len() == 1 {
                return leaders[0];
            }
            if Instant::now() > deadline {
                panic!(
                    "no single leader within {within:?} (saw {leaders:?})\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        'outer: loop {
            for id in self.running() {
                let ok = self
                    .info(id, false)
                    .await
                    .is_some_and(|i| i.applied_index >= index);
                if !ok {
                    if Instant::now() > deadline {
                        panic!(
                            "node {id} did not apply {index} within {within:?}\n{}",
                            self.logs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            }
            return;
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for id in self.nodes.keys() {
            let log = self.log(*id);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("--- node {id} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    pub fn follower_of(&self, leader: u64) -> u64 {
        *self
            .running()
            .iter()
            .find(|id| **id != leader)
            .expect("no follower running")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A channel to a control node's API at `addr` as its admin: over TLS trusting the test
/// CA, carrying the admin token.
pub fn channel(addr: &str) -> Api {
    with_token(channel_trusting(addr, &ca_file()), &admin_token())
}

/// A channel to an API over TLS trusting the CA in `ca` (e.g. `berth dev`'s own).
pub fn channel_trusting(addr: &str, ca: &Path) -> Channel {
    let pem = std::fs::read(ca).expect("read the CA");
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name("127.0.0.1"),
        )
        .expect("tls")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

/// A plaintext channel, for a cluster started with `--insecure`.
pub fn plain_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

/// A mutual-TLS channel presenting `creds` (a raft port).
pub fn channel_as(addr: &str, creds: &Credentials) -> Channel {
    let ep = Endpoint::from_shared(format!("https://{addr}")).expect("endpoint");
    creds
        .secure(ep)
        .expect("tls")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

pub fn web_spec(family: &str) -> TaskDefinitionSpec {
    TaskDefinitionSpec {
        family: family.into(),
        cpu: Some(256),
        memory: Some(512),
        network_mode: None,
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            command: vec!["sleep".into(), "3600".into()],
            ..Default::default()
        }],
        timeouts: Default::default(),
    }
}

/// One `berth/workload` container running `command`, 256 CPU / 512 MiB, network `none`
/// (no bridge endpoint per task: the tests churn containers, and this engine's network
/// controller is the part that deadlocks under churn), stopped within 2 s.
pub fn quiet_spec(family: &str, command: &[&str]) -> TaskDefinitionSpec {
    TaskDefinitionSpec {
        family: family.into(),
        cpu: Some(256),
        memory: Some(512),
        network_mode: Some("none".into()),
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            stop_timeout: Some(2),
            ..Default::default()
        }],
        timeouts: Default::default(),
    }
}

/// The `berth` CLI aimed at `endpoint` over TLS trusting the test CA, as the admin (the
/// admin token file), with no config file
/// or environment of the person running the tests in the way.
pub fn cli_command(endpoint: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("BERTH_ENDPOINT", endpoint)
        .env("BERTH_TLS_CA", ca_file())
        .env(
            "BERTH_TOKEN_FILE",
            tls_dir().join(berth_control::auth::ADMIN_TOKEN_FILE),
        )
        .env_remove("BERTH_TOKEN")
        .env("BERTH_CONFIG", "/nonexistent/berth-config")
        .env_remove("BERTH_INSECURE")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the `berth` CLI against `endpoint` (a TLS cluster of this process) and waits for it.
pub fn berth(endpoint: &str, args: &[&str]) -> std::process::Output {
    cli_command(endpoint)
        .args(args)
        .output()
        .expect("run berth")
}

pub async fn register(ch: Api, spec: TaskDefinitionSpec) -> Result<TaskDefinition, tonic::Status> {
    TaskDefinitionsClient::new(ch)
        .register(RegisterTaskDefinitionRequest {
            task_definition: Some(spec),
        })
        .await
        .map(|r| {
            r.into_inner()
                .task_definition
                .expect("definition in answer")
        })
}

impl Cluster {
    /// Registers agent `id` through node `node`'s raft port, as that agent (its own
    /// certificate on TLS).
    pub async fn register_agent(
        &self,
        node: u64,
        id: &str,
        cpu: u32,
        memory: u32,
        attrs: &[(&str, &str)],
    ) {
        register_agent(self.raft_agent(node, id), id, cpu, memory, attrs).await
    }
}

pub async fn register_agent(ch: Channel, id: &str, cpu: u32, memory: u32, attrs: &[(&str, &str)]) {
    AgentProtocolClient::new(ch)
        .register(AgentRegisterRequest {
            agent_id: id.into(),
            cpu,
            memory,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            address: String::new(),
        })
        .await
        .expect("agent registration");
}

pub async fn run(
    ch: Api,
    family: &str,
    count: u32,
    token: &str,
) -> Result<RunTaskResponse, tonic::Status> {
    TasksClient::new(ch)
        .run(RunTaskRequest {
            task_definition: family.into(),
            count,
            client_token: token.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn all_tasks(ch: Api, stale: bool) -> Vec<Task> {
    let mut out = Vec::new();
    let mut next_token = String::new();
    loop {
        let r = TasksClient::new(ch.clone())
            .list(ListTasksRequest {
                max_results: 1000,
                next_token: next_token.clone(),
                stale,
                ..Default::default()
            })
            .await
            .expect("list tasks")
            .into_inner();
        out.extend(r.tasks);
        if r.next_token.is_empty() {
            return out;
        }
        next_token = r.next_token;
    }
}

pub async fn status(ch: Api) -> ClusterStatusResponse {
    ClusterClient::new(ch)
        .status(ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}
