//! `berth tls`: a cluster CA and certificates made from the CLI, each naming its holder's
//! role and id; nothing overwritten; bad input refused by name with nothing written. And a
//! cluster of real processes started with them (`--tls-dir`): the API over TLS, the raft
//! port only for the cluster's own nodes and agents, each agent only as itself.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{AgentRegisterRequest, InfoRequest};
use berth_raft::network::lazy_channel;
use berth_tls::grpc::Credentials;
use berth_tls::{files, inspect_pem, Identity};
use common::agent::{require_docker, AgentProc};
use common::{Cluster, BIN};
use tonic::Code;

fn berth(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run berth")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn identity(dir: &Path, stem: &str) -> Option<Identity> {
    let pem = files::read(&dir.join(format!("{stem}.pem"))).expect("read cert");
    inspect_pem(&pem).expect("inspect").identity
}

#[test]
fn init_issue_and_show_make_a_cluster_identity_and_never_overwrite_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let d = dir.to_str().expect("utf-8 path");

    let o = berth(&[
        "tls",
        "init",
        "--out",
        d,
        "--agent",
        "agent-a,agent-b",
        "--host",
        "10.1.2.3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for id in 1..=3 {
        assert_eq!(
            identity(&dir, &format!("control-{id}")),
            Some(Identity::control(id))
        );
    }
    assert_eq!(
        identity(&dir, "agent-agent-b"),
        Some(Identity::agent("agent-b").expect("id"))
    );
    let ca = inspect_pem(&files::read(&dir.join("ca.pem")).expect("ca")).expect("ca");
    assert!(ca.is_ca && ca.identity.is_none());
    let node = inspect_pem(&files::read(&dir.join("control-2.pem")).expect("n")).expect("n");
    for h in ["localhost", "127.0.0.1", "::1", "control-2", "10.1.2.3"] {
        assert!(node.hosts.iter().any(|x| x == h), "{h} in {:?}", node.hosts);
    }

    // A second init into the same place writes nothing: one cluster, one CA.
    let before = files::read(&dir.join("ca.pem")).expect("ca");
    let o = berth(&["tls", "init", "--out", d]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already exists; nothing was written"),
        "{}",
        text(&o)
    );
    assert_eq!(files::read(&dir.join("ca.pem")).expect("ca"), before);

    // More certificates from the same CA.
    let o = berth(&[
        "tls", "issue", "--dir", d, "--agent", "agent-c", "--days", "30",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c = inspect_pem(&files::read(&dir.join("agent-agent-c.pem")).expect("c")).expect("c");
    assert_eq!(c.identity, Some(Identity::agent("agent-c").expect("id")));
    assert_eq!(c.issuer, ca.subject);
    let o = berth(&[
        "tls",
        "show",
        &format!("{d}/agent-agent-c.pem"),
        &format!("{d}/ca.pem"),
    ]);
    let shown = text(&o);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("agent agent-c (berth://agent/agent-c), valid"),
        "{shown}"
    );
    assert!(shown.contains("ca.pem: a CA"), "{shown}");

    // Bad input: refused by name, nothing written.
    for (args, says) in [
        (
            vec!["tls", "issue", "--dir", d, "--agent", "has space"],
            "contains ` `",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--control", "0"],
            "start at 1",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--agent", "x", "--days", "0"],
            "--days 0",
        ),
        (
            vec!["tls", "issue", "--dir", d, "--agent", "agent-c"],
            "already exists",
        ),
        (vec!["tls", "issue", "--dir", d], "--control"),
    ] {
        let o = berth(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let missing = tmp.path().join("none");
    let o = berth(&[
        "tls",
        "issue",
        "--dir",
        missing.to_str().expect("path"),
        "--agent",
        "x",
    ]);
    assert!(
        text(&o).contains("none/ca.pem: No such file"),
        "{}",
        text(&o)
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    // The CA, three nodes and three agents: a certificate and a key each; the cluster's
    // first admin token, its owner's only, kept by `admin-token`; and its secrets key,
    // likewise.
    assert_eq!(names.len(), 16, "{names:?}");
    let key = dir.join("secrets.key");
    let key_before = std::fs::read_to_string(&key).expect("secrets.key");
    assert_eq!(key_before.trim().len(), 64, "{key_before}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = berth(&["tls", "secrets-key", "--dir", d]);
    assert!(
        o.status.success() && text(&o).contains("kept"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&key).expect("secrets.key"),
        key_before
    );
    let token = dir.join("admin.token");
    let before = std::fs::read_to_string(&token).expect("admin.token");
    assert!(before.starts_with("berth_"), "{before}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = berth(&["tls", "admin-token", "--dir", d]);
    assert!(
        o.status.success() && text(&o).contains("kept"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&token).expect("admin.token"),
        before
    );
    // An older directory gets one.
    std::fs::remove_file(&token).expect("rm");
    let o = berth(&["tls", "admin-token", "--dir", d]);
    assert!(
        o.status.success() && text(&o).contains("wrote"),
        "{}",
        text(&o)
    );
    assert_ne!(
        std::fs::read_to_string(&token).expect("admin.token"),
        before
    );
}

/// The CLI against `endpoint` trusting the CA at `ca` (none: plaintext, `--insecure`).
fn cli(endpoint: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = common::cli_command(endpoint);
    cmd.args(args);
    match ca {
        Some(ca) => cmd.env("BERTH_TLS_CA", ca),
        None => cmd.env_remove("BERTH_TLS_CA").env("BERTH_INSECURE", "1"),
    };
    cmd.output().expect("run berth")
}

fn until(what: &str, within: Duration, mut ok: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = ok() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_on_tls_serves_its_own_and_refuses_strangers() {
    require_docker();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Test clusters run on this process's CA (common::tls_dir); `other` is a stranger's.
    let (dir, other) = (common::tls_dir().to_path_buf(), tmp.path().join("other"));
    // AgentProc names its agent after the test process.
    let agent_id = format!("tls-{}", std::process::id());
    let o = berth(&[
        "tls",
        "init",
        "--out",
        other.to_str().expect("path"),
        "--agent",
        &agent_id,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ca = common::ca_file();
    let c = Cluster::start(3, &[]);
    let endpoint = c.endpoint();

    // The API over TLS, through every node (followers forward writes over mutual TLS).
    until(
        "the cluster answers over TLS",
        Duration::from_secs(30),
        || {
            let o = cli(&endpoint, Some(&ca), &["cluster", "status"]);
            (o.status.success() && text(&o).contains("leader")).then(|| text(&o))
        },
    );
    let spec = tmp.path().join("hello.yaml");
    std::fs::write(
        &spec,
        "family: hello\ncontainerDefinitions:\n  - name: app\n    image: berth/workload\n    \
         command: [\"sh\", \"-c\", \"echo hello-over-tls; sleep 60\"]\n    stopTimeout: 1\n",
    )
    .expect("spec");
    for n in c.nodes.values() {
        let o = cli(
            &n.api.to_string(),
            Some(&ca),
            &["taskdef", "register", spec.to_str().expect("p")],
        );
        assert!(o.status.success(), "through node {}: {}", n.id, text(&o));
    }
    // Without TLS, or trusting another CA: no answer.
    let o = cli(&endpoint, None, &["cluster", "status"]);
    assert!(!o.status.success(), "plaintext answered: {}", text(&o));
    let o = cli(
        &endpoint,
        Some(&other.join("ca.pem")),
        &["cluster", "status"],
    );
    assert!(!o.status.success(), "another CA answered: {}", text(&o));

    // The raft port: nodes for node-to-node calls, agents only as themselves.
    let creds = |d: &Path, who: Identity| Arc::new(Credentials::load(d, &who).expect("creds"));
    let me = Identity::agent(&agent_id).expect("id");
    common::credentials(&me);
    let raft1 = c.nodes[&1].raft.to_string();
    let as_ = |cr: &Credentials| lazy_channel(&raft1, Some(cr)).expect("channel");
    let node2 = creds(&dir, Identity::control(2));
    let info = NodeClient::new(as_(&node2))
        .info(InfoRequest::default())
        .await
        .expect("a node asks a node");
    assert_eq!(info.into_inner().id, 1);
    let agent = creds(&dir, me.clone());
    let e = NodeClient::new(as_(&agent))
        .info(InfoRequest::default())
        .await
        .expect_err("an agent making a node-to-node call");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("only control nodes"), "{e:?}");
    let e = AgentProtocolClient::new(as_(&agent))
        .register(AgentRegisterRequest {
            agent_id: "someone-else".into(),
            cpu: 1024,
            memory: 2048,
            ..Default::default()
        })
        .await
        .expect_err("an agent speaking for another");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("the caller is agent {agent_id}")),
        "{e:?}"
    );
    let stranger = creds(&other, Identity::control(2));
    let e = NodeClient::new(as_(&stranger))
        .info(InfoRequest::default())
        .await
        .expect_err("another cluster's node");
    assert_ne!(
        e.code(),
        Code::PermissionDenied,
        "refused in the handshake: {e:?}"
    );
    let e = NodeClient::new(lazy_channel(&raft1, None).expect("channel"))
        .info(InfoRequest::default())
        .await
        .expect_err("plaintext on the raft port");
    assert_ne!(e.code(), Code::Ok);
    // Node 2's own certificate, but expired yesterday: refused in the handshake.
    let expired_dir = tmp.path().join("expired");
    let cluster_ca = berth_tls::files::load_ca(&dir).expect("ca");
    let day = Duration::from_secs(24 * 3600);
    let now = std::time::SystemTime::now();
    let old = cluster_ca
        .issue_between(
            &Identity::control(2),
            &["127.0.0.1".into()],
            now - 2 * day,
            now - day,
        )
        .expect("expired cert");
    berth_tls::files::write_pair(&expired_dir, "control-2", &old).expect("write");
    std::fs::copy(&ca, expired_dir.join("ca.pem")).expect("copy ca");
    let e = NodeClient::new(as_(&creds(&expired_dir, Identity::control(2))))
        .info(InfoRequest::default())
        .await
        .expect_err("an expired certificate");
    assert_ne!(
        e.code(),
        Code::PermissionDenied,
        "refused in the handshake: {e:?}"
    );
    assert_ne!(e.code(), Code::Ok);
    // TLS that trusts the cluster but presents no certificate: refused too.
    let anonymous = tonic::transport::Endpoint::from_shared(format!("https://{raft1}"))
        .expect("uri")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(&ca).expect("ca"),
                ))
                .domain_name("127.0.0.1"),
        )
        .expect("tls")
        .connect_lazy();
    let e = NodeClient::new(anonymous)
        .info(InfoRequest::default())
        .await
        .expect_err("no client certificate");
    assert_ne!(e.code(), Code::Ok);
    let refusals: String = c.nodes.keys().map(|id| c.log(*id)).collect();
    assert!(refusals.contains("node-to-node call refused"), "logged");
    assert!(refusals.contains("agent call refused"), "logged");

    // A real agent over mutual TLS runs a task, and its output comes back through a
    // control node that fetches it from the agent over mutual TLS.
    let a = AgentProc::start(&c, "tls");
    assert_eq!(a.id, agent_id);
    until("the agent is READY", Duration::from_secs(30), || {
        let o = cli(&endpoint, Some(&ca), &["agent", "ls"]);
        let t = text(&o);
        t.lines()
            .any(|l| l.contains(&agent_id) && l.contains("READY"))
            .then_some(t)
    });
    let o = cli(
        &endpoint,
        Some(&ca),
        &["-o", "json", "task", "run", "hello"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let run: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let task = run["tasks"][0]["taskId"]
        .as_str()
        .expect("task id")
        .to_string();
    let logs = until("the task's output", Duration::from_secs(60), || {
        let o = cli(&endpoint, Some(&ca), &["task", "logs", &task]);
        text(&o).contains("hello-over-tls").then(|| text(&o))
    });
    eprintln!("task {task} on agent {agent_id}, logs over mutual TLS: {logs}");
    let o = cli(&endpoint, Some(&ca), &["task", "stop", &task]);
    assert!(o.status.success(), "{}", text(&o));
    drop(a);
}

/// Regression for the first-start default: a control node or an agent with no certificates
/// used to come up in plaintext without a word. Now it refuses, saying how to get them, and
/// plaintext exists only behind --insecure, which logs a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_certificates_nothing_starts_unless_insecure_and_then_it_warns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let o = Command::new(BIN)
        .args(["control", "--id", "1", "--data", data.to_str().expect("p")])
        .env_remove("BERTH_TLS_DIR")
        .env_remove("BERTH_INSECURE")
        .output()
        .expect("run berth control");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no TLS credentials: give --tls-dir DIR")
            && text(&o).contains("--insecure"),
        "{}",
        text(&o)
    );
    assert!(!data.exists(), "nothing written before refusing");
    let o = Command::new(BIN)
        .args(["agent", "--id", "a1", "--data", data.to_str().expect("p")])
        .env_remove("BERTH_TLS_DIR")
        .env_remove("BERTH_INSECURE")
        .output()
        .expect("run berth agent");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("agent-a1.pem") && text(&o).contains("--insecure"),
        "{}",
        text(&o)
    );

    let c = Cluster::start(3, &["--insecure"]);
    let endpoint = c.endpoint();
    until(
        "the insecure cluster answers in plaintext",
        Duration::from_secs(30),
        || {
            let o = c.berth(&["cluster", "status"]);
            (o.status.success() && text(&o).contains("leader")).then(|| text(&o))
        },
    );
    for id in c.nodes.keys() {
        assert!(
            c.log(*id).contains("running without TLS (--insecure)"),
            "node {id} did not warn:\n{}",
            c.log(*id)
        );
    }
    // A client with no CA and no --insecure is told where a CA comes from.
    let o = common::cli_command(&endpoint)
        .env_remove("BERTH_TLS_CA")
        .args(["cluster", "status"])
        .output()
        .expect("run berth");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no cluster CA to trust") && text(&o).contains("berth dev"),
        "{}",
        text(&o)
    );
    // Speaking TLS to a plaintext cluster fails; it does not fall back.
    let o = cli(&endpoint, Some(&common::ca_file()), &["cluster", "status"]);
    assert!(!o.status.success(), "{}", text(&o));
}
