//! Tasks of different namespaces cannot reach each other over the network: each Berth
//! namespace's tasks share an engine network of their own (`default`'s the engine's
//! bridge), and the engine keeps bridge networks apart. Nor can a task reach a control
//! node's raft port on a host that binds it to loopback, the engine's socket, or any port a
//! control node or agent binds beyond loopback (host firewall rules). Real agent, real
//! containers, the host's real iptables.

mod common;

use std::time::{Duration, Instant};

use berth_proto::v1::namespaces_client::NamespacesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;

fn workload(family: &str, command: &str) -> TaskDefinitionSpec {
    let mut spec = quiet_spec(family, &["sh", "-c", command]);
    spec.network_mode = None;
    spec
}

async fn run_with(api: Api, family: &str, env: &[(&str, &str)]) -> String {
    TasksClient::new(api)
        .run(RunTaskRequest {
            task_definition: family.into(),
            count: 1,
            overrides: vec![ContainerOverride {
                name: "app".into(),
                environment: env
                    .iter()
                    .map(|(k, v)| KeyValue {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("run")
        .into_inner()
        .tasks
        .pop()
        .expect("placed")
        .task_id
}

/// The task's output once it holds a line starting with `REACHED` or `BLOCKED`.
async fn verdict(api: Api, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = logs(api.clone(), id).await.unwrap_or_default();
        if out.contains("REACHED") || out.contains("BLOCKED") {
            return out.trim().to_string();
        }
        assert!(Instant::now() < deadline, "task {id} said nothing: {out:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cannot_reach_another_namespaces_task_but_reaches_its_own() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let agent = AgentProc::start(&c, "isolation");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    let admin = admin_token();
    for ns in ["team-a", "team-b"] {
        NamespacesClient::new(api.clone())
            .create(CreateNamespaceRequest {
                name: ns.into(),
                quota: None,
            })
            .await
            .expect("create namespace");
    }
    // busybox's nc, not its wget (which crashes in this static build).
    let probe =
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $TARGET ${PORT:-8080} >/dev/null 2>&1 \
                 && echo REACHED || echo BLOCKED; sleep 3600";
    let team_a = c.api_in(1, &admin, "team-a");
    let team_b = c.api_in(2, &admin, "team-b");
    register(
        team_a.clone(),
        workload("srv", "exec berth-cpu-server 8080"),
    )
    .await
    .expect("register");
    for api in [team_a.clone(), team_b.clone(), c.api(3)] {
        register(api, workload("probe", probe))
            .await
            .expect("register");
    }
    let srv = run_with(team_a.clone(), "srv", &[]).await;
    wait_for(
        team_a.clone(),
        &srv,
        "RUNNING",
        Duration::from_secs(60),
        |t| t.last_status == "RUNNING",
    )
    .await;
    let cid = docker(&["ps", "-q", "--filter", &format!("label=berth.task={srv}")]);
    let net = docker(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}{{end}}",
        &cid,
    ]);
    let (network, ip) = net.split_once(' ').expect("one network and its address");
    assert_eq!(network, "berth-ns-team-a");
    let gateway = docker(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        network,
    ]);

    // The same probe, from team-a (the control), team-b and default.
    let mine = run_with(team_a.clone(), "probe", &[("TARGET", ip)]).await;
    let theirs = run_with(team_b.clone(), "probe", &[("TARGET", ip)]).await;
    let default = run_with(c.api(3), "probe", &[("TARGET", ip)]).await;
    assert_eq!(verdict(team_a.clone(), &mine).await, "REACHED");
    assert_eq!(verdict(team_b.clone(), &theirs).await, "BLOCKED");
    assert_eq!(verdict(c.api(3), &default).await, "BLOCKED");

    // Nor the host's control plane (it listens on loopback here), nor the engine's socket.
    let raft = c.nodes[&1].raft.port().to_string();
    let host = run_with(
        team_a.clone(),
        "probe",
        &[("TARGET", &gateway), ("PORT", &raft)],
    )
    .await;
    assert_eq!(verdict(team_a.clone(), &host).await, "BLOCKED");
    register(
        team_a.clone(),
        workload(
            "socket",
            "test -e /var/run/docker.sock -o -e /run/docker.sock && echo REACHED || echo BLOCKED; \
             sleep 3600",
        ),
    )
    .await
    .expect("register");
    let socket = run_with(team_a.clone(), "socket", &[]).await;
    assert_eq!(verdict(team_a.clone(), &socket).await, "BLOCKED");
    drop(agent);
}

/// The port of the host firewall rule whose comment starts with `owner`, as `iptables -S`
/// lists it.
fn refused_port(owner: &str) -> Option<u16> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "5", "-S", "INPUT"])
        .output()
        .expect("iptables runs (the tests need root and iptables)");
    let rules = String::from_utf8_lossy(&out.stdout).to_string();
    rules
        .lines()
        .find(|l| l.contains(&format!("\"berth {owner}:")) && l.contains("-i docker0"))
        .and_then(|l| l.split("--dport ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cannot_reach_berth_ports_the_host_binds_beyond_loopback() {
    require_docker();
    remove_stale_rules();
    // Node 1 serves its metrics on all addresses.
    let mut c = Cluster::start(3, &[]);
    c.stop(1);
    let node_metrics = free_port();
    c.nodes.get_mut(&1).expect("node 1").metrics =
        std::net::SocketAddr::from(([0, 0, 0, 0], node_metrics));
    c.spawn(1);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let agent_metrics = free_port();
    let agent = AgentProc::start_with(
        &c,
        "hostfw",
        "a",
        &[],
        &["--metrics", &format!("0.0.0.0:{agent_metrics}")],
    );
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;
    assert_eq!(refused_port("control node 1 metrics"), Some(node_metrics));
    assert_eq!(
        refused_port(&format!("agent {} metrics", agent.id)),
        Some(agent_metrics)
    );
    // The cluster's other ports are on loopback, out of the containers' reach already.
    assert_eq!(refused_port("control node 1 raft"), None);

    // A port of the host that is not Berth's stays reachable: what blocks is the rule.
    let open = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let open_port = open.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || {
        for conn in open.incoming() {
            drop(conn);
        }
    });
    let admin = admin_token();
    NamespacesClient::new(api.clone())
        .create(CreateNamespaceRequest {
            name: "team-h".into(),
            quota: None,
        })
        .await
        .expect("create namespace");
    let team = c.api_in(1, &admin, "team-h");
    let probe = "GW=$(ip route | awk '/default/ {print $3}'); \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $GW $PORT >/dev/null 2>&1 \
         && echo REACHED || echo BLOCKED; sleep 3600";
    for api in [team.clone(), c.api(2)] {
        register(api, workload("hostprobe", probe))
            .await
            .expect("register");
    }
    // Through the engine's default bridge (default) and a network it made (team-h).
    for (api, port, want) in [
        (c.api(2), node_metrics.to_string(), "BLOCKED"),
        (team.clone(), agent_metrics.to_string(), "BLOCKED"),
        (team.clone(), node_metrics.to_string(), "BLOCKED"),
        (c.api(2), open_port.clone(), "REACHED"),
        (team.clone(), open_port.clone(), "REACHED"),
    ] {
        let id = run_with(api.clone(), "hostprobe", &[("PORT", &port)]).await;
        assert_eq!(verdict(api, &id).await, want, "port {port}");
    }

    // The rules go with the processes that put them, when they stop cleanly.
    agent.signal("-TERM");
    let owner = format!("agent {} metrics", agent.id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused_port(&owner).is_some() {
        assert!(Instant::now() < deadline, "the agent's rule outlived it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(agent);
    for id in 1..=3 {
        c.stop(id);
    }
    assert_eq!(refused_port("control node 1 metrics"), None);
}

/// Removes rules a killed earlier run of this test left (a SIGKILLed process cannot), so
/// the ports found are this run's.
fn remove_stale_rules() {
    let out = std::process::Command::new("iptables")
        .args(["-w", "5", "-S", "INPUT"])
        .output()
        .expect("iptables runs (the tests need root and iptables)");
    for rule in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(spec) = rule.strip_prefix("-A INPUT ") {
            if spec.contains("--comment \"berth ") {
                let _ = std::process::Command::new("sh")
                    .args(["-c", &format!("iptables -w 5 -D INPUT {spec}")])
                    .status();
            }
        }
    }
}
