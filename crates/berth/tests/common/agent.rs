//! Agents as real processes on the real Docker engine, for the tests that need them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;

use super::{free_port, Cluster, BIN};

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "these tests run tasks on a real Docker engine and the docker CLI is missing: {e}"
            )
        });
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fails the test, saying so, when no engine answers; builds the workload image if needed.
pub fn require_docker() {
    let v = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match v {
        Ok(o) if o.status.success() => {}
        other => {
            panic!("these tests need a Docker engine and none answers ({other:?}); start dockerd")
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/images/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run deploy/images/build.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An agent process with its own id; its containers are removed when dropped.
pub struct AgentProc {
    pub id: String,
    data: tempfile::TempDir,
    listen: String,
    control: String,
    /// `--tls-dir` for a cluster on TLS, else `--insecure`.
    security: Vec<String>,
    zone: String,
    /// Extra environment and arguments for the process.
    env: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
}

impl AgentProc {
    /// An agent in zone `a`.
    pub fn start(c: &Cluster, id: &str) -> AgentProc {
        Self::start_in(c, id, "a")
    }

    pub fn start_in(c: &Cluster, id: &str, zone: &str) -> AgentProc {
        Self::start_with(c, id, zone, &[], &[])
    }

    /// With extra environment (e.g. `DOCKER_HOST`) and arguments.
    pub fn start_with(
        c: &Cluster,
        id: &str,
        zone: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> AgentProc {
        let control = c
            .nodes
            .values()
            .map(|n| n.raft.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let id = format!("{id}-{}", std::process::id());
        let security = if c.secure {
            super::credentials(&berth_tls::Identity::agent(&id).expect("agent id"));
            vec![
                "--tls-dir".to_string(),
                super::tls_dir().display().to_string(),
            ]
        } else {
            vec!["--insecure".to_string()]
        };
        let mut a = AgentProc {
            id,
            security,
            data: tempfile::tempdir().expect("tempdir"),
            listen: format!("127.0.0.1:{}", free_port()),
            control,
            zone: zone.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("agent.log"))
            .expect("log");
        let child = Command::new(BIN)
            .arg("agent")
            .args([
                "--control",
                &self.control,
                "--id",
                &self.id,
                "--cpu",
                "2048",
                "--memory",
                "4096",
            ])
            .args([
                "--attr",
                &format!("zone={}", self.zone),
                "--data",
                &self.data.path().join("data").display().to_string(),
            ])
            .args(["--listen", &self.listen])
            .args(&self.security)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn berth agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("agent.log")).unwrap_or_default()
    }

    /// SIGSTOP or SIGCONT: the process is frozen as a stuck host or a long GC pause would
    /// freeze it, and its containers keep running.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("agent running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.agent={}", self.id),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
    }
}

/// A task's output so far, through the control plane from its agent; None when the call
/// is refused (the task is not there yet, its agent is gone).
pub async fn logs(api: super::Api, id: &str) -> Option<String> {
    let mut stream = TasksClient::new(api)
        .logs(TaskLogsRequest {
            task_id: id.into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        out.extend(chunk.ok()?.data);
    }
    Some(String::from_utf8_lossy(&out).to_string())
}

pub async fn task(api: super::Api, id: &str) -> Task {
    TasksClient::new(api)
        .describe(DescribeTasksRequest {
            task_ids: vec![id.into()],
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner()
        .tasks
        .pop()
        .expect("task exists")
}

pub async fn wait_for(
    api: super::Api,
    id: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&Task) -> bool,
) -> Task {
    let deadline = Instant::now() + within;
    loop {
        let t = task(api.clone(), id).await;
        if ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {what}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_agent(api: super::Api, id: &str, status: &str, within: Duration) -> Agent {
    let deadline = Instant::now() + within;
    loop {
        let r = AgentsClient::new(api.clone())
            .describe(DescribeAgentRequest {
                agent_id: id.into(),
                stale: false,
            })
            .await;
        if let Ok(r) = r {
            if let Some(a) = r.into_inner().agent {
                if a.status == status {
                    return a;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "agent {id} never became {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A three-node cluster and one READY agent that measures its tasks every 500 ms and
/// reports 2 s windows (instead of 5 s and a minute), so utilization shows within seconds.
pub async fn cluster_with_fast_meter(id: &str) -> (Cluster, AgentProc) {
    require_docker();
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let a = AgentProc::start_with(
        &c,
        id,
        "a",
        &[],
        &[
            "--stats-interval-ms",
            "500",
            "--utilization-window-ms",
            "2000",
        ],
    );
    wait_agent(c.api(1), &a.id, "READY", Duration::from_secs(20)).await;
    (c, a)
}
