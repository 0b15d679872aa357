//! Keeps the ports a Berth process binds beyond loopback out of reach of the tasks on its host.
//!
//! A task's containers sit on one of the engine's bridges: `docker0` for the engine's default
//! network, `br-…` for every network the engine makes (each Berth namespace's included).
//! Their packets to any address of the host itself come in through the host's `INPUT` chain
//! with that bridge as the input interface, so a port bound to `0.0.0.0` or a LAN address is
//! as reachable from inside a task as from the network, mutual TLS and tokens being the only
//! thing in the way. Loopback is not reachable: the kernel drops packets from a bridge to
//! 127.0.0.0/8 (`route_localnet` is off), so a port bound there needs no rule.
//!
//! For each port bound beyond loopback a process puts one rule per bridge pattern at the head
//! of `INPUT`: a TCP SYN to that port coming in on an engine bridge is answered with a reset,
//! so a task is refused at once instead of waiting out a timeout. The rules carry a comment
//! naming the process and port, and go when the [`HostFirewall`] is dropped. They are
//! iptables', the tool the engine itself uses, so they land in the same tables whichever
//! backend (legacy or nf_tables) the host runs.

use std::net::SocketAddr;
use std::process::Command;

/// Input interfaces of the engine's bridges: its default network and every one it makes.
pub const BRIDGES: [&str; 2] = ["docker0", "br-+"];

/// How long iptables may wait for the xtables lock the engine also takes.
const LOCK_WAIT_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "cannot run iptables ({0}); install it, or start with --no-host-firewall to let tasks \
         reach this host's ports"
    )]
    Spawn(std::io::Error),
    #[error("`iptables {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// One refusal: new TCP connections from an engine bridge to a port of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub interface: &'static str,
    pub port: u16,
    /// Who the port belongs to, for whoever lists the host's rules.
    pub comment: String,
}

impl Rule {
    /// The rule's match and target, as `iptables -I/-C/-D INPUT` takes them.
    pub fn spec(&self) -> Vec<String> {
        [
            "-i",
            self.interface,
            "-p",
            "tcp",
            "--syn",
            "--dport",
            &self.port.to_string(),
            "-m",
            "comment",
            "--comment",
            &self.comment,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// The rules that keep `ports` (each bound address with what it serves, e.g. `"raft"`) from
/// tasks: none for a loopback address, one per bridge pattern for any other, each port once.
pub fn rules_for(owner: &str, ports: &[(SocketAddr, &str)]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for (addr, what) in ports {
        if addr.ip().is_loopback() || rules.iter().any(|r| r.port == addr.port()) {
            continue;
        }
        for interface in BRIDGES {
            rules.push(Rule {
                interface,
                port: addr.port(),
                comment: format!("berth {owner} {what}: refused to tasks"),
            });
        }
    }
    rules
}

/// Rules this process put in place; dropping it removes them.
#[derive(Debug, Default)]
pub struct HostFirewall {
    installed: Vec<Rule>,
}

impl HostFirewall {
    /// Puts [`rules_for`] `ports` in place. On an error the rules already put are removed.
    pub fn install(owner: &str, ports: &[(SocketAddr, &str)]) -> Result<Self, FirewallError> {
        let mut fw = HostFirewall::default();
        for rule in rules_for(owner, ports) {
            let spec = rule.spec();
            // A rule left by an earlier run of this process (killed before it could remove
            // it) is taken over rather than doubled.
            if !iptables("-C", &spec, true)? {
                iptables("-I", &spec, false)?;
            }
            fw.installed.push(rule);
        }
        Ok(fw)
    }

    /// [`HostFirewall::install`], for a process that serves on whether or not it could: the
    /// rules, or a warning saying what is left open. `listeners` are the bound sockets with
    /// what each serves.
    pub fn install_or_warn(owner: &str, listeners: &[(Option<SocketAddr>, &str)]) -> Option<Self> {
        let ports: Vec<(SocketAddr, &str)> = listeners
            .iter()
            .filter_map(|(addr, what)| addr.map(|a| (a, *what)))
            .collect();
        match HostFirewall::install(owner, &ports) {
            Ok(fw) => {
                if !fw.ports().is_empty() {
                    tracing::info!(ports = ?fw.ports(), "ports refused to this host's task containers");
                }
                Some(fw)
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "host firewall not installed: task containers on this host can open \
                     connections to the {owner}'s ports bound beyond loopback"
                );
                None
            }
        }
    }

    /// The ports refused to tasks.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.installed.iter().map(|r| r.port).collect();
        ports.dedup();
        ports
    }
}

impl Drop for HostFirewall {
    fn drop(&mut self) {
        for rule in self.installed.drain(..) {
            if let Err(e) = iptables("-D", &rule.spec(), true) {
                tracing::warn!(port = rule.port, error = %e, "could not remove host firewall rule");
            }
        }
    }
}

/// Runs `iptables -w N <op> INPUT [1] <spec>`. With `absent_ok`, exit status 1 (no such rule)
/// is an answer, `false`, rather than an error.
fn iptables(op: &str, spec: &[String], absent_ok: bool) -> Result<bool, FirewallError> {
    let mut args: Vec<String> = vec![
        "-w".into(),
        LOCK_WAIT_SECS.into(),
        op.into(),
        "INPUT".into(),
    ];
    if op == "-I" {
        args.push("1".into());
    }
    args.extend(spec.iter().cloned());
    let out = Command::new("iptables")
        .args(&args)
        .output()
        .map_err(FirewallError::Spawn)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) if absent_ok => Ok(false),
        _ => Err(FirewallError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_ports_need_no_rule_and_the_rest_get_one_per_bridge() {
        let rules = rules_for(
            "node 1",
            &[
                (addr("127.0.0.1:7400"), "api"),
                (addr("0.0.0.0:7500"), "raft"),
                (addr("[::1]:7501"), "x"),
                (addr("10.0.0.5:9400"), "metrics"),
                (addr("[::]:7500"), "raft again"),
            ],
        );
        let got: Vec<(&str, u16)> = rules.iter().map(|r| (r.interface, r.port)).collect();
        assert_eq!(
            got,
            [
                ("docker0", 7500),
                ("br-+", 7500),
                ("docker0", 9400),
                ("br-+", 9400)
            ]
        );
        assert_eq!(rules[0].comment, "berth node 1 raft: refused to tasks");
    }

    #[test]
    fn a_rule_refuses_only_new_tcp_connections_from_the_bridge_to_its_port() {
        let rule = &rules_for("agent a1", &[(addr("0.0.0.0:7600"), "logs")])[1];
        let spec = rule.spec().join(" ");
        assert_eq!(
            spec,
            "-i br-+ -p tcp --syn --dport 7600 -m comment --comment berth agent a1 logs: \
             refused to tasks -j REJECT --reject-with tcp-reset"
        );
    }
}
