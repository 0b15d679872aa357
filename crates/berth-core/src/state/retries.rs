//! Plain RunTasks under a retry policy: each task such a call starts is a run, followed
//! across its attempts the way a schedule's runs are (see [`crate::schedule::RetriedRun`]).
//! The leader's firing pass proposes each retry once its back-off has passed; apply takes it
//! only while the run still waits for that attempt, so a retry starts once whatever the
//! leaders do.

use super::schedules::{push_attempt, settle_attempt, waits_for};
use super::ClusterState;
use crate::command::{CommandResult, Outcome, RunTasks};
use crate::error::Error;
use crate::limits::STOPPED_TASK_RETENTION_MS;
use crate::model::Task;
use crate::schedule::*;

impl ClusterState {
    /// A plain RunTask's run, by its id (its first attempt's task id).
    pub fn retried_run(&self, id: &str) -> Option<&RetriedRun> {
        self.retried_runs.get(id)
    }

    /// Every plain RunTask's run as of now, in a copy that costs O(1): the leader's firing
    /// pass reads it without holding the state's lock.
    pub fn retried_runs_snapshot(&self) -> imbl::OrdMap<String, RetriedRun> {
        self.retried_runs.clone()
    }

    /// A task started by a RunTask with a retry policy becomes its run's first attempt.
    /// The retries' own launches carry their run already and start none.
    pub(super) fn begin_retried_run(&mut self, launch: &RunTasks, mut task: Task) -> Task {
        let Some(retry) = launch.retry.as_deref() else {
            return task;
        };
        if launch.run.is_some() {
            return task;
        }
        let clock = self.clock;
        task.run = Some(TaskRun {
            schedule: String::new(),
            run_id: task.id.clone(),
            attempt: 1,
            scheduled_time: clock,
        });
        let run = Run {
            id: task.id.clone(),
            scheduled_time: clock,
            last_time: None,
            count: 1,
            status: RunStatus::Running,
            reason: String::new(),
            recorded_at: clock,
            attempts: vec![Attempt {
                number: 1,
                started_at: clock,
                task_id: Some(task.id.clone()),
                failure: None,
            }],
            retry_at: None,
            finished_at: None,
        };
        self.retried_runs.insert(
            task.id.clone(),
            RetriedRun {
                run,
                retry: retry.clone(),
            },
        );
        task
    }

    /// A plain run's attempt stopped: the run succeeded, waits for a retry, or failed.
    pub(super) fn settle_plain_run(&mut self, task: &Task) {
        let Some(tr) = &task.run else {
            return;
        };
        let failure = self.task_failure(task);
        let clock = self.clock;
        let Some(r) = self.retried_runs.get_mut(&tr.run_id) else {
            return;
        };
        let policy = r.retry.policy;
        if settle_attempt(policy, &mut r.run, task, failure, clock) {
            self.collect_when_ended(&tr.run_id);
        }
    }

    pub(super) fn retry_plain_run(&mut self, r: &ScheduleRetry) -> CommandResult {
        let Some(rr) = self.retried_runs.get(&r.run_id) else {
            return Err(Error::not_found(format!("run {} does not exist", r.run_id)));
        };
        waits_for(&rr.run, r.attempt)?;
        let attempt = self.launch_attempt(&r.launch, r.attempt);
        let clock = self.clock;
        let Some(rr) = self.retried_runs.get_mut(&r.run_id) else {
            return Err(Error::not_found(format!("run {} does not exist", r.run_id)));
        };
        rr.run.retry_at = None;
        push_attempt(rr.retry.policy, &mut rr.run, attempt, clock);
        let out = rr.clone();
        self.collect_when_ended(&r.run_id);
        Ok(Outcome::RetriedRun(Box::new(out)))
    }

    /// An ended run is kept as long as a STOPPED task, then collected.
    fn collect_when_ended(&mut self, id: &str) {
        let ended = self
            .retried_runs
            .get(id)
            .is_some_and(|r| r.run.status != RunStatus::Running);
        if ended {
            self.retried_expiry
                .insert((self.clock + STOPPED_TASK_RETENTION_MS, id.to_string()));
        }
    }
}
