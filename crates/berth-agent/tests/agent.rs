//! The whole agent (`berth_agent::run`) against a fake control plane that speaks the agent
//! protocol: registration, heartbeats, the assignment stream, reports, re-registration on a
//! stale epoch, and fencing when every control node goes silent. Real Docker underneath.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_agent::AgentConfig;
use berth_core::*;
use berth_proto::internal::agent_protocol_server::{AgentProtocol, AgentProtocolServer};
use berth_proto::internal::agent_service_client::AgentServiceClient;
use berth_proto::internal::*;
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct FakeState {
    epoch: u64,
    registrations: Vec<AgentRegisterRequest>,
    heartbeats: u64,
    /// Refuses everything and drops open streams: the agent is cut off.
    partitioned: bool,
    tasks: Vec<AssignedTask>,
    reports: Vec<TaskReport>,
    windows: Vec<berth_core::utilization::Window>,
    streams: Vec<mpsc::Sender<Result<AssignmentBatch, Status>>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn check(&self, epoch: u64) -> Result<(), Status> {
        let s = self.0.lock().unwrap();
        if s.partitioned {
            return Err(Status::unavailable("partitioned"));
        }
        if epoch != s.epoch {
            return Err(Status::failed_precondition(format!(
                "registration {epoch} is stale (current {}); re-register",
                s.epoch
            )));
        }
        Ok(())
    }

    fn reports_of(&self, task: &str) -> Vec<TaskReport> {
        let s = self.0.lock().unwrap();
        s.reports
            .iter()
            .filter(|r| r.task_id == task)
            .cloned()
            .collect()
    }

    async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&FakeState) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.0.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tonic::async_trait]
impl AgentProtocol for Fake {
    async fn register(
        &self,
        req: Request<AgentRegisterRequest>,
    ) -> Result<Response<AgentRegisterResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        if s.partitioned {
            return Err(Status::unavailable("partitioned"));
        }
        s.epoch += 1;
        s.registrations.push(req.into_inner());
        Ok(Response::new(AgentRegisterResponse {
            epoch: s.epoch,
            heartbeat_interval_ms: 200,
            revision: 1,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.check(req.get_ref().epoch)?;
        self.0.lock().unwrap().heartbeats += 1;
        Ok(Response::new(HeartbeatResponse { ttl_ms: 5000 }))
    }

    type AssignmentsStream = ReceiverStream<Result<AssignmentBatch, Status>>;

    async fn assignments(
        &self,
        req: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.check(req.get_ref().epoch)?;
        let (tx, rx) = mpsc::channel(16);
        let mut s = self.0.lock().unwrap();
        let tasks = s
            .tasks
            .iter()
            .map(|t| serde_json::to_vec(t).unwrap())
            .collect();
        let _ = tx.try_send(Ok(AssignmentBatch {
            revision: 1,
            full: true,
            tasks,
        }));
        s.streams.push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_tasks(
        &self,
        req: Request<ReportTasksRequest>,
    ) -> Result<Response<ReportTasksResponse>, Status> {
        self.check(req.get_ref().epoch)?;
        let reports: Vec<TaskReport> = serde_json::from_slice(&req.get_ref().reports)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0.lock().unwrap().reports.extend(reports);
        Ok(Response::new(ReportTasksResponse { revision: 1 }))
    }

    async fn report_utilization(
        &self,
        req: Request<ReportUtilizationRequest>,
    ) -> Result<Response<ReportUtilizationResponse>, Status> {
        self.check(req.get_ref().epoch)?;
        let windows: Vec<berth_core::utilization::Window> =
            serde_json::from_slice(&req.get_ref().windows)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0.lock().unwrap().windows.extend(windows);
        Ok(Response::new(ReportUtilizationResponse { revision: 1 }))
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn agent_registers_runs_reports_reregisters_and_fences_itself() {
    init_tracing();
    ensure_image();
    let agent_id = format!("test-agent-{}", std::process::id());
    let _cleanup = Cleanup(agent_id.clone());
    remove_agent_containers(&agent_id);
    // Fails loudly without an engine, like every test here.
    let _ = runtime(&agent_id).await;

    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = listener.local_addr().unwrap();
    let server = fake.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AgentProtocolServer::new(server))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let id = task_id("agent");
    let mut c = container("app", "");
    c.command = vec!["berth-ignore-term".into()];
    c.stop_timeout = Some(60);
    let t = task(&agent_id, &id, 256, 512, vec![c]);
    fake.0.lock().unwrap().tasks.push(t.clone());

    let data = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::new(
        // An address nobody listens on first: the agent must move on to the next.
        vec![free_addr().to_string(), control.to_string()],
        data.path().to_path_buf(),
    );
    cfg.id = agent_id.clone();
    cfg.cpu = 2048;
    cfg.memory = 4096;
    cfg.attributes.insert("zone".into(), "a".into());
    cfg.listen = free_addr();
    cfg.advertise = cfg.listen.to_string();
    cfg.fence_after = Duration::from_millis(1500);
    cfg.fence_grace = Duration::from_millis(300);
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(300);
    cfg.stats_every = Duration::from_millis(200);
    cfg.utilization_window = Duration::from_millis(600);
    let listen = cfg.listen;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(berth_agent::run(cfg, async {
        let _ = stop_rx.await;
    }));

    // Registered with its capacity, attributes and logs address; task running, reported.
    fake.wait("RUNNING report", Duration::from_secs(30), |s| {
        s.reports
            .iter()
            .any(|r| r.task_id == id && r.last_status == TaskState::Running)
    })
    .await;
    {
        let s = fake.0.lock().unwrap();
        let reg = &s.registrations[0];
        assert_eq!(reg.agent_id, agent_id);
        assert_eq!((reg.cpu, reg.memory), (2048, 4096));
        assert_eq!(reg.attributes.get("zone").map(String::as_str), Some("a"));
        assert_eq!(reg.address, listen.to_string());
    }
    let states: Vec<TaskState> = fake.reports_of(&id).iter().map(|r| r.last_status).collect();
    assert!(
        states.starts_with(&[TaskState::Pending, TaskState::Activating]),
        "{states:?}"
    );
    fake.wait("heartbeats", Duration::from_secs(5), |s| s.heartbeats >= 2)
        .await;

    // Logs through AgentService, the way the control plane proxies them.
    let mut client = AgentServiceClient::connect(format!("http://{listen}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = client
            .logs(LogsRequest {
                task_id: id.clone(),
                container: String::new(),
                follow: false,
                tail: 10,
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            assert_eq!(chunk.container, "app");
            out.extend(chunk.data);
        }
        if String::from_utf8_lossy(&out).contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "no logs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = client
        .logs(LogsRequest {
            task_id: "nope".into(),
            container: String::new(),
            follow: false,
            tail: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The control plane forgets the registration (a restart): re-register, carry on.
    let regs = fake.0.lock().unwrap().registrations.len();
    fake.0.lock().unwrap().epoch += 100;
    fake.wait("re-registration", Duration::from_secs(10), |s| {
        s.registrations.len() > regs
    })
    .await;
    let container = berth_agent::spec::docker_name(&id, "app");
    assert_eq!(
        docker_inspect(&container)["State"]["Running"],
        true,
        "re-registering stops nothing"
    );

    // Measured use arrives in windows.
    fake.wait("a utilization window", Duration::from_secs(10), |s| {
        s.windows.iter().any(|w| w.task_id == id)
    })
    .await;

    // Cut off from every control node: the agent stops its task by itself.
    let cut = Instant::now();
    let cut_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    {
        let mut s = fake.0.lock().unwrap();
        s.partitioned = true;
        s.streams.clear();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &container])
            .output()
            .unwrap();
        if !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() == "false" {
            break;
        }
        assert!(Instant::now() < deadline, "the agent never fenced itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = cut.elapsed();
    // At most fence_after (1.5 s) + grace (0.3 s) + engine and tick latency; never before
    // fence_after minus one heartbeat interval.
    assert!(
        fenced_after >= Duration::from_millis(1200),
        "fenced too early: {fenced_after:?}"
    );
    assert!(
        fenced_after < Duration::from_millis(3500),
        "fenced too late: {fenced_after:?}"
    );
    println!("task dead {fenced_after:?} after the cut (fence 1.5 s, grace 0.3 s)");

    // Contact again: the agent reconnects (its registration still current), is told
    // (still) to run the task, reports it STOPPED by fencing and does not start it again.
    fake.0.lock().unwrap().partitioned = false;
    fake.wait("STOPPED report", Duration::from_secs(15), |s| {
        s.reports
            .iter()
            .any(|r| r.task_id == id && r.last_status == TaskState::Stopped)
    })
    .await;
    let stopped = fake
        .reports_of(&id)
        .into_iter()
        .find(|r| r.last_status == TaskState::Stopped)
        .unwrap();
    assert_eq!(stopped.stop_code, Some(StopCode::InfrastructureHealth));
    // What was measured while cut off was kept and sent once heard again: the windows
    // follow one another without a gap.
    fake.wait(
        "windows measured while cut off",
        Duration::from_secs(10),
        |s| s.windows.iter().any(|w| w.task_id == id && w.end > cut_ms),
    )
    .await;
    let windows: Vec<_> = fake
        .0
        .lock()
        .unwrap()
        .windows
        .iter()
        .filter(|w| w.task_id == id)
        .cloned()
        .collect();
    for pair in windows.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "{windows:?}");
    }
    assert!(
        stopped
            .stopped_reason
            .as_deref()
            .unwrap()
            .contains("fenced"),
        "{stopped:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exists = std::process::Command::new("docker")
        .args(["inspect", &container])
        .output()
        .unwrap()
        .status
        .success();
    assert!(!exists, "a fenced task is not started again");
    let states: Vec<TaskState> = fake.reports_of(&id).iter().map(|r| r.last_status).collect();
    assert!(
        states.windows(2).all(|w| w[0] <= w[1]),
        "reports arrive in order: {states:?}"
    );

    // Shutdown is prompt.
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}
