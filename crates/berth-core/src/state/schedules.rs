//! Schedules in the replicated state: their definitions, and the compare-and-set that makes
//! each scheduled time fire once (see [`crate::schedule`]).

use super::ClusterState;
use crate::command::{CommandResult, Outcome, RunTasks};
use crate::error::Error;
use crate::limits::{MAX_SCHEDULES, MAX_SCHEDULE_RUNS};
use crate::model::{StopCode, Task, TaskDefinitionStatus};
use crate::quote::quote;
use crate::schedule::*;

/// Why a replaced run's task was stopped; also how its run's failure reads.
const REPLACED: &str = "replaced by a newer run of its schedule (overlap: replace)";

impl ClusterState {
    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.get(name)
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    /// Every schedule as of now, in a copy that costs O(1) (a persistent map): the leader's
    /// firing pass evaluates expressions without holding the state's lock.
    pub fn schedules_snapshot(&self) -> imbl::OrdMap<String, Schedule> {
        self.schedules.clone()
    }

    fn schedule_mut(&mut self, name: &str) -> Result<&mut Schedule, Error> {
        self.schedules
            .get_mut(name)
            .ok_or_else(|| Error::not_found(format!("schedule {} does not exist", quote(name))))
    }

    /// The definition a schedule names must be there when it is made or changed (a fire
    /// finding it gone later records a failed run rather than refusing silently).
    fn check_schedule_definition(&self, spec: &ScheduleSpec) -> Result<(), Error> {
        let def = self.task_definition(&spec.family, spec.revision)?;
        if spec.revision.is_some() && def.status != TaskDefinitionStatus::Active {
            return Err(Error::precondition(format!(
                "task definition {} is INACTIVE; a schedule runs an ACTIVE revision",
                def.name()
            )));
        }
        Ok(())
    }

    pub(super) fn create_schedule(&mut self, spec: &ScheduleSpec) -> CommandResult {
        if let Some(existing) = self.schedules.get(&spec.name) {
            // A retry of the same create (a node retrying across a leader change).
            if spec.client_token.is_some() && existing.spec.client_token == spec.client_token {
                if existing.spec == *spec {
                    return Ok(Outcome::Schedule(Box::new(existing.clone())));
                }
                return Err(Error::invalid(format!(
                    "clientToken {} was used to create schedule {} with other parameters",
                    quote(spec.client_token.as_deref().unwrap_or_default()),
                    spec.name
                )));
            }
            return Err(Error::AlreadyExists(format!(
                "schedule {} already exists; update it, or delete it first",
                spec.name
            )));
        }
        if self.schedules.len() >= MAX_SCHEDULES {
            return Err(Error::precondition(format!(
                "the cluster has {} schedules; the limit is {MAX_SCHEDULES}",
                self.schedules.len()
            )));
        }
        self.check_schedule_definition(spec)?;
        let s = Schedule {
            spec: spec.clone(),
            state: ScheduleState::Enabled,
            created_at: self.clock,
            generation: 1,
            last_fired: None,
            runs: Vec::new(),
            version: self.revision,
        };
        self.schedules.insert(s.spec.name.clone(), s.clone());
        Ok(Outcome::Schedule(Box::new(s)))
    }

    pub(super) fn update_schedule(&mut self, spec: &ScheduleSpec) -> CommandResult {
        self.check_schedule_definition(spec)?;
        let revision = self.revision;
        let s = self.schedule_mut(&spec.name)?;
        let client_token = s.spec.client_token.clone();
        s.spec = spec.clone();
        s.spec.client_token = client_token;
        s.generation += 1;
        // A new expression or end time may have times left; the leader completes it again
        // if not.
        if s.state == ScheduleState::Completed {
            s.state = ScheduleState::Enabled;
        }
        s.version = revision;
        Ok(Outcome::Schedule(Box::new(s.clone())))
    }

    pub(super) fn set_schedule_paused(&mut self, name: &str, paused: bool) -> CommandResult {
        let revision = self.revision;
        let s = self.schedule_mut(name)?;
        if s.state == ScheduleState::Completed {
            return Err(Error::precondition(format!(
                "schedule {name} is COMPLETED (no time is left to fire); update its expression \
                 or end time first"
            )));
        }
        let want = if paused {
            ScheduleState::Paused
        } else {
            ScheduleState::Enabled
        };
        if s.state != want {
            s.state = want;
            s.generation += 1;
            s.version = revision;
        }
        Ok(Outcome::Schedule(Box::new(s.clone())))
    }

    /// Removes the schedule and its run records; tasks it started run on as ordinary tasks.
    pub(super) fn delete_schedule(&mut self, name: &str) -> CommandResult {
        let s = self
            .schedules
            .remove(name)
            .ok_or_else(|| Error::not_found(format!("schedule {} does not exist", quote(name))))?;
        Ok(Outcome::Schedule(Box::new(s)))
    }

    pub(super) fn fire_schedule(&mut self, f: &ScheduleFire) -> CommandResult {
        let (clock, revision) = (self.clock, self.revision);
        let s = self.schedule_mut(&f.name)?;
        if s.generation != f.generation || s.last_fired != f.expected_last {
            // Another proposal took these times first, or the owner changed the schedule:
            // this one was computed from a state that no longer holds.
            return Err(Error::precondition(format!(
                "schedule {} moved on since this fire was proposed (last fired {:?}, expected \
                 {:?}; generation {}, expected {})",
                f.name, s.last_fired, f.expected_last, s.generation, f.generation
            )));
        }
        let moves = f.run.is_some() || !f.skipped.is_empty();
        if f.expected_last
            .is_some_and(|last| f.new_last < last || (f.new_last == last && moves))
        {
            return Err(Error::invalid(format!(
                "a fire of schedule {} must move its last fired time forward",
                f.name
            )));
        }
        let paused = s.state == ScheduleState::Paused;
        let overlap = s.spec.overlap;
        let live: Vec<(String, Option<String>)> = s
            .live_runs()
            .map(|r| (r.id.clone(), r.live_task().map(str::to_string)))
            .collect();
        for skip in &f.skipped {
            record_skipped(s, skip, clock);
        }
        let mut launch = None;
        if let Some((time, run)) = &f.run {
            let skip = |reason: String| SkippedTimes {
                first: *time,
                last: *time,
                count: 1,
                reason,
            };
            // Re-checked here: the proposer may have read a state a run has since joined.
            if paused {
                record_skipped(s, &skip("the schedule is paused".into()), clock);
            } else if overlap == Overlap::Forbid && !live.is_empty() {
                let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
                let reason = format!("overlap: run {} is still running", ids.join(", "));
                record_skipped(s, &skip(reason), clock);
            } else {
                launch = Some((*time, run));
            }
        }
        s.last_fired = Some(f.new_last);
        if f.completed {
            s.state = ScheduleState::Completed;
        }
        s.version = revision;
        let launch = launch.map(|(time, run)| (time, run.clone()));
        if let Some((time, run)) = launch {
            if overlap == Overlap::Replace {
                for (run_id, task) in &live {
                    self.close_run(&f.name, run_id, REPLACED);
                    if let Some(task) = task {
                        // Already stopping or gone: nothing more to do.
                        let _ = self.stop_task(task, REPLACED, StopCode::UserInitiated);
                    }
                }
            }
            let run_id = Run::run_id(&f.name, time);
            let attempt = self.launch_attempt(&run, 1);
            if let Some(s) = self.schedules.get_mut(&f.name) {
                let mut r = Run {
                    id: run_id,
                    scheduled_time: time,
                    last_time: None,
                    count: 1,
                    status: RunStatus::Running,
                    reason: String::new(),
                    recorded_at: clock,
                    attempts: Vec::new(),
                    retry_at: None,
                    finished_at: None,
                };
                push_attempt(s.spec.retry_policy(), &mut r, attempt, clock);
                s.runs.push(r);
            }
        }
        let s = self.schedule_mut(&f.name)?;
        trim_runs(s);
        Ok(Outcome::Schedule(Box::new(s.clone())))
    }

    pub(super) fn retry_schedule_run(&mut self, r: &ScheduleRetry) -> CommandResult {
        if r.name.is_empty() {
            return self.retry_plain_run(r);
        }
        let clock = self.clock;
        let s = self.schedule_mut(&r.name)?;
        let Some(run) = s.runs.iter().find(|x| x.id == r.run_id) else {
            return Err(Error::not_found(format!("run {} does not exist", r.run_id)));
        };
        waits_for(run, r.attempt)?;
        let attempt = self.launch_attempt(&r.launch, r.attempt);
        let revision = self.revision;
        let s = self.schedule_mut(&r.name)?;
        if let Some(run) = s.runs.iter_mut().find(|x| x.id == r.run_id) {
            run.retry_at = None;
            push_attempt(s.spec.retry_policy(), run, attempt, clock);
        }
        s.version = revision;
        Ok(Outcome::Schedule(Box::new(s.clone())))
    }

    /// Starts one attempt's task: the attempt with its task id, or with why none started.
    pub(super) fn launch_attempt(&mut self, launch: &RunTasks, number: u32) -> Attempt {
        let mut attempt = Attempt {
            number,
            started_at: self.clock,
            task_id: None,
            failure: None,
        };
        let refused = launch.placements.is_empty() && !launch.failures.is_empty();
        let result = if refused {
            Ok(Outcome::Tasks {
                tasks: Vec::new(),
                failures: launch.failures.clone(),
            })
        } else {
            self.run_tasks(launch)
        };
        match result {
            Ok(Outcome::Tasks { tasks, failures }) => match tasks.first() {
                Some(t) => attempt.task_id = Some(t.id.clone()),
                None => {
                    attempt.failure = Some(match failures.first() {
                        Some(f) => format!("not placed: {} ({})", f.reason, f.detail),
                        None => "not placed".into(),
                    })
                }
            },
            Ok(_) => attempt.failure = Some("the launch started no task".into()),
            Err(e) => attempt.failure = Some(e.to_string()),
        }
        attempt
    }

    /// A scheduled task stopped: its run succeeded, waits for a retry, or failed.
    pub(super) fn settle_run_attempt(&mut self, task: &Task) {
        let Some(tr) = &task.run else {
            return;
        };
        if tr.schedule.is_empty() {
            return self.settle_plain_run(task);
        }
        let failure = self.task_failure(task);
        let clock = self.clock;
        let Some(s) = self.schedules.get_mut(&tr.schedule) else {
            return;
        };
        let policy = s.spec.retry_policy();
        let Some(run) = s.runs.iter_mut().find(|r| r.id == tr.run_id) else {
            return;
        };
        settle_attempt(policy, run, task, failure, clock);
        trim_runs(s);
    }

    /// Why a stopped task counts as a failed attempt; None when it succeeded (it reached
    /// RUNNING and every essential container exited 0).
    pub(super) fn task_failure(&self, task: &Task) -> Option<String> {
        let reason = || {
            format!(
                "{}: {}",
                task.stop_code.map(|c| c.as_str()).unwrap_or("Stopped"),
                task.stopped_reason.as_deref().unwrap_or("no reason given")
            )
        };
        if task.started_at.is_none() {
            return Some(reason());
        }
        let Ok(def) = self.task_definition(&task.family, Some(task.revision)) else {
            return Some(reason());
        };
        for c in def
            .container_definitions
            .iter()
            .filter(|c| c.is_essential())
        {
            let exit = task
                .containers
                .iter()
                .find(|s| s.name == c.name)
                .and_then(|s| s.exit_code);
            if exit != Some(0) {
                return Some(match exit {
                    Some(code) => format!("essential container {} exited {code}", c.name),
                    None => reason(),
                });
            }
        }
        None
    }

    /// Ends a live run for `why` (its task, if any, is stopped by the caller).
    fn close_run(&mut self, schedule: &str, run_id: &str, why: &str) {
        let clock = self.clock;
        let Some(s) = self.schedules.get_mut(schedule) else {
            return;
        };
        if let Some(run) = s.runs.iter_mut().find(|r| r.id == run_id) {
            run.status = RunStatus::Failed;
            run.reason = why.to_string();
            run.retry_at = None;
            run.finished_at = Some(clock);
            if let Some(a) = run.attempts.last_mut() {
                if a.failure.is_none() {
                    a.failure = Some(why.to_string());
                }
            }
        }
    }
}

/// Settles a run whose live attempt was `task`, now STOPPED: SUCCEEDED, a retry, or FAILED.
/// Whether the run changed.
pub(super) fn settle_attempt(
    policy: RetryPolicy,
    run: &mut Run,
    task: &Task,
    failure: Option<String>,
    clock: u64,
) -> bool {
    let Some(last) = run.attempts.last_mut() else {
        return false;
    };
    if run.status != RunStatus::Running
        || last.task_id.as_deref() != Some(task.id.as_str())
        || last.failure.is_some()
    {
        return false;
    }
    match failure {
        None => {
            run.status = RunStatus::Succeeded;
            run.finished_at = Some(clock);
        }
        Some(why) => {
            last.failure = Some(why.clone());
            // A user's stop or a replacement ends the run: retrying would undo it.
            let stopped_by_user = task.stop_code == Some(StopCode::UserInitiated);
            if stopped_by_user {
                run.status = RunStatus::Failed;
                run.reason = why;
                run.finished_at = Some(clock);
            } else {
                schedule_retry(policy, run, clock, why);
            }
        }
    }
    true
}

/// Refuses a retry unless the run still waits for exactly that attempt: a second leader's
/// proposal of the same attempt, or one for a run that ended, starts nothing.
pub(super) fn waits_for(run: &Run, attempt: u32) -> Result<(), Error> {
    let waiting = run.status == RunStatus::Running
        && run.retry_at.is_some()
        && run.attempts.len() + 1 == attempt as usize;
    if !waiting {
        return Err(Error::precondition(format!(
            "run {} is not waiting for attempt {attempt} (another proposal started it, or the \
             run ended)",
            run.id
        )));
    }
    Ok(())
}

/// Adds an attempt to a run; one that started no task fails now and is retried or ends
/// the run.
pub(super) fn push_attempt(policy: RetryPolicy, run: &mut Run, attempt: Attempt, clock: u64) {
    let failed = attempt.failure.clone();
    run.attempts.push(attempt);
    if let Some(why) = failed {
        schedule_retry(policy, run, clock, why);
    }
}

/// After a failed attempt: the next one's time, or the run FAILED when the retries or
/// their age are spent.
fn schedule_retry(policy: RetryPolicy, run: &mut Run, clock: u64, why: String) {
    let next = run.attempts.len() as u32 + 1;
    let at = clock + retry_backoff_ms(next);
    let deadline = run.scheduled_time.saturating_add(policy.max_age_ms);
    if next <= policy.retries + 1 && at <= deadline {
        run.retry_at = Some(at);
    } else {
        run.status = RunStatus::Failed;
        run.reason = if next > policy.retries + 1 {
            format!("{why} (no retries left)")
        } else {
            format!("{why} (the next attempt would start past the retry max age)")
        };
        run.retry_at = None;
        run.finished_at = Some(clock);
    }
}

/// Records skipped times, merged into the newest record when it is a SKIPPED range for
/// the same reason: the record count stays bounded however long a schedule is behind.
fn record_skipped(s: &mut Schedule, skip: &SkippedTimes, clock: u64) {
    if let Some(prev) = s.runs.last_mut() {
        if prev.status == RunStatus::Skipped && prev.reason == skip.reason {
            prev.last_time = Some(skip.last);
            prev.count += skip.count;
            return;
        }
    }
    s.runs.push(Run {
        id: Run::run_id(&s.spec.name, skip.first),
        scheduled_time: skip.first,
        last_time: (skip.count > 1 || skip.last != skip.first).then_some(skip.last),
        count: skip.count,
        status: RunStatus::Skipped,
        reason: skip.reason.clone(),
        recorded_at: clock,
        attempts: Vec::new(),
        retry_at: None,
        finished_at: Some(clock),
    });
}

/// Keeps every live run and the newest finished ones up to the bound.
fn trim_runs(s: &mut Schedule) {
    let finished = s
        .runs
        .iter()
        .filter(|r| r.status != RunStatus::Running)
        .count();
    let mut excess = finished.saturating_sub(MAX_SCHEDULE_RUNS);
    if excess == 0 {
        return;
    }
    s.runs.retain(|r| {
        if excess > 0 && r.status != RunStatus::Running {
            excess -= 1;
            return false;
        }
        true
    });
}
