//! The compose cluster as the suite drives it: containers (by the names in
//! deploy/docker-compose.yml), their loopback ports, the docker CLI for faults, iptables
//! inside the control containers for partitions, and Node.Info on the raft ports.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{InfoRequest, NodeInfo};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::process::Command;

use berth_proto::bearer::{Api, Bearer};
use berth_tls::grpc::Credentials;
use berth_tls::Identity;
use tonic::transport::{Certificate, Channel, Endpoint};

/// Longest any docker CLI call may take (a `docker stop` waits for the grace period).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a Node.Info may take; a paused or partitioned node must not stall the suite.
const INFO_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Clone)]
pub struct Cluster {
    /// Control node ids, 1..=n.
    pub ids: Vec<u64>,
    /// Agents' container names and ids, when real agents run (empty with simulated ones).
    pub agents: Vec<(String, String)>,
    /// First loopback API port (node i listens on base + i - 1), and the raft port base.
    pub api_base: u16,
    pub raft_base: u16,
    raft: Vec<Channel>,
}

impl Cluster {
    pub fn new(n: u64, real_agents: bool) -> Result<Self> {
        let ids: Vec<u64> = (1..=n).collect();
        let raft_base = 17500;
        let raft = ids
            .iter()
            .map(|&i| {
                raft_channel(
                    &format!("127.0.0.1:{}", raft_base + i as u16 - 1),
                    INFO_TIMEOUT,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let agents = if real_agents {
            ["a", "b", "c"]
                .iter()
                .map(|z| (format!("berth-agent-{z}"), format!("compose-{z}")))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Cluster {
            ids,
            agents,
            api_base: 17400,
            raft_base,
            raft,
        })
    }

    pub fn container(&self, id: u64) -> String {
        format!("berth-control-{id}")
    }

    pub fn api_endpoints(&self) -> Vec<String> {
        self.ids
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.api_base + i as u16 - 1))
            .collect()
    }

    pub fn raft_endpoint(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.raft_base + id as u16 - 1)
    }

    /// Node.Info of one node; `digest` also asks for the state digest.
    pub async fn info(&self, id: u64, digest: bool) -> Result<NodeInfo> {
        let ch = self
            .raft
            .get((id - 1) as usize)
            .cloned()
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let r = tokio::time::timeout(
            INFO_TIMEOUT * if digest { 4 } else { 1 },
            NodeClient::new(ch).info(InfoRequest { digest }),
        )
        .await
        .map_err(|_| anyhow!("node {id}: Info timed out"))?
        .map_err(|s| anyhow!("node {id}: {}", s.message()))?;
        Ok(r.into_inner())
    }

    /// Every node's Info, in id order (errors for the unreachable ones), asked together.
    pub async fn infos(&self, digest: bool) -> Vec<(u64, Result<NodeInfo>)> {
        let futs = self
            .ids
            .iter()
            .map(|&i| async move { (i, self.info(i, digest).await) });
        futures::future::join_all(futs).await
    }

    /// The leader, as the reachable nodes see it: a node that says it leads at the highest
    /// term seen. `None` while there is none (election, no majority).
    pub async fn leader(&self) -> Option<u64> {
        let infos = self.infos(false).await;
        let mut best: Option<(u64, u64)> = None;
        for (id, r) in infos {
            if let Ok(i) = r {
                if i.state == "leader" && best.is_none_or(|(t, _)| i.term > t) {
                    best = Some((i.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits until a leader is known and every node in `up` answers with it as leader.
    pub async fn wait_healthy(&self, up: &BTreeSet<u64>, within: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let infos = self.infos(false).await;
            let mut leader = None;
            let mut agree = true;
            for (id, r) in &infos {
                if !up.contains(id) {
                    continue;
                }
                match r {
                    Ok(i) => match (i.leader_id, leader) {
                        (Some(l), None) => leader = Some(l),
                        (Some(l), Some(x)) if l == x => {}
                        _ => agree = false,
                    },
                    Err(_) => agree = false,
                }
            }
            if agree {
                if let Some(l) = leader {
                    return Ok(l);
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "cluster not healthy after {within:?}: {}",
                    describe_infos(&infos)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ------------------------------------------------------------------ docker

    // Nodes and agents run under deploy/berth-keep (run.sh sets BERTH_ENTRYPOINT): a kill or
    // stop ends the process inside and the container stays up, so no fault makes the engine
    // remove a network endpoint — Docker 20.10 can deadlock doing that (moby/moby#42545).

    /// SIGKILL the node's (or agent's) process; it stays down until `start`.
    pub async fn kill(&self, container: &str) -> Result<()> {
        docker(&["exec", container, "berth-keep", "kill"])
            .await
            .map(drop)
    }
    /// Starts the process again (and the container first, should it not be running).
    pub async fn start(&self, container: &str) -> Result<()> {
        if self.container_state(container).await? != "running" {
            docker(&["start", container]).await?;
        }
        docker(&["exec", container, "berth-keep", "start"])
            .await
            .map(drop)
    }
    /// SIGTERM, SIGKILL after 5 s; the process stays down until `start`.
    pub async fn stop_graceful(&self, container: &str) -> Result<()> {
        docker(&["exec", container, "berth-keep", "stop", "5"])
            .await
            .map(drop)
    }
    pub async fn pause(&self, container: &str) -> Result<()> {
        docker(&["pause", container]).await.map(drop)
    }
    pub async fn unpause(&self, container: &str) -> Result<()> {
        docker(&["unpause", container]).await.map(drop)
    }
    /// The process's state: "running", "paused" (the container is), "exited" (killed or
    /// stopped and not started again), or the container's own state when it does not run.
    pub async fn status(&self, container: &str) -> Result<String> {
        let state = self.container_state(container).await?;
        if state != "running" {
            return Ok(state);
        }
        Ok(docker(&["exec", container, "berth-keep", "status"])
            .await?
            .trim()
            .to_string())
    }
    /// "running", "paused", "exited", … or an error when the container does not exist.
    async fn container_state(&self, container: &str) -> Result<String> {
        Ok(
            docker(&["inspect", "--format", "{{.State.Status}}", container])
                .await?
                .trim()
                .to_string(),
        )
    }

    /// The container's address on the compose network.
    pub async fn ip(&self, id: u64) -> Result<String> {
        let out = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &self.container(id),
        ])
        .await?;
        out.split_whitespace()
            .next()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("node {id} has no address"))
    }

    /// Cuts the given links between control nodes, both directions, with the rules on both
    /// sides (rules on one side would do; both sides keep the cut when one of them
    /// restarts). Each node gets all of its rules in one `docker exec` and the nodes get
    /// theirs at the same time: applied one rule per exec, an isolation took a second or
    /// more to close under load, and half-cut links in the meantime (a leader that no
    /// longer hears a follower which still hears it) drew the outage out.
    pub async fn cut(&self, links: &[(u64, u64)]) -> Result<()> {
        let mut ips = std::collections::BTreeMap::new();
        for &(a, b) in links {
            for id in [a, b] {
                if let std::collections::btree_map::Entry::Vacant(e) = ips.entry(id) {
                    e.insert(self.ip(id).await?);
                }
            }
        }
        let mut rules: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for &(a, b) in links {
            rules.entry(a).or_default().push(ips[&b].clone());
            rules.entry(b).or_default().push(ips[&a].clone());
        }
        let futs = rules
            .iter()
            .map(|(&node, peers)| self.drop_peers(self.container(node), peers.clone()));
        for r in futures::future::join_all(futs).await {
            r?;
        }
        Ok(())
    }

    /// Drops all traffic between a container and the given addresses, in one exec.
    async fn drop_peers(&self, container: String, peers: Vec<String>) -> Result<()> {
        let script = peers
            .iter()
            .map(|p| {
                format!("iptables -I INPUT -s {p} -j DROP && iptables -I OUTPUT -d {p} -j DROP")
            })
            .collect::<Vec<_>>()
            .join(" && ");
        docker(&["exec", &container, "sh", "-c", &script]).await?;
        Ok(())
    }

    /// Cuts an agent container off from every control node (rules on the control nodes'
    /// side, which have NET_ADMIN; `heal` removes them with the rest).
    pub async fn cut_agent(&self, container: &str) -> Result<()> {
        let out = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ])
        .await?;
        let ip = out
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow!("agent {container} has no address"))?
            .to_string();
        let futs = self
            .ids
            .iter()
            .map(|&id| self.drop_peers(self.container(id), vec![ip.clone()]));
        for r in futures::future::join_all(futs).await {
            r?;
        }
        Ok(())
    }

    /// Removes every partition rule on every running control node.
    pub async fn heal(&self) {
        for &id in &self.ids {
            let c = self.container(id);
            if self.status(&c).await.ok().as_deref() == Some("paused") {
                let _ = self.unpause(&c).await;
            }
            let _ = docker(&["exec", &c, "iptables", "-F", "INPUT"]).await;
            let _ = docker(&["exec", &c, "iptables", "-F", "OUTPUT"]).await;
        }
    }

    /// Running task containers of one agent: (count, memory MiB summed, nano-CPUs summed).
    pub async fn agent_containers(&self, agent_id: &str) -> Result<(u32, u64, u64)> {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=berth.agent={agent_id}"),
            "--filter",
            "status=running",
        ])
        .await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok((0, 0, 0));
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}}",
        ];
        args.extend(ids.iter().copied());
        let out = docker(&args).await?;
        let (mut n, mut mem, mut cpu) = (0u32, 0u64, 0u64);
        for line in out.lines() {
            let f: Vec<u64> = line
                .split_whitespace()
                .map(|x| x.parse::<i64>().unwrap_or(0).max(0) as u64)
                .collect();
            if f.len() < 4 {
                continue;
            }
            n += 1;
            mem += f[0] / (1024 * 1024);
            cpu += if f[1] > 0 {
                f[1]
            } else {
                (f[2] * 1_000_000_000).checked_div(f[3]).unwrap_or(0)
            };
        }
        Ok((n, mem, cpu))
    }
}

pub fn describe_infos(infos: &[(u64, Result<NodeInfo>)]) -> String {
    infos
        .iter()
        .map(|(id, r)| match r {
            Ok(i) => format!(
                "{id}:{} term {} leader {:?} applied {}",
                i.state, i.term, i.leader_id, i.applied_index
            ),
            Err(e) => format!("{id}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the harness reaches the cluster: over TLS with the certificates deploy/up.sh made
/// (the API trusting the CA, as the admin of its admin.token; the raft port as control
/// node 1 for Node.Info, as each simulated agent for the agent protocol), or in plaintext
/// when the cluster runs with --insecure.
struct Tls {
    dir: PathBuf,
    ca: Certificate,
    control: Credentials,
    admin: Bearer,
}

static TLS: OnceLock<Option<Tls>> = OnceLock::new();

/// Sets how every later channel is made: TLS from `dir`, or plaintext when None. Once.
pub fn init_tls(dir: Option<&Path>) -> Result<()> {
    let tls = match dir {
        None => None,
        Some(dir) => {
            let control = Credentials::load(dir, &Identity::control(1))
                .map_err(|e| anyhow!("--tls-dir: {}", berth_tls::error_chain(&e)))?;
            let ca_path = dir.join(berth_tls::files::CA_CERT);
            let ca = std::fs::read(&ca_path)
                .with_context(|| format!("--tls-dir: {}", ca_path.display()))?;
            let token_path = dir.join(berth_tls::files::ADMIN_TOKEN);
            let token = std::fs::read_to_string(&token_path).with_context(|| {
                format!(
                    "--tls-dir: {} (deploy/up.sh makes it; `berth tls admin-token --dir DIR` \
                     for an older directory)",
                    token_path.display()
                )
            })?;
            Some(Tls {
                dir: dir.to_path_buf(),
                ca: Certificate::from_pem(ca),
                control,
                admin: Bearer::new(Some(token.trim()))?,
            })
        }
    };
    TLS.set(tls)
        .map_err(|_| anyhow!("channel security set twice"))
}

fn tls() -> Option<&'static Tls> {
    TLS.get().and_then(Option::as_ref)
}

fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint> {
    Ok(
        Endpoint::from_shared(berth_tls::grpc::uri(addr, tls().is_some()))
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true),
    )
}

/// A channel to a control node's API, as its admin, that connects on first use and
/// reconnects by itself; `timeout` bounds every request on it.
pub fn lazy_channel(addr: &str, timeout: Duration) -> Result<Api> {
    let ep = endpoint(addr, timeout)?;
    Ok(match tls() {
        None => Bearer::default().on(ep.connect_lazy()),
        Some(t) => t
            .admin
            .on(berth_tls::grpc::trusting(ep, t.ca.clone())?.connect_lazy()),
    })
}

/// A channel to a control node's raft port as control node 1 (Node.Info).
pub fn raft_channel(addr: &str, timeout: Duration) -> Result<Channel> {
    secure_as(endpoint(addr, timeout)?, tls().map(|t| &t.control))
}

/// A channel to a control node's raft port as agent `agent_id`, whose certificate is made
/// in the TLS directory when missing: an agent speaks only for itself.
pub fn agent_channel(addr: &str, timeout: Duration, agent_id: &str) -> Result<Channel> {
    let ep = endpoint(addr, timeout)?;
    let Some(t) = tls() else {
        return Ok(ep.connect_lazy());
    };
    let who = Identity::agent(agent_id)?;
    berth_tls::files::ensure(&t.dir, std::slice::from_ref(&who), berth_tls::CERT_VALIDITY)
        .map_err(|e| anyhow!(berth_tls::error_chain(&e)))?;
    let creds = Credentials::load(&t.dir, &who).map_err(|e| anyhow!(berth_tls::error_chain(&e)))?;
    secure_as(ep, Some(&creds))
}

fn secure_as(ep: Endpoint, creds: Option<&Credentials>) -> Result<Channel> {
    Ok(match creds {
        None => ep,
        Some(c) => c.secure(ep)?,
    }
    .connect_lazy())
}

/// A docker command that did not return: the engine itself is stuck, and no later fault or
/// check could be trusted, so the run stops as "could not be made" rather than blaming Berth.
#[derive(Debug)]
pub struct EngineHung(pub String);

impl std::fmt::Display for EngineHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`docker {}` did not return within {DOCKER_TIMEOUT:?}: the Docker engine is hung \
             (on Docker 20.10 a known network-controller deadlock, moby/moby#42545, does this; \
             restart dockerd)",
            self.0
        )
    }
}

impl std::error::Error for EngineHung {}

/// Runs the docker CLI; its stdout, or an error with its stderr.
pub async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        DOCKER_TIMEOUT,
        Command::new("docker")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::Error::new(EngineHung(args.join(" "))))?
    .with_context(|| "running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
