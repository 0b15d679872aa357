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

/// The dev cluster's API at `endpoint` as its admin: trusting the CA `berth dev` made in
/// `tls`, with the admin token it made there.
fn dev_api(endpoint: &str, tls: &std::path::Path) -> Api {
    let token = berth_control::auth::read_admin_token(tls)
        .expect("read admin.token")
        .expect("berth dev made admin.token");
    with_token(channel_trusting(endpoint, &tls.join("ca.pem")), &token)
}

async fn wait_status(
    endpoint: &str,
    tls: &std::path::Path,
) -> berth_proto::v1::ClusterStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The first start writes the CA and the admin token a moment after it begins.
        let made = tls.join(berth_control::auth::ADMIN_TOKEN_FILE).exists();
        let mut c = made
            .then(|| berth_proto::v1::cluster_client::ClusterClient::new(dev_api(endpoint, tls)));
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
        // The test's own call without a token, refused as it should be.
        .filter(|l| !l.contains("API call refused"))
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

    // The first start makes the cluster's certificates and admin token in DIR/tls and
    // runs on them.
    let tls = dir.path().join("tls");
    let ca = tls.join("ca.pem");
    let mut dev = start_dev(dir.path(), api, raft, &first);
    let st = wait_status(&endpoint, &tls).await;
    assert_eq!(st.members.len(), 3);
    let def = register(
        dev_api(&format!("127.0.0.1:{}", api + 2), &tls),
        web_spec("kept"),
    )
    .await
    .expect("register");
    // The CLI finds the cluster, its CA and the admin token with no flag and no
    // environment: through the config file `berth dev` wrote, which only its owner reads.
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("BERTH_ENDPOINT")
            .env_remove("BERTH_TLS_CA")
            .env_remove("BERTH_INSECURE")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_TOKEN_FILE")
            .env("BERTH_CONFIG", config_file(dir.path()))
            .output()
            .expect("run berth")
    };
    let o = cli(&["taskdef", "ls"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("kept"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = cli(&["token", "ls"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("admin") && out.contains("(first)"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [config_file(dir.path()), tls.join("admin.token")] {
            let mode = std::fs::metadata(&f).expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is readable by others", f.display());
        }
    }
    // Without the token the API answers nothing but who to ask.
    let bare =
        berth_proto::v1::cluster_client::ClusterClient::new(channel_trusting(&endpoint, &ca))
            .status(berth_proto::v1::ClusterStatusRequest {})
            .await
            .expect_err("answered without a token");
    assert_eq!(bare.code(), tonic::Code::Unauthenticated, "{bare:?}");
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
    wait_status(&endpoint, &tls).await;
    assert_eq!(std::fs::read(&ca).expect("the CA"), ca_before);
    let d = berth_proto::v1::task_definitions_client::TaskDefinitionsClient::new(dev_api(
        &endpoint, &tls,
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
