//! `berth dev`: one command, three nodes, resumes its state after a restart; a healthy start
//! and a Ctrl-C log no WARN or ERROR line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn start_dev(
    dir: &std::path::Path,
    api: u16,
    raft: u16,
    log: &std::path::Path,
) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(BIN)
        .args([
            "dev",
            "--dir",
            &dir.display().to_string(),
            "--api-port",
            &api.to_string(),
            "--raft-port",
            &raft.to_string(),
        ])
        .env_remove("RUST_LOG")
        .env("BERTH_CONFIG", config_file(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn berth dev")
}

/// Where the test's `berth dev` writes the CLI's config (never the user's own).
fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("cli-config")
}

fn interrupt(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "berth dev exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("berth dev did not stop on Ctrl-C");
}

/// Three consecutive free ports starting at the returned one, all taken from `free_port`
/// so that no later call hands one of them out again.
fn port_run() -> u16 {
    loop {
        let p = free_port();
        if free_port() == p + 1 && free_port() == p + 2 {
            return p;
        }
    }
}

async fn wait_status(
    endpoint: &str,
    ca: &std::path::Path,
) -> berth_proto::v1::ClusterStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The first start writes the CA a moment after it begins.
        let made = ca.exists();
        let mut c = made.then(|| {
            berth_proto::v1::cluster_client::ClusterClient::new(channel_trusting(endpoint, ca))
        });
        let answer = match c.as_mut() {
            Some(c) => c
                .status(berth_proto::v1::ClusterStatusRequest {})
                .await
                .ok(),
            None => None,
        };
        if let Some(r) = answer {
            let r = r.into_inner();
            if r.leader_id != 0 {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "berth dev did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Regression: openraft's routine vote messages at start and its errors when asked after it
/// stopped appeared as WARN and ERROR lines to anyone trying `berth dev`.
fn assert_quiet(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).expect("read the log");
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains("ERROR"))
        .collect();
    assert!(
        loud.is_empty(),
        "a healthy start and stop logged: {loud:#?}"
    );
    assert!(text.contains("control node stopped"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_three_nodes_and_resumes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let (first, second) = (logs.path().join("1.log"), logs.path().join("2.log"));
    let (api, raft) = (port_run(), port_run());
    let endpoint = format!("127.0.0.1:{api}");

    // The first start makes the cluster's certificates in DIR/tls and runs on them.
    let ca = dir.path().join("tls").join("ca.pem");
    let mut dev = start_dev(dir.path(), api, raft, &first);
    let st = wait_status(&endpoint, &ca).await;
    assert_eq!(st.members.len(), 3);
    let def = register(
        channel_trusting(&format!("127.0.0.1:{}", api + 2), &ca),
        web_spec("kept"),
    )
    .await
    .expect("register");
    // The CLI finds the cluster and its CA with no flag and no environment: through the
    // config file `berth dev` wrote.
    let o = Command::new(BIN)
        .args(["taskdef", "ls"])
        .env_remove("BERTH_ENDPOINT")
        .env_remove("BERTH_TLS_CA")
        .env_remove("BERTH_INSECURE")
        .env("BERTH_CONFIG", config_file(dir.path()))
        .output()
        .expect("run berth");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("kept"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The API refuses plaintext.
    let plain = berth_proto::v1::cluster_client::ClusterClient::new(plain_channel(&endpoint))
        .status(berth_proto::v1::ClusterStatusRequest {})
        .await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
    let ca_before = std::fs::read(&ca).expect("the CA");
    interrupt(&mut dev);
    assert_quiet(&first);

    // A restart keeps the same CA (clients configured once stay configured).
    let mut dev = start_dev(dir.path(), api, raft, &second);
    wait_status(&endpoint, &ca).await;
    assert_eq!(std::fs::read(&ca).expect("the CA"), ca_before);
    let d = berth_proto::v1::task_definitions_client::TaskDefinitionsClient::new(channel_trusting(
        &endpoint, &ca,
    ))
    .describe(berth_proto::v1::DescribeTaskDefinitionRequest {
        task_definition: "kept".into(),
        stale: false,
    })
    .await
    .expect("the definition survived the restart")
    .into_inner();
    assert_eq!(d.task_definition.map(|x| x.revision), Some(def.revision));
    interrupt(&mut dev);
    assert_quiet(&second);
}
