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
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn berth dev")
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

async fn wait_status(endpoint: &str) -> berth_proto::v1::ClusterStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = berth_proto::v1::cluster_client::ClusterClient::new(channel(endpoint));
        if let Ok(r) = c.status(berth_proto::v1::ClusterStatusRequest {}).await {
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

    let mut dev = start_dev(dir.path(), api, raft, &first);
    let st = wait_status(&endpoint).await;
    assert_eq!(st.members.len(), 3);
    let def = register(channel(&format!("127.0.0.1:{}", api + 2)), web_spec("kept"))
        .await
        .expect("register");
    interrupt(&mut dev);
    assert_quiet(&first);

    let mut dev = start_dev(dir.path(), api, raft, &second);
    wait_status(&endpoint).await;
    let d =
        berth_proto::v1::task_definitions_client::TaskDefinitionsClient::new(channel(&endpoint))
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
