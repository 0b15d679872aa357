//! One task's life on this agent, driven by its own supervisor (a tokio task):
//!
//! ```text
//! fresh:  PENDING → (image present or pulled) → ACTIVATING → create, start → RUNNING
//! adopt:  inspect the containers found by label → RUNNING (nothing restarted)
//! then:   wait for an essential container to exit, or a stop request
//! stop:   DEACTIVATING → STOPPING (SIGTERM; SIGKILL after the container's stopTimeout)
//!         → final record written → DEPROVISIONING (containers removed) → STOPPED
//! ```
//!
//! Every state is reported with the agent's clock when it was reached. A failure before
//! RUNNING ends the task with `TaskFailedToStart` and the engine's reason.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_core::{ContainerState, HealthStatus, NetworkBinding, StopCode, TaskReport, TaskState};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::runtime::{health_of, ContainerEvent, Observed, Runtime, RuntimeError};
use crate::spec::TaskPlan;
use crate::store::Store;
use crate::{now_ms, truncate_reason};

pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// How long a container gets to die after SIGKILL before the agent gives up waiting and
/// removes it by force.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// While stopping, containers are also inspected at this pace, in case an event is lost.
const STOP_POLL: Duration = Duration::from_millis(500);

/// Why a task must stop, as the control plane or the agent decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    pub code: StopCode,
    pub reason: String,
    /// Cap on each container's stopTimeout (fencing stops fast).
    pub grace: Option<Duration>,
}

/// How a supervisor begins.
pub(crate) enum Mode {
    /// Nothing exists yet: pull, create, start.
    Fresh,
    /// Containers found on the engine after an agent restart: take them over as they are.
    Adopt(Vec<Observed>),
}

pub(crate) struct TaskCtx {
    pub runtime: Runtime,
    pub plan: TaskPlan,
    pub reports: mpsc::Sender<TaskReport>,
    /// Set when the task is no longer assigned here: its reports would be refused.
    pub silenced: Arc<AtomicBool>,
    pub stop: watch::Receiver<Option<StopRequest>>,
    pub events: mpsc::Receiver<ContainerEvent>,
    pub store: Option<Arc<Store>>,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

/// What the supervisor knows about one container.
#[derive(Debug, Clone)]
struct Tracked {
    id: Option<String>,
    state: TaskState,
    running: bool,
    exit_code: Option<i32>,
    reason: Option<String>,
    /// An `oom` event was seen for it.
    oom_event: bool,
    /// The agent sent it SIGKILL (its 137 is ours, not the kernel's).
    killed: bool,
    /// Its health check's verdict; `None` without a check.
    health: Option<HealthStatus>,
    bindings: Vec<NetworkBinding>,
}

/// Why the running phase ended.
enum End {
    Stop(StopRequest),
    /// Failed before or while starting.
    FailedToStart(String),
}

struct Supervisor {
    ctx: TaskCtx,
    containers: Vec<Tracked>,
    last_sent: Option<TaskState>,
    /// The reconciler is gone (agent shutting down; this supervisor is about to be
    /// aborted): its channels no longer wake anything.
    stop_closed: bool,
    events_closed: bool,
    /// Taken over after an agent restart: its run time began before this supervisor.
    adopted: bool,
    /// When the engine confirmed the first container's start: the maximum run time counts
    /// from here, not from the end of the launch (reporting RUNNING can wait on a full
    /// report queue when many tasks start at once).
    running_since: Option<Instant>,
}

/// Runs a task to STOPPED and returns its final report.
pub(crate) async fn supervise(ctx: TaskCtx, mode: Mode) -> TaskReport {
    let n = ctx.plan.containers.len();
    let mut s = Supervisor {
        ctx,
        containers: vec![
            Tracked {
                id: None,
                state: TaskState::Pending,
                running: false,
                exit_code: None,
                reason: None,
                oom_event: false,
                killed: false,
                health: None,
                bindings: Vec::new(),
            };
            n
        ],
        last_sent: None,
        stop_closed: false,
        events_closed: false,
        adopted: matches!(mode, Mode::Adopt(_)),
        running_since: None,
    };
    for (t, p) in s.containers.iter_mut().zip(&s.ctx.plan.containers) {
        t.health = p.body.healthcheck.as_ref().map(|_| HealthStatus::Unknown);
    }
    let started = match mode {
        Mode::Fresh => {
            let t0 = Instant::now();
            let limit = s.ctx.plan.start_timeout;
            let r = match tokio::time::timeout(limit, s.launch()).await {
                Ok(r) => r,
                Err(_) => Err(End::FailedToStart(format!(
                    "StartTimeout: the task did not reach RUNNING within {}",
                    humantime::format_duration(limit)
                ))),
            };
            match &r {
                Ok(()) => s.ctx.metrics.started(t0.elapsed()),
                Err(End::FailedToStart(_)) => s.ctx.metrics.failed_to_start(),
                Err(_) => {}
            }
            r
        }
        Mode::Adopt(found) => s.adopt(found).await,
    };
    let end = match started {
        Ok(()) => {
            let deadline = s.run_deadline();
            s.watch(deadline).await
        }
        Err(end) => end,
    };
    s.finish(end).await
}

impl Supervisor {
    fn task_id(&self) -> &str {
        &self.ctx.plan.task_id
    }

    fn container_states(&self) -> Vec<ContainerState> {
        self.ctx
            .plan
            .containers
            .iter()
            .zip(&self.containers)
            .map(|(p, t)| ContainerState {
                name: p.name.clone(),
                last_status: t.state,
                exit_code: t.exit_code,
                reason: t.reason.clone(),
                health_status: t.health,
                network_bindings: t.bindings.clone(),
            })
            .collect()
    }

    fn report_of(&self, status: TaskState, stop: Option<(StopCode, String)>) -> TaskReport {
        let (stop_code, stopped_reason) = match stop {
            Some((c, r)) => (Some(c), Some(truncate_reason(r))),
            None => (None, None),
        };
        TaskReport {
            task_id: self.task_id().to_string(),
            last_status: status,
            at: now_ms(),
            containers: self.container_states(),
            stop_code,
            stopped_reason,
        }
    }

    /// Reports a state (never one behind the last reported; the same one again updates the
    /// containers).
    async fn report(&mut self, status: TaskState) {
        if self.last_sent.is_some_and(|l| status < l) {
            return;
        }
        let r = self.report_of(status, None);
        self.send(r).await;
    }

    async fn send(&mut self, r: TaskReport) {
        self.last_sent = Some(r.last_status);
        if self.ctx.silenced.load(Ordering::Relaxed) {
            return;
        }
        tracing::debug!(task = %r.task_id, status = %r.last_status, "task state");
        // Fails only when the agent is shutting down; the state is then re-derived from the
        // engine at the next start.
        let _ = self.ctx.reports.send(r).await;
    }

    /// A stop asked for while starting, if any.
    fn pending_stop(&mut self) -> Option<StopRequest> {
        self.ctx.stop.borrow_and_update().clone()
    }

    async fn launch(&mut self) -> Result<(), End> {
        self.report(TaskState::Pending).await;
        let images: BTreeSet<String> = self
            .ctx
            .plan
            .containers
            .iter()
            .map(|c| c.image.clone())
            .collect();
        for image in images {
            let runtime = self.ctx.runtime.clone();
            let pull = runtime.ensure_image(&image);
            let mut stop = self.ctx.stop.clone();
            // A stop asked for during a long pull ends the wait.
            let result = tokio::select! {
                r = pull => r,
                _ = until_stop(&mut stop) => {
                    return Err(End::Stop(self.pending_stop().unwrap_or_else(user_stop)));
                }
            };
            if let Err(reason) = result {
                return Err(End::FailedToStart(reason));
            }
        }
        if let Some(stop) = self.pending_stop() {
            return Err(End::Stop(stop));
        }
        self.report(TaskState::Activating).await;
        if let Some((network, namespace)) = &self.ctx.plan.network {
            if let Err(e) = self.ctx.runtime.ensure_network(network, namespace).await {
                return Err(End::FailedToStart(format!(
                    "CannotCreateContainerError: network {network}: {e}"
                )));
            }
        }
        for i in self.ctx.plan.start_order() {
            let plan = &self.ctx.plan.containers[i];
            match self.ctx.runtime.create(plan).await {
                Ok(id) => {
                    self.containers[i].id = Some(id);
                    self.containers[i].state = TaskState::Activating;
                }
                Err(e) => {
                    return Err(End::FailedToStart(format!(
                        "CannotCreateContainerError: {}: {e}",
                        plan.name
                    )))
                }
            }
        }
        for i in self.ctx.plan.start_order() {
            if let Some(stop) = self.pending_stop() {
                return Err(End::Stop(stop));
            }
            let Some(id) = self.containers[i].id.clone() else {
                continue;
            };
            if let Err(e) = self.ctx.runtime.start(&id).await {
                return Err(End::FailedToStart(format!(
                    "CannotStartContainerError: {}: {e}",
                    self.ctx.plan.containers[i].name
                )));
            }
            self.running_since.get_or_insert_with(Instant::now);
            self.containers[i].running = true;
            self.containers[i].state = TaskState::Running;
        }
        // The engine picks host ports that were left open; one look tells which.
        let owner = self.ctx.plan.owner;
        if self.ctx.plan.containers[owner].body.exposed_ports.is_some() {
            self.refresh(owner).await;
        }
        self.report(TaskState::Running).await;
        Ok(())
    }

    /// Takes over containers found after an agent restart, without restarting any.
    async fn adopt(&mut self, found: Vec<Observed>) -> Result<(), End> {
        let mut incomplete = None;
        let names: Vec<String> = self
            .ctx
            .plan
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for (i, name) in names.iter().enumerate() {
            let Some(o) = found.iter().find(|o| &o.container == name) else {
                incomplete = Some(format!("container {name} was never created"));
                continue;
            };
            self.containers[i].id = Some(o.id.clone());
            match self.ctx.runtime.inspect(&o.id).await {
                Ok(st) if st.created => {
                    self.containers[i].state = TaskState::Activating;
                    incomplete = Some(format!("container {name} was never started"));
                }
                Ok(st) if st.running => {
                    self.containers[i].running = true;
                    self.containers[i].state = TaskState::Running;
                    if self.containers[i].health.is_some() {
                        self.containers[i].health = st.health.or(Some(HealthStatus::Unknown));
                    }
                    self.containers[i].bindings = st.bindings;
                }
                Ok(st) => {
                    let oom = st.oom_killed;
                    self.mark_exited(i, st.exit_code, oom);
                }
                Err(RuntimeError::NotFound(_)) => {
                    self.containers[i].id = None;
                    incomplete = Some(format!("container {name} disappeared"));
                }
                Err(e) => {
                    // The engine is unwell; treat the container as running and let the
                    // events and sweeps tell otherwise.
                    tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "inspect while adopting");
                    self.containers[i].running = true;
                    self.containers[i].state = TaskState::Running;
                }
            }
        }
        tracing::info!(task = %self.ctx.plan.task_id, "adopted containers after a restart");
        if let Some(why) = incomplete {
            return Err(End::FailedToStart(format!(
                "the agent restarted while starting the task ({why})"
            )));
        }
        if let Some(stop) = self.essential_exit() {
            // It ran, so say so before it stops.
            self.report(TaskState::Running).await;
            return Err(End::Stop(stop));
        }
        if let Some(stop) = self.pending_stop() {
            return Err(End::Stop(stop));
        }
        self.report(TaskState::Running).await;
        Ok(())
    }

    fn mark_exited(&mut self, i: usize, exit_code: Option<i64>, oom_killed: bool) {
        let t = &mut self.containers[i];
        t.running = false;
        t.state = TaskState::Stopped;
        t.exit_code = exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MAX));
        // OOM: the kernel's `oom` event or the engine's OOMKilled flag, and a failed exit
        // (137 when the main process itself was killed). A process that survived an OOM
        // kill of one of its children and exited 0 did not die of it. The agent's own
        // SIGKILL also gives 137 but sets neither signal.
        let oom = (t.oom_event || oom_killed) && t.exit_code.is_some_and(|c| c != 0);
        t.reason = Some(if oom {
            OOM_REASON.to_string()
        } else if t.killed && t.exit_code == Some(137) {
            "Killed after the stop timeout (SIGKILL)".to_string()
        } else {
            match t.exit_code {
                Some(c) => format!("Exited ({c})"),
                None => "Exited".to_string(),
            }
        });
    }

    /// The stop an exited essential container causes, if one exited.
    fn essential_exit(&self) -> Option<StopRequest> {
        let (plan, t) = self
            .ctx
            .plan
            .containers
            .iter()
            .zip(&self.containers)
            .find(|(p, t)| p.essential && t.state == TaskState::Stopped)?;
        let reason = if t.reason.as_deref() == Some(OOM_REASON) {
            format!("{OOM_REASON} ({})", plan.name)
        } else {
            format!(
                "{ESSENTIAL_EXITED}: {} exited with code {}",
                plan.name,
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )
        };
        Some(StopRequest {
            code: StopCode::EssentialContainerExited,
            reason,
            grace: None,
        })
    }

    fn index_of(&self, container_id: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|t| t.id.as_deref() == Some(container_id))
    }

    /// Looks at one container again: records its exit if it is no longer running, and its
    /// health and published ports if it is. True if anything reported changed.
    async fn refresh(&mut self, i: usize) -> bool {
        let Some(id) = self.containers[i].id.clone() else {
            return false;
        };
        if !self.containers[i].running {
            return false;
        }
        match self.ctx.runtime.inspect(&id).await {
            Ok(st) if st.running || st.created => {
                let t = &mut self.containers[i];
                let health = match (t.health, st.health) {
                    (Some(_), Some(h)) => Some(h),
                    (was, _) => was,
                };
                let changed = health != t.health || (st.running && st.bindings != t.bindings);
                t.health = health;
                if st.running {
                    t.bindings = st.bindings;
                }
                changed
            }
            Ok(st) => {
                self.mark_exited(i, st.exit_code, st.oom_killed);
                true
            }
            Err(RuntimeError::NotFound(_)) => {
                // Removed behind our back: it no longer runs, its exit code is lost.
                self.mark_exited(i, None, false);
                self.containers[i].reason = Some("Container removed outside Berth".into());
                true
            }
            Err(e) => {
                tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "inspect failed; will look again");
                false
            }
        }
    }

    /// Handles one engine event; true if a container's state changed.
    async fn on_event(&mut self, ev: ContainerEvent) -> bool {
        if ev.container_id.is_empty() {
            // A sweep: look at every container.
            let mut changed = false;
            for i in 0..self.containers.len() {
                changed |= self.refresh(i).await;
            }
            return changed;
        }
        let Some(i) = self.index_of(&ev.container_id) else {
            return false;
        };
        match ev.action.as_str() {
            "oom" => {
                self.containers[i].oom_event = true;
                false
            }
            "die" | "destroy" => {
                let was = self.containers[i].running;
                self.refresh(i).await;
                was != self.containers[i].running
            }
            action => match action.strip_prefix("health_status: ").and_then(health_of) {
                Some(h) if self.containers[i].health.is_some_and(|was| was != h) => {
                    if self.containers[i].running {
                        tracing::info!(task = %self.ctx.plan.task_id, container = %self.ctx.plan.containers[i].name, health = %h, "container health changed");
                        self.containers[i].health = Some(h);
                        return true;
                    }
                    false
                }
                _ => false,
            },
        }
    }

    /// When the task's maximum run time ends, on the monotonic clock: counted from now for a
    /// task just started, from its recorded start for one adopted after a restart.
    fn run_deadline(&self) -> Option<Instant> {
        let limit = self.ctx.plan.max_runtime?;
        if let (false, Some(since)) = (self.adopted, self.running_since) {
            return Some(since + limit);
        }
        let ran = match self.ctx.plan.started_at {
            Some(at) if self.adopted => Duration::from_millis(now_ms().saturating_sub(at)),
            _ => Duration::ZERO,
        };
        Some(Instant::now() + limit.saturating_sub(ran))
    }

    /// The running phase: until an essential container exits, a stop is asked for, or the
    /// maximum run time ends.
    async fn watch(&mut self, deadline: Option<Instant>) -> End {
        let limit = self.ctx.plan.max_runtime.unwrap_or_default();
        let timed_out = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timed_out);
        loop {
            if let Some(stop) = self.essential_exit() {
                return End::Stop(stop);
            }
            tokio::select! {
                _ = &mut timed_out => {
                    return End::Stop(StopRequest {
                        code: StopCode::EssentialContainerExited,
                        reason: format!(
                            "Timeout: the task ran past its maximum run time of {}",
                            humantime::format_duration(limit)
                        ),
                        grace: None,
                    });
                }
                changed = self.ctx.stop.changed(), if !self.stop_closed => {
                    if changed.is_err() {
                        // The reconciler is gone (agent shutting down): keep watching
                        // events until this task is aborted.
                        self.stop_closed = true;
                    } else if let Some(stop) = self.pending_stop() {
                        return End::Stop(stop);
                    }
                }
                ev = self.ctx.events.recv(), if !self.events_closed => {
                    let Some(ev) = ev else {
                        self.events_closed = true;
                        continue;
                    };
                    if self.on_event(ev).await && self.essential_exit().is_none() {
                        // A non-essential container exited, or a container's health
                        // changed: the task runs on; report it.
                        self.report(TaskState::Running).await;
                    }
                }
                // Nothing can wake this supervisor any more: wait for the abort.
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// SIGTERM to every running container, SIGKILL to those still running after their
    /// stopTimeout (capped by the request's grace).
    async fn terminate(&mut self, grace: Option<Duration>) {
        let now = Instant::now();
        let mut deadlines: Vec<Option<Instant>> = vec![None; self.containers.len()];
        #[allow(clippy::needless_range_loop)] // indexes three parallel vectors
        for i in 0..self.containers.len() {
            if !self.containers[i].running {
                continue;
            }
            let Some(id) = self.containers[i].id.clone() else {
                continue;
            };
            let timeout = match grace {
                Some(g) => g.min(self.ctx.plan.containers[i].stop_timeout),
                None => self.ctx.plan.containers[i].stop_timeout,
            };
            deadlines[i] = Some(now + timeout);
            self.containers[i].state = TaskState::Stopping;
            if let Err(e) = self.ctx.runtime.signal(&id, "SIGTERM").await {
                tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "SIGTERM failed");
            }
        }
        let mut give_up: Option<Instant> = None;
        loop {
            let running: Vec<usize> = (0..self.containers.len())
                .filter(|i| self.containers[*i].running)
                .collect();
            if running.is_empty() {
                return;
            }
            let now = Instant::now();
            if give_up.is_some_and(|g| now >= g) {
                tracing::error!(task = %self.ctx.plan.task_id, "containers still running after SIGKILL; removing them by force");
                return;
            }
            // SIGKILL whatever is past its deadline.
            for &i in &running {
                if self.containers[i].killed || deadlines[i].is_none_or(|d| now < d) {
                    continue;
                }
                if let Some(id) = self.containers[i].id.clone() {
                    self.containers[i].killed = true;
                    if let Err(e) = self.ctx.runtime.signal(&id, "SIGKILL").await {
                        tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "SIGKILL failed");
                    }
                    give_up = Some(give_up.unwrap_or(now + KILL_WAIT).max(now + KILL_WAIT));
                }
            }
            let next_deadline = running
                .iter()
                .filter(|i| !self.containers[**i].killed)
                .filter_map(|i| deadlines[*i])
                .min();
            let wake = next_deadline
                .unwrap_or(now + STOP_POLL)
                .min(now + STOP_POLL);
            tokio::select! {
                ev = self.ctx.events.recv(), if !self.events_closed => {
                    match ev {
                        Some(ev) => {
                            self.on_event(ev).await;
                        }
                        None => self.events_closed = true,
                    }
                }
                changed = self.ctx.stop.changed(), if !self.stop_closed => {
                    if changed.is_err() {
                        self.stop_closed = true;
                    } else if let Some(g) = self.ctx.stop.borrow_and_update().as_ref().and_then(|s| s.grace) {
                        // A tighter stop (fencing) arrived mid-stop: shorten the deadlines.
                        let cap = Instant::now() + g;
                        for d in deadlines.iter_mut().flatten() {
                            *d = (*d).min(cap);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    for i in running {
                        self.refresh(i).await;
                    }
                }
            }
        }
    }

    /// Stops what runs, records the end, removes the containers, reports STOPPED.
    async fn finish(mut self, end: End) -> TaskReport {
        let (code, reason, grace) = match end {
            End::Stop(s) => (s.code, s.reason, s.grace),
            End::FailedToStart(r) => (StopCode::TaskFailedToStart, r, None),
        };
        tracing::info!(task = %self.ctx.plan.task_id, code = %code, reason = %reason, "stopping task");
        // A task that ran goes through every state, even when its containers have all
        // exited already; one that never ran skips to DEPROVISIONING.
        let ran = self.last_sent.is_some_and(|s| s >= TaskState::Running);
        if ran || self.containers.iter().any(|t| t.running) {
            // The reports of the stop wait their turn in the report queue beside the
            // signals, not before them: when many tasks stop at once the queue is full, and
            // a time limit's SIGTERM must not wait on it.
            let reports: Vec<TaskReport> = [TaskState::Deactivating, TaskState::Stopping]
                .into_iter()
                .filter(|s| self.last_sent.is_none_or(|l| *s >= l))
                .map(|s| self.report_of(s, None))
                .collect();
            if let Some(last) = reports.last() {
                self.last_sent = Some(last.last_status);
            }
            let tx = (!self.ctx.silenced.load(Ordering::Relaxed)).then(|| self.ctx.reports.clone());
            let send = async move {
                let Some(tx) = tx else { return };
                for r in reports {
                    // Fails only when the agent is shutting down.
                    let _ = tx.send(r).await;
                }
            };
            tokio::join!(send, self.terminate(grace));
        }
        // Exit codes of everything that ran.
        for i in 0..self.containers.len() {
            self.refresh(i).await;
            let t = &mut self.containers[i];
            if t.state != TaskState::Stopped {
                // Created but never started, or never created.
                t.running = false;
                t.state = TaskState::Stopped;
            }
        }
        let final_report = self.report_of(TaskState::Stopped, Some((code, reason)));
        // Written before the containers go: after a crash from here on, the agent still
        // knows how the task ended and will not run it again.
        if let Some(store) = &self.ctx.store {
            if let Err(e) = store.save(&final_report).await {
                tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "could not record the task's end");
            }
        }
        let ids: Vec<String> = self
            .containers
            .iter()
            .filter_map(|t| t.id.clone())
            .collect();
        if !ids.is_empty() {
            self.report(TaskState::Deprovisioning).await;
            for id in ids {
                if let Err(e) = self.ctx.runtime.remove(&id).await {
                    // The reconciler's sweep removes leftovers of tasks it no longer runs.
                    tracing::warn!(task = %self.ctx.plan.task_id, error = %e, "removing container failed");
                }
            }
        }
        self.send(final_report.clone()).await;
        final_report
    }
}

/// The stop a user asked for, when the control plane said no more.
pub(crate) fn user_stop() -> StopRequest {
    StopRequest {
        code: StopCode::UserInitiated,
        reason: "Task stopped by user".into(),
        grace: None,
    }
}

/// Completes when a stop is asked for; never if the asking side is gone (the supervisor is
/// then about to be aborted).
async fn until_stop(rx: &mut watch::Receiver<Option<StopRequest>>) {
    if rx.wait_for(|s| s.is_some()).await.is_err() {
        std::future::pending::<()>().await;
    }
}
