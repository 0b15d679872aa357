//! The agent's side of the agent protocol (served on every control node's raft port).
//!
//! One session at a time, with any control node: connect, `Register` (epoch, heartbeat
//! interval), then three loops side by side until one fails:
//! - heartbeats at the interval the control plane asked for; never any state in them;
//! - the `Assignments` stream (full set, then changes), handed to the reconciler, resumed
//!   from the last revision applied;
//! - `ReportTasks`, draining the report outbox in batches; a batch leaves the outbox only
//!   once acknowledged.
//! - `ReportUtilization`, sending the meter's windows as they close; a failure other than a
//!   stale registration keeps them for the next try without ending the session (they are
//!   figures, not state).
//!
//! `FAILED_PRECONDITION` or `NOT_FOUND` from any of them means the registration is stale
//! (the control plane restarted, marked the agent DOWN, or a report named a task it no
//! longer holds): register again on the same connection and ask for the full set. Any other
//! failure moves to the next control node, with back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{AssignedTask, TaskReport};
use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::{
    AgentRegisterRequest, AssignmentsRequest, HeartbeatRequest, ReportTasksRequest,
    ReportUtilizationRequest,
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::config::AgentConfig;
use crate::reconcile::Reconciler;
use crate::reports::ReportBook;
use crate::shutdown::Shutdown;

/// Reports per ReportTasks call.
const REPORT_BATCH: usize = 512;
/// Windows per ReportUtilization call.
const UTILIZATION_BATCH: usize = 1000;
/// Largest assignment batch accepted (a full set of many tasks with their definitions).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Consecutive failed heartbeats before moving to another control node.
const HEARTBEAT_FAILURES: u32 = 2;

/// When the agent last knew the control plane had heard from it: a heartbeat (or a
/// registration) acknowledged, which is what resets the leader's TTL timer. Fencing counts
/// from here.
pub(crate) struct Contact {
    last: Mutex<Instant>,
    /// The TTL the control plane last announced, in ms (0: not yet known).
    ttl_ms: AtomicU64,
}

impl Contact {
    pub fn new() -> Self {
        Contact {
            last: Mutex::new(Instant::now()),
            ttl_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn silence(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub fn ttl(&self) -> Option<Duration> {
        match self.ttl_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Why a session ended.
enum Ended {
    /// Register again on the same connection.
    Reregister(String),
    /// Move on to another control node.
    Failed(String),
}

fn stale(code: Code) -> bool {
    matches!(code, Code::FailedPrecondition | Code::NotFound)
}

fn classify(what: &str, s: tonic::Status) -> Ended {
    let msg = format!("{what}: {} ({:?})", s.message(), s.code());
    if stale(s.code()) {
        Ended::Reregister(msg)
    } else {
        Ended::Failed(msg)
    }
}

pub(crate) struct Session {
    pub cfg: AgentConfig,
    pub reconciler: Arc<Reconciler>,
    pub book: Arc<ReportBook>,
    pub contact: Arc<Contact>,
    pub engine: Arc<crate::engine_watch::EngineHealth>,
    pub utilization: Arc<crate::meter::Outbox>,
    pub shutdown: Shutdown,
    /// The current registration (epoch, heartbeat interval), kept across connections.
    pub registration: Mutex<Option<(u64, Duration)>>,
}

impl Session {
    /// Runs until shutdown: connects to the control nodes in turn, with back-off.
    pub async fn run(self) {
        let n = self.cfg.control.len().max(1);
        let mut next = 0usize;
        let mut backoff = self.cfg.backoff_min;
        let from_revision = AtomicU64::new(0);
        while !self.shutdown.is_triggered() {
            let Some(addr) = self.cfg.control.get(next % n).cloned() else {
                tracing::error!("no control node address configured");
                self.shutdown.wait().await;
                return;
            };
            let started = Instant::now();
            let outcome = tokio::select! {
                _ = self.shutdown.wait() => return,
                r = self.connect_and_serve(&addr, &from_revision) => r,
            };
            tracing::warn!(control = %addr, error = %outcome, "control session ended");
            // A session that lasted resets the back-off: the next failure is a new one.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = self.cfg.backoff_min;
            }
            next += 1;
            tokio::select! {
                _ = self.shutdown.wait() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }

    async fn connect_and_serve(&self, addr: &str, from_revision: &AtomicU64) -> String {
        let uri = berth_tls::grpc::uri(addr, self.cfg.tls.is_some());
        let endpoint = match Endpoint::from_shared(uri) {
            Ok(e) => e
                .connect_timeout(self.cfg.rpc_timeout)
                .tcp_nodelay(true)
                // Notices a dead control node under a quiet assignment stream.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true),
            Err(e) => return format!("bad control address {addr}: {e}"),
        };
        let endpoint = match &self.cfg.tls {
            None => endpoint,
            Some(creds) => match creds.secure(endpoint) {
                Ok(e) => e,
                Err(e) => return format!("TLS settings for {addr}: {e}"),
            },
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return format!("connect to {addr}: {e}"),
        };
        tracing::info!(control = %addr, "connected to control node");
        let client = AgentProtocolClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        loop {
            match self.registered(client.clone(), from_revision).await {
                Ended::Reregister(why) => {
                    // The next registration asks for the full set: it also prunes
                    // reports the control plane would refuse.
                    tracing::info!(control = %addr, reason = %why, "registering again");
                    // Do not spin if the control plane refuses over and over.
                    tokio::time::sleep(self.cfg.backoff_min).await;
                }
                Ended::Failed(why) => return why,
            }
        }
    }

    /// Registers (unless a registration from an earlier connection is still current),
    /// then runs heartbeats, assignments and reports until one ends. A registration is not
    /// tied to a connection: reusing it on another control node saves a Raft write per
    /// reconnect and keeps the epoch stable; a stale one is answered FAILED_PRECONDITION.
    async fn registered(
        &self,
        mut client: AgentProtocolClient<Channel>,
        from_revision: &AtomicU64,
    ) -> Ended {
        let current = *self.registration.lock().unwrap_or_else(|e| e.into_inner());
        let (epoch, interval) = match current {
            Some(r) => r,
            None => {
                let req = AgentRegisterRequest {
                    agent_id: self.cfg.id.clone(),
                    cpu: self.cfg.cpu,
                    memory: self.cfg.memory,
                    attributes: self.cfg.attributes.clone().into_iter().collect(),
                    address: self.cfg.advertise.clone(),
                };
                let reg = match tokio::time::timeout(self.cfg.rpc_timeout, client.register(req))
                    .await
                {
                    Err(_) => return Ended::Failed("register: no answer".into()),
                    // A refused registration (bad capacity, bad id) will not get better by
                    // re-registering at once; try elsewhere, with back-off.
                    Ok(Err(s)) => {
                        return Ended::Failed(format!("register: {} ({:?})", s.message(), s.code()))
                    }
                    Ok(Ok(r)) => r.into_inner(),
                };
                self.contact.touch();
                let interval = Duration::from_millis(reg.heartbeat_interval_ms.clamp(100, 10_000));
                tracing::info!(agent = %self.cfg.id, epoch = reg.epoch, interval_ms = interval.as_millis() as u64, "registered");
                *self.registration.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((reg.epoch, interval));
                // A new registration starts from the full set of assignments.
                from_revision.store(0, Ordering::Relaxed);
                (reg.epoch, interval)
            }
        };
        let ended = tokio::select! {
            e = self.heartbeats(client.clone(), epoch, interval) => e,
            e = self.assignments(client.clone(), epoch, from_revision) => e,
            e = self.reports(client.clone(), epoch) => e,
            e = self.utilization(client, epoch) => e,
        };
        if matches!(ended, Ended::Reregister(_)) {
            *self.registration.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        ended
    }

    async fn heartbeats(
        &self,
        mut client: AgentProtocolClient<Channel>,
        epoch: u64,
        interval: Duration,
    ) -> Ended {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timeout = interval
            .max(Duration::from_millis(500))
            .min(self.cfg.rpc_timeout);
        let mut failures = 0u32;
        let mut warned = false;
        loop {
            tick.tick().await;
            let req = HeartbeatRequest {
                agent_id: self.cfg.id.clone(),
                epoch,
                engine_error: self.engine.error().unwrap_or_default(),
            };
            match tokio::time::timeout(timeout, client.heartbeat(req)).await {
                Ok(Ok(resp)) => {
                    failures = 0;
                    self.contact.touch();
                    let ttl = resp.into_inner().ttl_ms;
                    self.contact.ttl_ms.store(ttl, Ordering::Relaxed);
                    let fence = self.cfg.fence_after + self.cfg.fence_grace;
                    if !warned
                        && ttl > 0
                        && !self.cfg.fence_after.is_zero()
                        && fence >= Duration::from_millis(ttl)
                    {
                        warned = true;
                        tracing::warn!(
                            fence_ms = fence.as_millis() as u64,
                            ttl_ms = ttl,
                            "fence time plus grace is not below the control plane's heartbeat TTL: a task may still run here when it is replaced elsewhere"
                        );
                    }
                }
                Ok(Err(s)) if stale(s.code()) => return classify("heartbeat", s),
                Ok(Err(s)) => {
                    failures += 1;
                    tracing::warn!(error = %s.message(), code = ?s.code(), failures, "heartbeat failed");
                    if failures >= HEARTBEAT_FAILURES {
                        return classify("heartbeat", s);
                    }
                }
                Err(_) => {
                    failures += 1;
                    tracing::warn!(failures, "heartbeat timed out");
                    if failures >= HEARTBEAT_FAILURES {
                        return Ended::Failed("heartbeat: no answer".into());
                    }
                }
            }
        }
    }

    async fn assignments(
        &self,
        mut client: AgentProtocolClient<Channel>,
        epoch: u64,
        from_revision: &AtomicU64,
    ) -> Ended {
        let req = AssignmentsRequest {
            agent_id: self.cfg.id.clone(),
            epoch,
            from_revision: from_revision.load(Ordering::Relaxed),
        };
        let mut stream =
            match tokio::time::timeout(self.cfg.rpc_timeout, client.assignments(req)).await {
                Err(_) => return Ended::Failed("assignments: no answer".into()),
                Ok(Err(s)) => return classify("assignments", s),
                Ok(Ok(r)) => r.into_inner(),
            };
        loop {
            let batch = match stream.message().await {
                Ok(Some(b)) => b,
                Ok(None) => return Ended::Failed("assignments: stream ended".into()),
                Err(s) => return classify("assignments", s),
            };
            let mut tasks = Vec::with_capacity(batch.tasks.len());
            let mut complete = true;
            for bytes in &batch.tasks {
                match serde_json::from_slice::<AssignedTask>(bytes) {
                    Ok(t) if t.task.agent_id == self.cfg.id => tasks.push(t),
                    Ok(t) => {
                        complete = false;
                        tracing::error!(task = %t.task.id, owner = %t.task.agent_id, "assignment names another agent; ignored");
                    }
                    Err(e) => {
                        complete = false;
                        tracing::error!(error = %e, "undecodable assignment; ignored");
                    }
                }
            }
            // A full set with a task we could not read is applied as a change only: what
            // it does not list is not stopped on the strength of a partial list.
            let full = batch.full && complete;
            if full {
                let listed: std::collections::HashSet<String> =
                    tasks.iter().map(|t| t.task.id.clone()).collect();
                self.book.retain_tasks(|id| listed.contains(id));
            }
            tracing::debug!(
                revision = batch.revision,
                full,
                tasks = tasks.len(),
                "assignments"
            );
            if self.reconciler.assign(full, tasks).await.is_err() {
                return Ended::Failed("the reconciler stopped".into());
            }
            from_revision.store(batch.revision, Ordering::Relaxed);
        }
    }

    async fn reports(&self, mut client: AgentProtocolClient<Channel>, epoch: u64) -> Ended {
        loop {
            if self.book.is_empty() {
                // Woken by a push; the timer only guards against a missed wake-up.
                tokio::select! {
                    _ = self.book.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let taken = self.book.take(REPORT_BATCH);
            let bytes = match serde_json::to_vec(&taken.reports) {
                Ok(b) => b,
                Err(e) => {
                    // Cannot happen for these types; drop rather than loop on it.
                    tracing::error!(error = %e, "could not encode reports; dropping them");
                    self.book.ack(&taken.seqs);
                    continue;
                }
            };
            let req = ReportTasksRequest {
                agent_id: self.cfg.id.clone(),
                epoch,
                reports: bytes,
            };
            match tokio::time::timeout(self.cfg.rpc_timeout, client.report_tasks(req)).await {
                Ok(Ok(_)) => {
                    log_sent(&taken.reports);
                    self.book.ack(&taken.seqs);
                }
                Ok(Err(s)) if s.code() == Code::InvalidArgument => {
                    // The control plane will never take this batch: keep it from blocking
                    // every later report.
                    tracing::error!(error = %s.message(), reports = taken.reports.len(), "control plane refused reports as invalid; dropping them");
                    self.book.ack(&taken.seqs);
                }
                Ok(Err(s)) => return classify("report", s),
                Err(_) => return Ended::Failed("report: no answer".into()),
            }
        }
    }
}

impl Session {
    async fn utilization(&self, mut client: AgentProtocolClient<Channel>, epoch: u64) -> Ended {
        loop {
            let windows = self.utilization.peek(UTILIZATION_BATCH);
            if windows.is_empty() {
                self.utilization.ready.notified().await;
                continue;
            }
            let bytes = match serde_json::to_vec(&windows) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not encode utilization; dropping it");
                    self.utilization.ack(windows.len());
                    continue;
                }
            };
            let req = ReportUtilizationRequest {
                agent_id: self.cfg.id.clone(),
                epoch,
                windows: bytes,
            };
            match tokio::time::timeout(self.cfg.rpc_timeout, client.report_utilization(req)).await {
                Ok(Ok(_)) => self.utilization.ack(windows.len()),
                Ok(Err(s)) if stale(s.code()) => return classify("utilization", s),
                Ok(Err(s)) if s.code() == Code::InvalidArgument => {
                    tracing::error!(error = %s.message(), "control plane refused utilization as invalid; dropping it");
                    self.utilization.ack(windows.len());
                }
                other => {
                    let why = match other {
                        Ok(Err(s)) => s.message().to_string(),
                        _ => "no answer".to_string(),
                    };
                    tracing::debug!(error = %why, "utilization not sent; kept for the next try");
                    tokio::time::sleep(self.cfg.backoff_max).await;
                }
            }
        }
    }
}

fn log_sent(reports: &[TaskReport]) {
    for r in reports {
        tracing::debug!(task = %r.task_id, status = %r.last_status, "reported");
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Reregister(s) | Ended::Failed(s) => f.write_str(s),
        }
    }
}
