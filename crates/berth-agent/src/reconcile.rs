//! The reconcile loop: makes the engine run what the agent is assigned, nothing else.
//!
//! Input: assignment batches (the full set, then changes), a fence order, engine events.
//! Output: [`TaskReport`]s on a channel — one per state each task reaches. The loop owns one
//! supervisor per task it runs ([`crate::task`]); it never blocks on one.
//!
//! Rules, per assigned task:
//! - supervised already: a desired STOPPED (or a task the control plane ended) is passed
//!   on as a stop request, with the control plane's stop code if it set one;
//! - ended here already (a record in `DATA/tasks`): never run again; the record goes once
//!   the control plane has the task STOPPED or no longer lists it;
//! - found on the engine at start (agent restart): adopted as it is, nothing restarted;
//! - new (PROVISIONING/PENDING, desired RUNNING): started;
//! - anything else (the control plane says it ran here, the engine has nothing): reported
//!   STOPPED, never started twice.
//!
//! A full set also ends what it does not list: those tasks are stopped and removed without
//! reports (the control plane no longer knows them, and would refuse the batch), and
//! containers labelled for this agent that belong to no listed task are removed.
//!
//! Engine events (`die`, `oom`) reach supervisors through this loop; a sweep (one `list`
//! call) after every event-stream reconnect and every `sweep_every` catches what a lost
//! event would hide.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_core::{AssignedTask, ContainerState, DesiredStatus, StopCode, TaskReport, TaskState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use crate::runtime::{ContainerEvent, Observed, Runtime};
use crate::spec;
use crate::store::Store;
use crate::task::{self, Mode, StopRequest, TaskCtx};
use crate::{now_ms, truncate_reason, AgentError};

/// Inputs queued to the loop. Small: producers wait when it is full, which slows the engine
/// event reader and the assignment stream, never loses a message.
const INBOX: usize = 256;
/// Events queued per supervisor; an overflow is dropped (the next sweep re-inspects).
const TASK_EVENTS: usize = 64;

/// Settings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    pub agent_id: String,
    /// Where final task records are kept (`None`: not kept, e.g. in tests).
    pub data_dir: Option<PathBuf>,
    /// How often the engine is listed to catch exits whose events were lost.
    pub sweep_every: Duration,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

/// What the loop is doing, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tasks with a live supervisor.
    pub supervised: Vec<String>,
    /// Tasks ended here whose end the control plane has not confirmed yet.
    pub ended: Vec<String>,
}

enum Input {
    Assign {
        full: bool,
        tasks: Vec<AssignedTask>,
    },
    Fence {
        reason: String,
        grace: Duration,
    },
    Event(ContainerEvent),
    /// The event stream (re)connected: look at everything.
    Sweep,
    Snapshot(oneshot::Sender<Snapshot>),
}

/// A handle on the running loop. Dropping it (or [`Reconciler::shutdown`]) stops the loop
/// and every supervisor **without** stopping any container: the next start adopts them.
pub struct Reconciler {
    tx: mpsc::Sender<Input>,
    stop: watch::Sender<bool>,
    join: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Reconciler {
    /// Lists this agent's containers (for adoption), loads the records of tasks ended
    /// before a restart (their reports are sent again), and starts the loop and the engine
    /// event reader.
    pub async fn start(
        runtime: Runtime,
        settings: ReconcilerSettings,
        reports: mpsc::Sender<TaskReport>,
    ) -> Result<Reconciler, AgentError> {
        let store = match &settings.data_dir {
            Some(dir) => Some(Arc::new(Store::open(dir).await.map_err(|source| {
                AgentError::DataDir {
                    path: dir.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let mut ended = HashMap::new();
        if let Some(store) = &store {
            let records = store.load().await.map_err(|source| AgentError::DataDir {
                path: settings.data_dir.clone().unwrap_or_default(),
                source,
            })?;
            for r in records {
                ended.insert(r.task_id.clone(), r);
            }
        }
        let mut boot: HashMap<String, Vec<Observed>> = HashMap::new();
        for o in runtime.list_own().await? {
            if ended.contains_key(&o.task_id) {
                // Ended before the restart, removal interrupted: finish it now.
                if let Err(e) = runtime.remove(&o.id).await {
                    tracing::warn!(task = %o.task_id, error = %e, "removing a leftover container failed");
                }
                continue;
            }
            boot.entry(o.task_id.clone()).or_default().push(o);
        }
        tracing::info!(
            agent = %settings.agent_id,
            found = boot.len(),
            ended = ended.len(),
            "reconciler starting"
        );
        for r in ended.values() {
            let _ = reports.send(r.clone()).await;
        }
        let (tx, rx) = mpsc::channel(INBOX);
        let (stop, stop_rx) = watch::channel(false);
        let lp = Loop {
            runtime: runtime.clone(),
            settings,
            reports,
            store,
            live: HashMap::new(),
            ended,
            boot: Some(boot),
            supervisors: JoinSet::new(),
            join_ids: HashMap::new(),
        };
        let events_tx = tx.clone();
        let events_stop = stop_rx.clone();
        let join = tokio::spawn(async move {
            let events = tokio::spawn(read_events(runtime, events_tx, events_stop));
            lp.run(rx, stop_rx).await;
            events.abort();
        });
        Ok(Reconciler {
            tx,
            stop,
            join: std::sync::Mutex::new(Some(join)),
        })
    }

    async fn send(&self, input: Input) -> Result<(), AgentError> {
        self.tx.send(input).await.map_err(|_| AgentError::Stopped)
    }

    /// An assignment batch: `full` means these are all the tasks the agent holds.
    pub async fn assign(&self, full: bool, tasks: Vec<AssignedTask>) -> Result<(), AgentError> {
        self.send(Input::Assign { full, tasks }).await
    }

    /// Cut off from the control plane: stop every task (SIGKILL after `grace`), reported
    /// with `InfrastructureHealth` and `reason`.
    pub async fn fence(&self, reason: String, grace: Duration) -> Result<(), AgentError> {
        self.send(Input::Fence { reason, grace }).await
    }

    pub async fn snapshot(&self) -> Result<Snapshot, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Snapshot(tx)).await?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    /// Stops the loop and its supervisors; containers keep running.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let join = self.join.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(join) = join {
            let _ = join.await;
        }
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A task with a live supervisor.
struct Live {
    assigned: AssignedTask,
    stop: watch::Sender<Option<StopRequest>>,
    events: mpsc::Sender<ContainerEvent>,
    silenced: Arc<AtomicBool>,
}

struct Loop {
    runtime: Runtime,
    settings: ReconcilerSettings,
    reports: mpsc::Sender<TaskReport>,
    store: Option<Arc<Store>>,
    live: HashMap<String, Live>,
    /// Final reports of tasks ended here, until the control plane confirms.
    ended: HashMap<String, TaskReport>,
    /// Containers found at start, by task, until the first full assignment decides.
    boot: Option<HashMap<String, Vec<Observed>>>,
    supervisors: JoinSet<TaskReport>,
    join_ids: HashMap<tokio::task::Id, String>,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut stop: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(self.settings.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = until_true(&mut stop) => break,
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input).await,
                    None => break,
                },
                Some(done) = self.supervisors.join_next_with_id() => self.on_supervisor_done(done).await,
                _ = sweep.tick() => self.sweep().await,
            }
            self.settings.metrics.set_tasks(self.live.len());
        }
        // Supervisors are aborted where they stand; containers stay as they are.
        self.supervisors.abort_all();
        tracing::info!(agent = %self.settings.agent_id, "reconciler stopped");
    }

    async fn on_input(&mut self, input: Input) {
        match input {
            Input::Assign { full, tasks } => self.assign(full, tasks).await,
            Input::Fence { reason, grace } => self.fence(reason, grace).await,
            Input::Event(ev) => {
                if let Some(live) = self.live.get(&ev.task_id) {
                    if live.events.try_send(ev).is_err() {
                        tracing::debug!("supervisor event queue full; the sweep will catch up");
                    }
                }
            }
            Input::Sweep => self.sweep().await,
            Input::Snapshot(tx) => {
                let mut supervised: Vec<String> = self.live.keys().cloned().collect();
                supervised.sort();
                let mut ended: Vec<String> = self.ended.keys().cloned().collect();
                ended.sort();
                let _ = tx.send(Snapshot { supervised, ended });
            }
        }
    }

    async fn on_supervisor_done(
        &mut self,
        done: Result<(tokio::task::Id, TaskReport), tokio::task::JoinError>,
    ) {
        match done {
            Ok((jid, report)) => {
                self.join_ids.remove(&jid);
                let id = report.task_id.clone();
                let Some(live) = self.live.remove(&id) else {
                    return;
                };
                if live.silenced.load(Ordering::Relaxed) {
                    // Not ours any more: nothing to confirm.
                    if let Some(store) = &self.store {
                        store.remove(&id).await;
                    }
                } else {
                    self.ended.insert(id, report);
                }
            }
            Err(e) => {
                let id = self.join_ids.remove(&e.id());
                // A panicking supervisor is a bug; its containers are left to the sweep
                // (removed once the task is no longer supervised) and the task is reported
                // as failed so it is not silently lost.
                tracing::error!(task = ?id, error = %e, "task supervisor failed");
                if let Some(id) = id {
                    if let Some(live) = self.live.remove(&id) {
                        if !live.silenced.load(Ordering::Relaxed) {
                            self.end_without_containers(
                                &live.assigned,
                                StopCode::TaskFailedToStart,
                                format!("agent error while supervising the task: {e}"),
                            )
                            .await;
                        }
                    }
                }
            }
        }
    }

    fn spawn(&mut self, assigned: AssignedTask, mode: Mode, stop: Option<StopRequest>) {
        let id = assigned.task.id.clone();
        let plan = spec::plan(
            &self.settings.agent_id,
            &assigned,
            self.runtime.options().pids_per_task,
            self.runtime.max_nano_cpus(),
        );
        let (stop_tx, stop_rx) = watch::channel(stop);
        let (events_tx, events_rx) = mpsc::channel(TASK_EVENTS);
        let silenced = Arc::new(AtomicBool::new(false));
        let ctx = TaskCtx {
            runtime: self.runtime.clone(),
            plan,
            reports: self.reports.clone(),
            silenced: silenced.clone(),
            stop: stop_rx,
            events: events_rx,
            store: self.store.clone(),
            metrics: self.settings.metrics.clone(),
        };
        let handle = self.supervisors.spawn(task::supervise(ctx, mode));
        self.join_ids.insert(handle.id(), id.clone());
        self.live.insert(
            id,
            Live {
                assigned,
                stop: stop_tx,
                events: events_tx,
                silenced,
            },
        );
    }

    /// The stop the control plane asks for `t`, if it asks for one.
    fn requested_stop(t: &AssignedTask) -> Option<StopRequest> {
        if t.task.desired_status != DesiredStatus::Stopped
            && t.task.last_status != TaskState::Stopped
        {
            return None;
        }
        Some(StopRequest {
            code: t.task.stop_code.unwrap_or(StopCode::UserInitiated),
            reason: t
                .task
                .stopped_reason
                .clone()
                .unwrap_or_else(|| "Task stopped by user".to_string()),
            grace: None,
        })
    }

    async fn assign(&mut self, full: bool, tasks: Vec<AssignedTask>) {
        if full {
            let listed: std::collections::HashSet<&str> =
                tasks.iter().map(|t| t.task.id.as_str()).collect();
            for (id, live) in &self.live {
                if !listed.contains(id.as_str()) && !live.silenced.swap(true, Ordering::Relaxed) {
                    tracing::info!(task = %id, "no longer assigned here; stopping it");
                    live.stop.send_if_modified(|s| {
                        if s.is_none() {
                            *s = Some(StopRequest {
                                code: StopCode::ServiceSchedulerInitiated,
                                reason: "Task no longer assigned to this agent".into(),
                                grace: None,
                            });
                            true
                        } else {
                            false
                        }
                    });
                }
            }
            let gone: Vec<String> = self
                .ended
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.forget(&id).await;
            }
            if let Some(boot) = &mut self.boot {
                let unassigned: Vec<String> = boot
                    .keys()
                    .filter(|id| !listed.contains(id.as_str()))
                    .cloned()
                    .collect();
                for id in unassigned {
                    for o in boot.remove(&id).unwrap_or_default() {
                        tracing::info!(task = %id, container = %o.container, "removing a container no longer assigned here");
                        if let Err(e) = self.runtime.remove(&o.id).await {
                            tracing::warn!(task = %id, error = %e, "removing container failed");
                        }
                    }
                }
            }
        }
        for t in tasks {
            self.assign_one(t).await;
        }
        if full {
            // Whatever was found at start is now adopted or removed.
            self.boot = None;
        }
    }

    async fn assign_one(&mut self, t: AssignedTask) {
        let id = t.task.id.clone();
        let stop = Self::requested_stop(&t);
        if let Some(live) = self.live.get_mut(&id) {
            if let Some(stop) = stop {
                live.stop.send_if_modified(|s| {
                    if s.is_none() {
                        *s = Some(stop);
                        true
                    } else {
                        false
                    }
                });
            }
            live.assigned = t;
            return;
        }
        if self.ended.contains_key(&id) {
            if t.task.last_status == TaskState::Stopped {
                self.forget(&id).await;
            }
            return;
        }
        if let Some(found) = self.boot.as_mut().and_then(|b| b.remove(&id)) {
            self.spawn(t, Mode::Adopt(found), stop);
            return;
        }
        if t.task.last_status == TaskState::Stopped {
            return;
        }
        if let Some(stop) = stop {
            // Stopped before it ever started here.
            self.end_without_containers(&t, stop.code, stop.reason)
                .await;
            return;
        }
        match t.task.last_status {
            TaskState::Provisioning | TaskState::Pending => self.spawn(t, Mode::Fresh, None),
            TaskState::Activating => {
                let reason = format!(
                    "CannotStartContainerError: agent {} restarted while starting the task and found none of its containers",
                    self.settings.agent_id
                );
                self.end_without_containers(&t, StopCode::TaskFailedToStart, reason)
                    .await;
            }
            _ => {
                let reason = format!(
                    "the task's containers are gone from agent {} (removed outside Berth, or the agent's records were lost)",
                    self.settings.agent_id
                );
                self.end_without_containers(&t, StopCode::InfrastructureHealth, reason)
                    .await;
            }
        }
    }

    /// Reports a task STOPPED that has no containers here, and records it.
    async fn end_without_containers(&mut self, t: &AssignedTask, code: StopCode, reason: String) {
        let report = TaskReport {
            task_id: t.task.id.clone(),
            last_status: TaskState::Stopped,
            at: now_ms(),
            containers: t
                .definition
                .container_definitions
                .iter()
                .map(|c| {
                    let prev = t.task.containers.iter().find(|s| s.name == c.name);
                    ContainerState {
                        name: c.name.clone(),
                        last_status: TaskState::Stopped,
                        exit_code: prev.and_then(|p| p.exit_code),
                        reason: prev.and_then(|p| p.reason.clone()),
                        health_status: prev.and_then(|p| p.health_status),
                        network_bindings: Vec::new(),
                    }
                })
                .collect(),
            stop_code: Some(code),
            stopped_reason: Some(truncate_reason(reason)),
        };
        self.record_end(report).await;
    }

    async fn record_end(&mut self, report: TaskReport) {
        if let Some(store) = &self.store {
            if let Err(e) = store.save(&report).await {
                tracing::warn!(task = %report.task_id, error = %e, "could not record the task's end");
            }
        }
        self.ended.insert(report.task_id.clone(), report.clone());
        let _ = self.reports.send(report).await;
    }

    /// The control plane has the task's end: drop our record.
    async fn forget(&mut self, id: &str) {
        self.ended.remove(id);
        if let Some(store) = &self.store {
            store.remove(id).await;
        }
    }

    async fn fence(&mut self, reason: String, grace: Duration) {
        tracing::warn!(agent = %self.settings.agent_id, tasks = self.live.len(), %reason, "fencing: stopping every task");
        let req = StopRequest {
            code: StopCode::InfrastructureHealth,
            reason: reason.clone(),
            grace: Some(grace),
        };
        for live in self.live.values() {
            // Replaces any earlier request: the tighter grace matters now.
            let _ = live.stop.send(Some(req.clone()));
        }
        // Containers found at start and not yet adopted: no definition to stop them by, so
        // SIGTERM, SIGKILL after the grace, remove; the tasks are recorded as ended.
        let boot = self.boot.take().unwrap_or_default();
        self.boot = Some(HashMap::new());
        for (task_id, found) in boot {
            let runtime = self.runtime.clone();
            let ids: Vec<String> = found.iter().map(|o| o.id.clone()).collect();
            tokio::spawn(async move {
                for id in &ids {
                    let _ = runtime.signal(id, "SIGTERM").await;
                }
                tokio::time::sleep(grace).await;
                for id in &ids {
                    if let Err(e) = runtime.remove(id).await {
                        tracing::warn!(error = %e, "removing a fenced container failed");
                    }
                }
            });
            let mut containers: Vec<ContainerState> = found
                .iter()
                .map(|o| ContainerState {
                    name: o.container.clone(),
                    last_status: TaskState::Stopped,
                    exit_code: None,
                    reason: Some("Killed by fencing".into()),
                    health_status: None,
                    network_bindings: Vec::new(),
                })
                .collect();
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            self.record_end(TaskReport {
                task_id,
                last_status: TaskState::Stopped,
                at: now_ms(),
                containers,
                stop_code: Some(StopCode::InfrastructureHealth),
                stopped_reason: Some(truncate_reason(reason.clone())),
            })
            .await;
        }
    }

    /// One look at every container of this agent: exits the events did not tell, and
    /// containers no task here owns.
    async fn sweep(&mut self) {
        let found = match self.runtime.list_own().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: listing containers failed");
                return;
            }
        };
        let mut poked = std::collections::HashSet::new();
        for o in found {
            if let Some(live) = self.live.get(&o.task_id) {
                if !o.running && poked.insert(o.task_id.clone()) {
                    // An empty container id asks the supervisor to look at everything.
                    let _ = live.events.try_send(ContainerEvent {
                        container_id: String::new(),
                        task_id: o.task_id.clone(),
                        action: "sweep".into(),
                        time: 0,
                    });
                }
                continue;
            }
            let known_at_boot = self
                .boot
                .as_ref()
                .is_some_and(|b| b.contains_key(&o.task_id));
            if known_at_boot {
                continue;
            }
            if self.boot.is_some() && !self.ended.contains_key(&o.task_id) {
                // Before the first full assignment nothing unknown is removed: it may be
                // a container created after the start-up listing.
                continue;
            }
            tracing::info!(task = %o.task_id, container = %o.container, "sweep: removing a container no task here owns");
            if let Err(e) = self.runtime.remove(&o.id).await {
                tracing::warn!(error = %e, "sweep: removing container failed");
            }
        }
    }
}

/// Follows the engine's events for this agent's containers and feeds them to the loop;
/// reconnects with back-off (resuming from the last event's time) and asks for a sweep after
/// every (re)connect.
async fn read_events(runtime: Runtime, tx: mpsc::Sender<Input>, mut stop: watch::Receiver<bool>) {
    // From a second before now: what happened between the start-up listing and the
    // subscription is replayed (a repeated event is harmless).
    let mut since: Option<i64> = Some((crate::now_ms() / 1000) as i64 - 1);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut stream = Box::pin(runtime.events(since));
        if tx.send(Input::Sweep).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = until_true(&mut stop) => return,
                item = stream.next() => match item {
                    Some(Ok(ev)) => {
                        backoff = Duration::from_millis(100);
                        since = Some(ev.time);
                        if tx.send(Input::Event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "engine event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("engine event stream ended; reconnecting");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = until_true(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Completes when the flag is set (or its sender is gone). Holds no borrow of the channel
/// across an await, so the future stays `Send`.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
