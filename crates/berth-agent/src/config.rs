//! Everything an agent is started with, and the defaults (see the crate README for why
//! each default is what it is).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::RuntimeOptions;

/// The control plane's agent protocol lives on each control node's raft port.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7500";
/// Where the agent serves `AgentService` (logs).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";
pub const DEFAULT_DATA_DIR: &str = ".berth-agent";
/// Silence (no acknowledged heartbeat) after which the agent stops its own tasks. With the
/// control plane's defaults (heartbeat 1 s, DOWN after 5 s): 3.5 s + 0.5 s grace + engine
/// latency < 5 s, so a task is dead here before it can be replaced elsewhere; and 3.5 s
/// outlasts two lost heartbeats and a Raft election (0.9–1.5 s timeouts).
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_millis(3500);
/// When fencing, SIGKILL follows SIGTERM after this (not the container's stopTimeout: the
/// replacement may start soon).
pub const DEFAULT_FENCE_GRACE: Duration = Duration::from_millis(500);
/// CPU units kept back from detected capacity for the agent, the engine and the OS.
pub const CPU_RESERVE_UNITS: u32 = 256;
/// Memory kept back from detected capacity: 10 % of the host, at least this many MiB.
pub const MEMORY_RESERVE_MIN_MIB: u32 = 512;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's name in the cluster (letters, digits, `-`, `_`).
    pub id: String,
    /// Control nodes' raft addresses; any one will do, the agent moves on when one fails.
    pub control: Vec<String>,
    /// Capacity offered to tasks: CPU units (1024 = 1 vCPU) and MiB.
    pub cpu: u32,
    pub memory: u32,
    /// Placement attributes (e.g. `zone=a`).
    pub attributes: BTreeMap<String, String>,
    /// Where the agent keeps the records of tasks it ended (`DATA/tasks`).
    pub data_dir: PathBuf,
    /// Where `AgentService` (logs) listens.
    pub listen: SocketAddr,
    /// How the control plane reaches `listen` (differs behind NAT or in containers).
    pub advertise: String,
    /// Cut off from every control node this long, the agent stops its tasks. Zero: never.
    pub fence_after: Duration,
    /// SIGTERM → SIGKILL when fencing.
    pub fence_grace: Duration,
    pub runtime: RuntimeOptions,
    /// Longest a unary call to a control node (or a connect) may take.
    pub rpc_timeout: Duration,
    /// Back-off between control sessions: doubles from min to max, reset by a session that
    /// lasted.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often the engine is listed to catch container exits whose events were lost.
    pub sweep_every: Duration,
    /// How often the engine is probed, and how long a probe may take before the agent
    /// reports the engine as not answering.
    pub engine_probe_every: Duration,
    pub engine_probe_timeout: Duration,
    /// How often each running task's containers are measured (engine stats); zero: never.
    pub stats_every: Duration,
    /// How much measuring one utilization report summarizes.
    pub utilization_window: Duration,
    /// Where `/metrics` is served (Prometheus text); none: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// This agent's certificate, key and the cluster CA: calls to control nodes are mutual
    /// TLS as this agent, and the logs port takes only control nodes. None: plaintext.
    pub tls: Option<std::sync::Arc<berth_tls::grpc::Credentials>>,
    /// Refuse connections from this host's task containers to the agent's ports bound
    /// beyond loopback (iptables rules, see `berth-hostfw`).
    pub host_firewall: bool,
}

impl AgentConfig {
    /// An agent with every default: id from the host name, capacity detected from the host
    /// minus the reserve.
    pub fn new(control: Vec<String>, data_dir: PathBuf) -> Self {
        let (cpu, memory) = detect_capacity();
        let listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7600)));
        AgentConfig {
            id: default_id(),
            control,
            cpu,
            memory,
            attributes: BTreeMap::new(),
            data_dir,
            listen,
            advertise: default_advertise(listen),
            fence_after: DEFAULT_FENCE_AFTER,
            fence_grace: DEFAULT_FENCE_GRACE,
            runtime: RuntimeOptions::default(),
            rpc_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            sweep_every: Duration::from_secs(10),
            engine_probe_every: DEFAULT_ENGINE_PROBE_EVERY,
            engine_probe_timeout: DEFAULT_ENGINE_PROBE_TIMEOUT,
            stats_every: DEFAULT_STATS_EVERY,
            utilization_window: DEFAULT_UTILIZATION_WINDOW,
            metrics_listen: None,
            tls: None,
            host_firewall: true,
        }
    }
}

/// An engine that has not answered a probe for this long is reported: a hang is noticed
/// within every + timeout (15 s).
pub const DEFAULT_ENGINE_PROBE_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Tasks are measured every 5 s and summarized per minute (CloudWatch's period for ECS
/// service metrics).
pub const DEFAULT_STATS_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_UTILIZATION_WINDOW: Duration = Duration::from_secs(60);

/// The host name, made a valid agent id (other characters become `-`).
pub fn default_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(berth_core::limits::MAX_NAME_LEN)
        .collect();
    if id.is_empty() {
        "agent".to_string()
    } else {
        id
    }
}

/// `listen` as others reach it: an unspecified address (0.0.0.0) is replaced by the host
/// name.
pub fn default_advertise(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// CPU units and MiB this host can offer: all CPUs the process may use (cgroup quotas
/// included) × 1024 minus [`CPU_RESERVE_UNITS`]; `MemTotal` minus 10 % (at least
/// [`MEMORY_RESERVE_MIN_MIB`]). Never below the smallest task (256 units, 512 MiB).
pub fn detect_capacity() -> (u32, u32) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let cpu = (cpus.saturating_mul(1024))
        .saturating_sub(CPU_RESERVE_UNITS)
        .max(256);
    let total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total_kib(&s))
        .map(|kib| (kib / 1024) as u32)
        .unwrap_or(1024);
    let reserve = (total_mib / 10).max(MEMORY_RESERVE_MIN_MIB);
    let memory = total_mib.saturating_sub(reserve).max(512);
    (cpu, memory)
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_parses() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24684544 kB\nMemFree: 1 kB\n"),
            Some(24_684_544)
        );
        assert_eq!(parse_mem_total_kib("nothing"), None);
    }

    #[test]
    fn detected_capacity_keeps_a_reserve() {
        let (cpu, mem) = detect_capacity();
        let cpus = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(cpu >= 256 && cpu <= cpus * 1024);
        assert!(mem >= 512);
    }

    #[test]
    fn default_id_is_a_valid_agent_id() {
        let id = default_id();
        assert!(berth_core::validate::name("id", &id).is_ok(), "{id}");
    }

    #[test]
    fn fence_defaults_fit_inside_the_default_ttl() {
        // Control plane defaults: heartbeat 1 s, DOWN after 5 s. Leave room for the
        // engine's kill latency and the fence check's 100 ms tick.
        let ttl = Duration::from_secs(5);
        assert!(DEFAULT_FENCE_AFTER + DEFAULT_FENCE_GRACE + Duration::from_millis(500) <= ttl);
        // …and outlast two missed heartbeats plus an election.
        assert!(DEFAULT_FENCE_AFTER >= Duration::from_secs(3));
    }
}
