//! The agent's command-line flags, for the `berth` binary to embed (`berth agent [ARGS]`).
//! Every flag can also come from a `BERTH_*` environment variable (agent-specific ones are
//! `BERTH_AGENT_*`, so they never collide with a control node's `BERTH_ID`/`BERTH_DATA`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, AgentConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Control nodes' raft addresses, comma-separated (the agent protocol lives on the raft
    /// port). Any one will do; the agent moves to another when one fails.
    #[arg(long, env = "BERTH_CONTROL", value_delimiter = ',', default_value = config::DEFAULT_CONTROL)]
    pub control: Vec<String>,
    /// This agent's id (letters, digits, `-`, `_`). Default: the host name.
    #[arg(long, env = "BERTH_AGENT_ID")]
    pub id: Option<String>,
    /// CPU units offered to tasks (1024 = 1 vCPU). Default: the host's CPUs × 1024 − 256.
    #[arg(long, env = "BERTH_AGENT_CPU")]
    pub cpu: Option<u32>,
    /// MiB offered to tasks. Default: the host's memory − 10 % (at least 512 MiB kept back).
    #[arg(long, env = "BERTH_AGENT_MEMORY")]
    pub memory: Option<u32>,
    /// KEY=VALUE placement attribute, repeatable (e.g. --attr zone=a); comma-separated in
    /// the environment variable.
    #[arg(long = "attr", env = "BERTH_AGENT_ATTR", value_delimiter = ',')]
    pub attrs: Vec<String>,
    /// Directory for the agent's records of tasks it ended.
    #[arg(long = "data", env = "BERTH_AGENT_DATA", default_value = config::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Where the agent serves logs to the control plane.
    #[arg(long, env = "BERTH_AGENT_LISTEN", default_value = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How the control plane reaches --listen. Default: --listen (the host name when it
    /// binds 0.0.0.0).
    #[arg(long, env = "BERTH_AGENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Cut off from every control node this long (ms), the agent stops its tasks; 0 never.
    /// Keep it below the control plane's heartbeat TTL minus a second (see the README).
    #[arg(long, env = "BERTH_AGENT_FENCE_AFTER_MS", default_value_t = config::DEFAULT_FENCE_AFTER.as_millis() as u64)]
    pub fence_after_ms: u64,
    /// A probe of the container engine (a container list) that takes longer than this (ms)
    /// makes the agent report the engine as not answering; probes run every 5 s.
    #[arg(long, env = "BERTH_AGENT_ENGINE_TIMEOUT_MS", default_value_t = config::DEFAULT_ENGINE_PROBE_TIMEOUT.as_millis() as u64)]
    pub engine_timeout_ms: u64,
    /// How often each running task's CPU and memory are measured (ms); 0 turns measuring off.
    #[arg(long, env = "BERTH_AGENT_STATS_INTERVAL_MS", default_value_t = config::DEFAULT_STATS_EVERY.as_millis() as u64)]
    pub stats_interval_ms: u64,
    /// How much measuring each utilization report to the control plane summarizes (ms).
    #[arg(long, env = "BERTH_AGENT_UTILIZATION_WINDOW_MS", default_value_t = config::DEFAULT_UTILIZATION_WINDOW.as_millis() as u64)]
    pub utilization_window_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9600); off by default.
    #[arg(long, env = "BERTH_AGENT_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// A `berth tls` directory holding ca.pem and agent-ID.pem/.key: speak mutual TLS to
    /// control nodes started with --tls-dir (and take log requests only from them).
    #[arg(
        long,
        env = "BERTH_TLS_DIR",
        value_name = "DIR",
        conflicts_with = "insecure"
    )]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Run without TLS: the control nodes must run with --insecure too, and anyone on the
    /// network can pose as them. Only where no one else can reach the hosts.
    #[arg(long, env = "BERTH_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Leave the agent's ports bound beyond loopback open to the task containers on this
    /// host. By default iptables rules refuse them (see the README's security page).
    #[arg(long, env = "BERTH_NO_HOST_FIREWALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_host_firewall: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--attr `{0}` is not KEY=VALUE")]
    Attribute(String),
    #[error("--control names no address")]
    NoControl,
    #[error("{0}")]
    Invalid(String),
}

impl AgentArgs {
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let control: Vec<String> = self
            .control
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if control.is_empty() {
            return Err(ConfigError::NoControl);
        }
        let mut attributes = BTreeMap::new();
        for a in &self.attrs {
            let a = a.trim();
            if a.is_empty() {
                continue;
            }
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ConfigError::Attribute(a.to_string()))?;
            attributes.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mut cfg = AgentConfig::new(control, self.data);
        if let Some(id) = self.id {
            cfg.id = id;
        }
        if let Some(cpu) = self.cpu {
            cfg.cpu = cpu;
        }
        if let Some(memory) = self.memory {
            cfg.memory = memory;
        }
        cfg.attributes = attributes;
        cfg.listen = self.listen;
        cfg.advertise = self
            .advertise
            .unwrap_or_else(|| config::default_advertise(self.listen));
        cfg.fence_after = Duration::from_millis(self.fence_after_ms);
        if self.engine_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "--engine-timeout-ms must be above 0".into(),
            ));
        }
        cfg.engine_probe_timeout = Duration::from_millis(self.engine_timeout_ms);
        // Probe at least as often as a probe may take, so a hang is told within about
        // twice the timeout.
        cfg.engine_probe_every = cfg.engine_probe_every.min(cfg.engine_probe_timeout);
        cfg.stats_every = Duration::from_millis(self.stats_interval_ms);
        let window = berth_core::utilization::MAX_WINDOW_MS;
        if self.utilization_window_ms < self.stats_interval_ms
            || self.utilization_window_ms > window
        {
            return Err(ConfigError::Invalid(format!(
                "--utilization-window-ms must be at least --stats-interval-ms ({}) and at most {window}",
                self.stats_interval_ms
            )));
        }
        cfg.utilization_window = Duration::from_millis(self.utilization_window_ms);
        cfg.metrics_listen = self.metrics;
        cfg.host_firewall = !self.no_host_firewall;
        // The same checks the control plane applies at registration, said before starting.
        berth_core::validate::agent(&cfg.id, cfg.cpu, cfg.memory, &cfg.attributes)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(dir) = &self.tls_dir {
            let who = berth_tls::Identity::agent(&cfg.id)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let creds = berth_tls::grpc::Credentials::load(dir, &who).map_err(|e| {
                ConfigError::Invalid(format!("--tls-dir: {}", berth_tls::error_chain(&e)))
            })?;
            cfg.tls = Some(std::sync::Arc::new(creds));
        } else if !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "no TLS credentials: give --tls-dir DIR holding ca.pem and agent-{id}.pem/.key \
                 (`berth tls issue --dir DIR --agent {id}` makes them), or --insecure to run \
                 without TLS against control nodes that run with --insecure",
                id = cfg.id
            )));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.agent.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn every_flag_of_the_issue_parses() {
        let c = parse(&[
            "--control",
            "127.0.0.1:7500,127.0.0.1:7501",
            "--id",
            "agent-1",
            "--cpu",
            "4096",
            "--memory",
            "8192",
            "--attr",
            "zone=a",
            "--attr",
            "disk=ssd",
            "--data",
            "/tmp/x",
            "--listen",
            "0.0.0.0:7601",
            "--advertise",
            "node1:7601",
            "--fence-after-ms",
            "2500",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(c.control, vec!["127.0.0.1:7500", "127.0.0.1:7501"]);
        assert_eq!(c.id, "agent-1");
        assert_eq!((c.cpu, c.memory), (4096, 8192));
        assert_eq!(c.attributes["zone"], "a");
        assert_eq!(c.attributes["disk"], "ssd");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen.port(), 7601);
        assert_eq!(c.advertise, "node1:7601");
        assert_eq!(c.fence_after, Duration::from_millis(2500));
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse(&["--id", "a1", "--insecure"]).unwrap();
        assert_eq!(c.control, vec![config::DEFAULT_CONTROL]);
        assert_eq!(c.fence_after, config::DEFAULT_FENCE_AFTER);
        assert_eq!(c.advertise, config::DEFAULT_LISTEN);
        let e = parse(&["--id", "a1"]).unwrap_err();
        assert!(
            e.contains("--tls-dir DIR") && e.contains("--insecure"),
            "{e}"
        );
        assert!(parse(&["--id", "a1", "--insecure", "--tls-dir", "/x"]).is_err());
        assert!(parse(&["--id", "a1", "--insecure", "--attr", "novalue"])
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(parse(&["--insecure", "--id", "bad id"]).is_err());
        assert!(parse(&["--insecure", "--id", "a1", "--cpu", "0"]).is_err());
    }
}
