//! Shared by the runtime-level tests: the real Docker engine, the project's own image, a
//! reconciler driven directly (assignments in, reports out), and clean-up of every
//! container a test created — also when the test fails.

#![allow(dead_code)]

use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_agent::{Reconciler, ReconcilerSettings, Runtime, RuntimeOptions};
use berth_core::*;
use tokio::sync::mpsc;

pub const IMAGE: &str = "berth/workload:latest";

/// Builds (or checks) the workload image once per test binary, with the project's script.
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/images/build.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Connects to the engine, or fails the test saying why: these tests never pass without one.
pub async fn runtime(agent_id: &str) -> Runtime {
    match Runtime::connect(agent_id, RuntimeOptions::default()).await {
        Ok(r) => r,
        Err(e) => panic!(
            "these tests run tasks on a real Docker engine, and none answered: {e}. \
             Start dockerd (or set DOCKER_HOST=unix:///path/to/docker.sock) and run them again."
        ),
    }
}

/// Removes every container labelled with the agent id when dropped (test passed or not).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_agent_containers(&self.0);
    }
}

pub fn remove_agent_containers(agent_id: &str) {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.agent={agent_id}"),
        ])
        .output();
    if let Ok(out) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

/// Collected reports, in the order they were emitted.
#[derive(Clone, Default)]
pub struct Reports(pub Arc<Mutex<Vec<TaskReport>>>);

impl Reports {
    pub fn collect(mut rx: mpsc::Receiver<TaskReport>) -> Reports {
        let r = Reports::default();
        let sink = r.0.clone();
        tokio::spawn(async move {
            while let Some(rep) = rx.recv().await {
                sink.lock().unwrap().push(rep);
            }
        });
        r
    }

    pub fn of(&self, task: &str) -> Vec<TaskReport> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.task_id == task)
            .cloned()
            .collect()
    }

    pub fn states(&self, task: &str) -> Vec<TaskState> {
        self.of(task).iter().map(|r| r.last_status).collect()
    }

    /// The first report of `task` matching `pred`, waiting up to `timeout`.
    pub async fn wait(
        &self,
        task: &str,
        timeout: Duration,
        pred: impl Fn(&TaskReport) -> bool,
    ) -> TaskReport {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.of(task).into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {task}: no matching report within {timeout:?}; reports so far: {:#?}",
                    self.of(task)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_state(&self, task: &str, state: TaskState, timeout: Duration) -> TaskReport {
        self.wait(task, timeout, |r| r.last_status == state).await
    }
}

/// One test's agent: a unique id, its reconciler, its reports, its clean-up.
pub struct Harness {
    pub agent_id: String,
    pub runtime: Runtime,
    pub reconciler: Reconciler,
    pub reports: Reports,
    pub data: tempfile::TempDir,
    _cleanup: Cleanup,
}

impl Harness {
    pub async fn new(name: &str) -> Harness {
        init_tracing();
        ensure_image();
        let agent_id = format!("test-{name}-{}", std::process::id());
        let cleanup = Cleanup(agent_id.clone());
        remove_agent_containers(&agent_id);
        let runtime = runtime(&agent_id).await;
        let data = tempfile::tempdir().unwrap();
        let (reconciler, reports) = start_reconciler(&runtime, &agent_id, data.path()).await;
        Harness {
            agent_id,
            runtime,
            reconciler,
            reports,
            data,
            _cleanup: cleanup,
        }
    }

    /// Simulates an agent restart: the reconciler goes (containers stay), a new one starts
    /// with the same id and data directory and fresh report collection.
    pub async fn restart(&mut self) {
        self.reconciler.shutdown().await;
        let (reconciler, reports) =
            start_reconciler(&self.runtime, &self.agent_id, self.data.path()).await;
        self.reconciler = reconciler;
        self.reports = reports;
    }

    pub fn task(
        &self,
        id: &str,
        cpu: u32,
        memory: u32,
        containers: Vec<ContainerDefinition>,
    ) -> AssignedTask {
        task(&self.agent_id, id, cpu, memory, containers)
    }

    pub async fn run(&self, t: &AssignedTask) {
        self.reconciler
            .assign(false, vec![t.clone()])
            .await
            .unwrap();
    }

    /// What the control plane sends when a user stops `t`.
    pub async fn stop(&self, t: &AssignedTask) {
        let mut t = t.clone();
        t.task.desired_status = DesiredStatus::Stopped;
        t.task.stop_code = Some(StopCode::UserInitiated);
        t.task.stopped_reason = Some("stopped by the test".into());
        self.reconciler.assign(false, vec![t]).await.unwrap();
    }

    /// `docker inspect` of a task's container, as JSON.
    pub fn inspect(&self, task: &str, container: &str) -> serde_json::Value {
        docker_inspect(&berth_agent::spec::docker_name(task, container))
    }

    pub fn exists(&self, task: &str, container: &str) -> bool {
        Command::new("docker")
            .args(["inspect", &berth_agent::spec::docker_name(task, container)])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

pub async fn start_reconciler(
    runtime: &Runtime,
    agent_id: &str,
    data: &std::path::Path,
) -> (Reconciler, Reports) {
    let (tx, rx) = mpsc::channel(1024);
    let reports = Reports::collect(rx);
    let reconciler = Reconciler::start(
        runtime.clone(),
        ReconcilerSettings {
            agent_id: agent_id.to_string(),
            data_dir: Some(data.to_path_buf()),
            sweep_every: Duration::from_secs(2),
            metrics: Default::default(),
        },
        tx,
    )
    .await
    .unwrap();
    (reconciler, reports)
}

pub fn docker_inspect(name: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker inspect {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

pub fn docker_exec(name: &str, cmd: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("exec")
        .arg(name)
        .args(cmd)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A container of the workload image running `script` under `sh -c`.
pub fn container(name: &str, script: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: name.into(),
        image: IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

pub fn task(
    agent_id: &str,
    id: &str,
    cpu: u32,
    memory: u32,
    containers: Vec<ContainerDefinition>,
) -> AssignedTask {
    AssignedTask {
        task: Task {
            id: id.to_string(),
            family: "test".into(),
            revision: 1,
            cpu,
            memory,
            agent_id: agent_id.to_string(),
            last_status: TaskState::Provisioning,
            desired_status: DesiredStatus::Running,
            started_by: String::new(),
            group: String::new(),
            client_token: None,
            overrides: vec![],
            containers: vec![],
            health_status: Default::default(),
            ready_since: None,
            stop_code: None,
            stopped_reason: None,
            created_at: 0,
            pull_started_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            version: 1,
            transitions: vec![],
            run: None,
            timeouts: Default::default(),
        },
        definition: TaskDefinition {
            family: "test".into(),
            revision: 1,
            cpu,
            memory,
            network_mode: NetworkMode::Bridge,
            container_definitions: containers,
            status: TaskDefinitionStatus::Active,
            registered_at: 0,
            deregistered_at: None,
            timeouts: Default::default(),
        },
    }
}

/// A task id unique to this process and call site.
pub fn task_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "berth_agent=info".into()),
            )
            .with_test_writer()
            .try_init();
    });
}
