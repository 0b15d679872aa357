use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_raft::RaftTuning;

/// Everything a control node is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Where the public API listens.
    pub api_listen: SocketAddr,
    /// Where Raft, node-to-node and agent RPCs listen.
    pub raft_listen: SocketAddr,
    /// How others reach this node (defaults to the listen addresses; differs behind NAT or
    /// in containers, where one binds 0.0.0.0 but is reached by name).
    pub api_advertise: String,
    pub raft_advertise: String,
    pub data_dir: PathBuf,
    /// The initial voters (id → raft address). Empty for a node that will be joined.
    pub peers: BTreeMap<u64, String>,
    pub tuning: RaftTuning,
    /// How long a request waits for a leader before answering UNAVAILABLE.
    pub leader_wait: Duration,
    /// Interval agents are told to heartbeat at, and the silence after which the leader
    /// considers one gone.
    pub heartbeat_interval: Duration,
    pub agent_ttl: Duration,
    /// After this node becomes leader, no agent is declared DOWN before this much time
    /// has passed: the new leader has not heard anyone's heartbeats yet, and agents may
    /// still be finding it.
    pub agent_grace: Duration,
    /// Where `/metrics` is served (Prometheus text); none: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// This node's certificate, key and the cluster CA: the raft port then takes only
    /// callers with a certificate of the cluster (node-to-node calls only from control
    /// nodes; an agent only as itself), the API port serves TLS, and calls out to peers and
    /// agents are mutual TLS, and every API call must carry a token. None: plaintext
    /// everywhere, and no tokens.
    pub tls: Option<std::sync::Arc<berth_tls::grpc::Credentials>>,
    /// The cluster's first token (an admin's, from `admin.token` beside the certificates),
    /// written to the state when it has none. Only its digest is held.
    pub initial_admin: Option<berth_core::access::AccessToken>,
    /// The cluster's secrets key (`secrets.key` beside the certificates): without it the
    /// node takes no secrets and cannot start a task that names one.
    pub secrets_key: Option<std::sync::Arc<crate::secrets::SecretsKey>>,
    /// Refuse connections from the host's task containers to the ports this node binds
    /// beyond loopback (iptables rules, see `berth-hostfw`).
    pub host_firewall: bool,
}

impl NodeConfig {
    /// A node with the defaults, listening and advertising on the given addresses.
    pub fn new(id: u64, api: SocketAddr, raft: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            api_listen: api,
            raft_listen: raft,
            api_advertise: api.to_string(),
            raft_advertise: raft.to_string(),
            data_dir,
            peers: BTreeMap::new(),
            tuning: RaftTuning::default(),
            leader_wait: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            agent_ttl: Duration::from_secs(5),
            agent_grace: Duration::from_secs(10),
            metrics_listen: None,
            tls: None,
            initial_admin: None,
            secrets_key: None,
            host_firewall: true,
        }
    }
}

/// Parses `1=127.0.0.1:7500,2=127.0.0.1:7501`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer `{part}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer `{part}`: id `{id}` is not a number"))?;
        if id == 0 {
            return Err(format!("peer `{part}`: node ids start at 1"));
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            return Err(format!("peer `{part}`: address `{addr}` has no port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} is listed twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=127.0.0.1:7500, 2=h:7501").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&2], "h:7501");
        assert!(parse_peers("x=1:2").is_err());
        assert!(parse_peers("1=nohost").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("0=a:1").is_err());
    }
}
