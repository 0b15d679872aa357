//! Schedules: a task definition launched at each time an expression names, each time once.
//!
//! A run's identity is its schedule plus its scheduled time. The leader proposes each time
//! with the schedule's last fired time as it read it ([`ScheduleFire::expected_last`]); apply
//! takes the proposal only if that still matches, and writes the run record, its first
//! attempt and the new last fired time in the same entry. So however many leaders come and
//! go, a scheduled time is taken once: by the first proposal that commits.
//!
//! The expressions themselves (cron, rate, at, time zones) are `berth-cron`'s; the state
//! machine keeps them as text and never evaluates them, so apply stays free of clocks and
//! calendars. The leader evaluates them from the committed state.

use serde::{Deserialize, Serialize};

use crate::command::{PlacementConstraint, PlacementStrategy, RunTaskRequest, RunTasks};
use crate::model::ContainerOverride;
use crate::model::{Millis, Revision};

/// What to do with a scheduled time while an earlier run of the same schedule is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Overlap {
    /// Skip the time (recorded SKIPPED): at most one run at a time.
    #[default]
    Forbid,
    /// Start it beside the live ones.
    Allow,
    /// Stop the live runs' tasks, then start.
    Replace,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Forbid => "forbid",
            Overlap::Allow => "allow",
            Overlap::Replace => "replace",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "forbid" => Some(Overlap::Forbid),
            "allow" => Some(Overlap::Allow),
            "replace" => Some(Overlap::Replace),
            _ => None,
        }
    }
}

/// Which of the times missed while no leader could fire (a cluster stopped, an election)
/// are run once a leader is back. Times older than the catch-up window are never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CatchUp {
    /// The newest missed time inside the window runs; older ones are SKIPPED.
    #[default]
    Latest,
    /// Every missed time inside the window runs (each subject to the overlap rule).
    All,
    /// Only a time fired on time runs; missed ones are SKIPPED.
    None,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
            CatchUp::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "latest" => Some(CatchUp::Latest),
            "all" => Some(CatchUp::All),
            "none" => Some(CatchUp::None),
            _ => None,
        }
    }
}

/// A schedule as its owner gave it, checked, its task definition resolved to a family (a
/// revision when one was named; the family's latest ACTIVE one at each fire otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Qualified by namespace, as services are.
    pub name: String,
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// As the user wrote it; `berth-cron` parses it.
    pub expression: String,
    /// IANA zone; empty is UTC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<Millis>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    pub catch_up_window_ms: u64,
    /// Attempts after the first.
    #[serde(default)]
    pub retries: u32,
    /// No attempt starts later than this after the scheduled time.
    pub retry_max_age_ms: u64,
    /// A run starts up to this long after its scheduled time (the same delay for the same
    /// time on every leader), so schedules on the same minute do not all start at once.
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Overrides of the definition's time limits for every run.
    #[serde(default, skip_serializing_if = "crate::model::Timeouts::is_empty")]
    pub timeouts: crate::model::Timeouts,
}

impl ScheduleSpec {
    /// The retry policy every run of the schedule follows.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            max_age_ms: self.retry_max_age_ms,
        }
    }

    /// A schedule of `family` at `expression`, every other field at its documented default.
    pub fn new(name: &str, family: &str, expression: &str) -> Self {
        ScheduleSpec {
            name: name.into(),
            family: family.into(),
            revision: None,
            expression: expression.into(),
            timezone: String::new(),
            start_at: None,
            end_at: None,
            overlap: Overlap::default(),
            catch_up: CatchUp::default(),
            catch_up_window_ms: crate::limits::DEFAULT_CATCH_UP_WINDOW_MS,
            retries: 0,
            retry_max_age_ms: crate::limits::DEFAULT_RETRY_MAX_AGE_MS,
            jitter_ms: 0,
            overrides: Vec::new(),
            placement_strategy: Vec::new(),
            placement_constraints: Vec::new(),
            client_token: None,
            timeouts: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleState {
    Enabled,
    Paused,
    /// No time is left to fire (an `at()` that fired, an end time passed).
    Completed,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Enabled => "ENABLED",
            ScheduleState::Paused => "PAUSED",
            ScheduleState::Completed => "COMPLETED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// An attempt's task is alive, or the next attempt waits for its back-off.
    Running,
    Succeeded,
    /// Every attempt failed, or the attempts ran out of age.
    Failed,
    /// The time was not run; `reason` says why.
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Succeeded => "SUCCEEDED",
            RunStatus::Failed => "FAILED",
            RunStatus::Skipped => "SKIPPED",
        }
    }
}

/// One attempt of a run: the task it started, or why none started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Counted from 1.
    pub number: u32,
    pub started_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Why the attempt failed, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A scheduled time's outcome. SKIPPED records may stand for a range of consecutive times
/// skipped for the same reason (a cluster stopped for a day under `rate(1 minute)` leaves
/// one record, not 1,440).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// `<schedule>@<scheduled time in ms>`: the same on every node and every leader.
    pub id: String,
    pub scheduled_time: Millis,
    /// For a SKIPPED range, its last time and how many times it covers (1 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Millis>,
    #[serde(default = "one")]
    pub count: u64,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the run was recorded (the leader's clock in the entry).
    pub recorded_at: Millis,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// While RUNNING with no live task: when the next attempt may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
}

fn one() -> u64 {
    1
}

impl Run {
    pub fn run_id(schedule: &str, scheduled_time: Millis) -> String {
        format!("{schedule}@{scheduled_time}")
    }
    /// The live attempt's task, if one is alive.
    pub fn live_task(&self) -> Option<&str> {
        let a = self.attempts.last()?;
        if a.failure.is_some() || self.status != RunStatus::Running {
            return None;
        }
        a.task_id.as_deref()
    }
}

/// A schedule in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub state: ScheduleState,
    pub created_at: Millis,
    /// Bumped by every change of the owner's (update, pause, resume): a fire proposed
    /// against an older one is refused.
    pub generation: u64,
    /// The newest scheduled time dealt with (run or skipped); the next is the first fire
    /// time after it. None until the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Millis>,
    /// Newest last: every live run, and the most recent finished ones up to the bound.
    #[serde(default)]
    pub runs: Vec<Run>,
    pub version: Revision,
}

impl Schedule {
    /// Where the search for the first fire time starts, and what a rate counts from.
    pub fn cursor(&self) -> (Millis, Millis) {
        let anchor = self.spec.start_at.unwrap_or(self.created_at);
        let cursor = match (self.last_fired, self.spec.start_at) {
            (Some(t), _) => t,
            // The start time itself may fire.
            (None, Some(start)) => start.saturating_sub(1),
            (None, None) => self.created_at,
        };
        (cursor, anchor)
    }
    /// Runs with a live task or a pending retry.
    pub fn live_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.status == RunStatus::Running)
    }
    /// The delay of the run at `scheduled_time`: a hash of the two, so every leader picks
    /// the same one.
    pub fn jitter_for(&self, scheduled_time: Millis) -> Millis {
        if self.spec.jitter_ms == 0 {
            return 0;
        }
        // FNV-1a: stable across releases and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.spec.name.bytes().chain(scheduled_time.to_be_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % (self.spec.jitter_ms + 1)
    }
}

/// A span of scheduled times the leader decided not to run, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedTimes {
    pub first: Millis,
    pub last: Millis,
    pub count: u64,
    pub reason: String,
}

/// The leader's proposal for a schedule's next times: those it skips, and at most one it
/// runs (with its task placed, in `launch`). Applies only if the schedule is still at
/// `generation` and `expected_last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleFire {
    pub name: String,
    pub generation: u64,
    pub expected_last: Option<Millis>,
    /// The schedule's last fired time once this applies.
    pub new_last: Millis,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedTimes>,
    /// The time run, and its first attempt's task (placements and failures as RunTask's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<(Millis, RunTasks)>,
    /// No time is left after `new_last`: the schedule becomes COMPLETED.
    #[serde(default)]
    pub completed: bool,
}

/// The leader's retry of a run whose last attempt failed: applies only if the run is
/// still waiting for attempt `attempt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRetry {
    pub name: String,
    pub run_id: String,
    pub attempt: u32,
    pub launch: RunTasks,
}

/// How a run's failed attempts are retried: attempts after the first, with back-off
/// ([`retry_backoff_ms`]), none starting later than `max_age_ms` after the run began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub retries: u32,
    pub max_age_ms: u64,
}

/// A plain RunTask's retry policy, and what each of its tasks' retries launches: the call's
/// parameters for one task, the revision pinned, no client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryLaunch {
    pub policy: RetryPolicy,
    pub launch: RunTaskRequest,
}

/// One task of a plain RunTask with a retry policy, followed across its attempts. The run's
/// id is its first attempt's task id. Kept while it runs, and for the stopped-task retention
/// once it has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetriedRun {
    /// `scheduled_time` is when the call was applied: the retry age counts from it.
    pub run: Run,
    #[serde(flatten)]
    pub retry: RetryLaunch,
}

/// What a task started by a schedule, or by a RunTask with a retry policy, carries, so its
/// containers are told which run and attempt they are (`BERTH_RUN_ID`, `BERTH_ATTEMPT`,
/// `BERTH_SCHEDULED_TIME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    /// Empty for a plain RunTask's run (its record is in the state's retried runs, by
    /// `run_id`).
    pub schedule: String,
    pub run_id: String,
    pub attempt: u32,
    pub scheduled_time: Millis,
}

/// The back-off before attempt `next` (2, 3, …): doubling from the base, capped.
pub fn retry_backoff_ms(next: u32) -> Millis {
    use crate::limits::{RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_MAX_MS};
    let doublings = next.saturating_sub(2).min(20);
    RETRY_BACKOFF_BASE_MS
        .saturating_mul(1 << doublings)
        .min(RETRY_BACKOFF_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(retry_backoff_ms(2), crate::limits::RETRY_BACKOFF_BASE_MS);
        assert_eq!(
            retry_backoff_ms(3),
            2 * crate::limits::RETRY_BACKOFF_BASE_MS
        );
        assert_eq!(retry_backoff_ms(40), crate::limits::RETRY_BACKOFF_MAX_MS);
    }

    #[test]
    fn jitter_is_the_same_for_the_same_time_and_within_bounds() {
        let mut s = Schedule {
            spec: ScheduleSpec::new("default/n", "default/f", "rate(1 minute)"),
            state: ScheduleState::Enabled,
            created_at: 0,
            generation: 1,
            last_fired: None,
            runs: vec![],
            version: 1,
        };
        assert_eq!(s.jitter_for(60_000), 0);
        s.spec.jitter_ms = 10_000;
        let j: Vec<u64> = (1..50).map(|k| s.jitter_for(k * 60_000)).collect();
        assert!(j.iter().all(|&d| d <= 10_000));
        assert_eq!(j[0], s.jitter_for(60_000));
        assert!(
            j.iter().any(|&d| d != j[0]),
            "every time got the same delay"
        );
    }
}
