//! Simulated agents: capacity for RunTask to place on when no real agent runs (the chaos
//! suite's simulated agents, the scale benchmark's thousands). Each one
//! speaks the agent protocol on the control nodes' raft ports as `berth agent` does —
//! Register, Heartbeat, the Assignments stream, ReportTasks — and moves its tasks forward
//! instantly (RUNNING when assigned, STOPPED when asked to stop), so tasks have a life and
//! capacity is released. A fault "kills" one by making it fall silent past the TTL, or
//! freezes it past the TTL and thaws it under its old registration.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::{AssignedTask, DesiredStatus, TaskReport, TaskState};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::{
    AgentRegisterRequest, AssignmentsRequest, HeartbeatRequest, ReportTasksRequest,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// By default a stream silent this long is re-opened (its node may be cut off and stale):
/// the chaos suite's few agents see changes every second or so.
pub const STREAM_SILENCE: Duration = Duration::from_secs(5);

pub struct SimAgent {
    pub id: String,
    pub cpu: u32,
    pub memory: u32,
    pub zone: String,
    /// Set by the fault injector: the agent stops talking (as if its host died) until
    /// cleared.
    pub dead: AtomicBool,
    /// Set by the fault injector: the agent is frozen (as a paused process is) and goes on
    /// under the registration it had when it is thawed, as a real agent does.
    pub paused: AtomicBool,
    /// Registrations made: more than one means a session ended (a stream or heartbeat
    /// refused, as after being marked DOWN) and the agent registered again.
    pub registrations: AtomicU64,
    /// Heartbeats the control plane answered.
    pub heartbeats: AtomicU64,
    /// Silence on the assignment stream after which the session is started again; None:
    /// never (a quiet stream is normal where thousands of agents share a modest load, and
    /// a real agent does not re-open one either).
    pub reopen_after: Option<Duration>,
}

impl SimAgent {
    pub fn new(id: &str, cpu: u32, memory: u32, zone: &str) -> Self {
        SimAgent {
            id: id.to_string(),
            cpu,
            memory,
            zone: zone.to_string(),
            dead: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            registrations: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            reopen_after: Some(STREAM_SILENCE),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(agent: Arc<SimAgent>, raft: Vec<Channel>, stop: Arc<AtomicBool>) {
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if agent.dead.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let ch = raft[k % raft.len()].clone();
        if session(&agent, ch, &stop).await.is_err() {
            k += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// One registration: heartbeats and assignments until something fails.
async fn session(agent: &SimAgent, ch: Channel, stop: &AtomicBool) -> Result<(), ()> {
    let mut client = AgentProtocolClient::new(ch);
    let reg = client
        .register(AgentRegisterRequest {
            agent_id: agent.id.clone(),
            cpu: agent.cpu,
            memory: agent.memory,
            attributes: HashMap::from([("zone".to_string(), agent.zone.clone())]),
            address: String::new(),
        })
        .await
        .map_err(drop)?
        .into_inner();
    agent.registrations.fetch_add(1, Ordering::Relaxed);
    let epoch = reg.epoch;
    let hb_every = Duration::from_millis(reg.heartbeat_interval_ms.clamp(200, 2000));
    let mut stream = client
        .assignments(AssignmentsRequest {
            agent_id: agent.id.clone(),
            epoch,
            from_revision: 0,
        })
        .await
        .map_err(drop)?
        .into_inner();
    // What this agent last reported per task, so a report is sent once per change.
    let mut reported: BTreeMap<String, TaskState> = BTreeMap::new();
    let mut tick = tokio::time::interval(hb_every);
    let mut last_batch = tokio::time::Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || agent.dead.load(Ordering::Relaxed) {
            return Ok(());
        }
        if agent.paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last_batch = tokio::time::Instant::now();
            continue;
        }
        tokio::select! {
            _ = tick.tick() => {
                client
                    .heartbeat(HeartbeatRequest { agent_id: agent.id.clone(), epoch, engine_error: String::new() })
                    .await
                    .map_err(drop)?;
                agent.heartbeats.fetch_add(1, Ordering::Relaxed);
                if agent.reopen_after.is_some_and(|d| last_batch.elapsed() > d) {
                    return Err(());
                }
            }
            item = stream.next() => {
                let batch = match item {
                    Some(Ok(b)) => b,
                    _ => return Err(()),
                };
                last_batch = tokio::time::Instant::now();
                let mut reports = Vec::new();
                for raw in &batch.tasks {
                    let Ok(a) = serde_json::from_slice::<AssignedTask>(raw) else { continue };
                    let t = &a.task;
                    let want = match t.desired_status {
                        DesiredStatus::Stopped => TaskState::Stopped,
                        DesiredStatus::Running => TaskState::Running,
                    };
                    if t.last_status >= want || reported.get(&t.id) == Some(&want) {
                        continue;
                    }
                    reported.insert(t.id.clone(), want);
                    reports.push(TaskReport {
                        task_id: t.id.clone(),
                        last_status: want,
                        at: now_ms(),
                        containers: Vec::new(),
                        stop_code: None,
                        stopped_reason: None,
                    });
                }
                if batch.full {
                    // Forget what is no longer ours (bounded by the assignment set).
                    let ids: std::collections::BTreeSet<String> = batch
                        .tasks
                        .iter()
                        .filter_map(|raw| serde_json::from_slice::<AssignedTask>(raw).ok())
                        .map(|a| a.task.id)
                        .collect();
                    reported.retain(|id, _| ids.contains(id));
                }
                if !reports.is_empty() {
                    let body = serde_json::to_vec(&reports).map_err(drop)?;
                    if client
                        .report_tasks(ReportTasksRequest { agent_id: agent.id.clone(), epoch, reports: body })
                        .await
                        .is_err()
                    {
                        // Sent again from the next full set of a new session.
                        return Err(());
                    }
                }
            }
        }
    }
}
