//! `/metrics` end to end: every control node and an agent serve Prometheus text that a
//! Prometheus text parser reads, with the named series and the figures the cluster has.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::CreateServiceRequest;
use common::agent::*;
use common::*;

/// One HTTP/1.1 GET; the status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// Samples by name and labels ("name{k=v,...}" with labels sorted) → value.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        out.insert(key, v);
    }
    out
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no series {key}; have {:?}", m.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_and_agent_serves_the_named_series_in_prometheus_text() {
    require_docker();
    let c = Cluster::start(3, &["--log-format", "json"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(1);
    let agent_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = AgentProc::start_with(
        &c,
        "metrics",
        "a",
        &[],
        &["--metrics", &agent_metrics.to_string()],
    );
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register");
    let id = run(api.clone(), "web", 1, "").await.expect("run").tasks[0]
        .task_id
        .clone();
    wait_for(api.clone(), &id, "RUNNING", Duration::from_secs(60), |t| {
        t.last_status == "RUNNING"
    })
    .await;

    let mut leaders = 0.0;
    let mut streams = 0.0;
    for (node, p) in &c.nodes {
        // Every node applies the same log: the same task figures everywhere (once applied).
        let m = scrape(p.metrics);
        leaders += value(&m, "berth_raft_leader");
        streams += value(&m, "berth_assignment_streams");
        assert!(value(&m, "berth_raft_term") >= 1.0);
        assert!(value(&m, "berth_raft_applied_index") > 0.0);
        assert!(value(&m, "berth_raft_last_log_index") >= value(&m, "berth_raft_applied_index"));
        assert_eq!(value(&m, "berth_tasks{state=RUNNING}"), 1.0, "node {node}");
        assert_eq!(value(&m, "berth_tasks{state=STOPPED}"), 0.0, "node {node}");
        let cap = format!("berth_agent_cpu_units{{agent={},kind=capacity}}", a.id);
        assert!(value(&m, &cap) > 0.0);
        let alloc = format!("berth_agent_memory_bytes{{agent={},kind=allocated}}", a.id);
        assert_eq!(value(&m, &alloc), 512.0 * 1024.0 * 1024.0);
        if *node == leader {
            // Proposals and placements happen on the leader.
            assert!(value(&m, "berth_proposal_duration_seconds_count") >= 1.0);
            assert!(value(&m, "berth_proposal_batch_commands_count") >= 1.0);
            assert!(value(&m, "berth_placement_duration_seconds_count") >= 1.0);
            // The agent's stream and the reads above went through shared confirmations.
            assert!(value(&m, "berth_read_index_rounds_total") >= 1.0);
            let age = format!("berth_agent_heartbeat_age_seconds{{agent={}}}", a.id);
            assert!(value(&m, &age) < 5.0);
        }
    }
    assert_eq!(leaders, 1.0, "exactly one node says it leads");
    assert_eq!(
        streams, 1.0,
        "the one agent's assignment stream, on one node"
    );

    let m = scrape(agent_metrics);
    assert_eq!(value(&m, "berth_agent_tasks"), 1.0);
    assert_eq!(value(&m, "berth_agent_engine_up"), 1.0);
    assert_eq!(
        value(&m, "berth_agent_task_start_duration_seconds_count"),
        1.0
    );
    assert_eq!(value(&m, "berth_agent_task_start_failures_total"), 0.0);

    let (status, body) = get(agent_metrics, "/nope");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");

    // A call's log lines carry its span: the request id (the client's x-request-id here)
    // and the node that served it.
    let mut req = tonic::Request::new(CreateServiceRequest {
        service_name: "logged".into(),
        task_definition: "web".into(),
        desired_count: 0,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    ServicesClient::new(api.clone())
        .create(req)
        .await
        .expect("create");

    // `--log-format json`: every line a node logged is one JSON object.
    let mut lines = 0;
    let mut spanned = None;
    for node in c.nodes.keys() {
        let log = std::fs::read_to_string(c.dir.path().join(format!("node-{node}.log")))
            .expect("node log");
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                v.get("level").is_some() && v.get("fields").is_some(),
                "{line}"
            );
            lines += 1;
            if v["fields"]["message"] == "service created" {
                spanned = Some(v);
            }
        }
    }
    assert!(lines > 0, "nothing logged");
    let v = spanned.expect("the create was logged");
    assert_eq!(v["span"]["name"], "request", "{v}");
    assert_eq!(v["span"]["id"], "req-42", "{v}");
    assert_eq!(v["span"]["rpc"], "/berth.v1.Services/Create", "{v}");
    assert!(v["span"]["node"].is_number(), "{v}");
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, mark) in [
        ("bash", "_berth()"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let o = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run berth");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(mark), "{shell}: {out:.200}");
        // Subcommands and their flags are in it.
        assert!(
            out.contains("autoscale") && out.contains("min-healthy-time"),
            "{shell}"
        );
    }
    let o = std::process::Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run berth");
    assert!(!o.status.success());
}
