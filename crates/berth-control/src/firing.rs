//! The leader's schedule firing: every pass reads each schedule's committed last fired
//! time, works out which scheduled times are due since, and proposes them — those it runs
//! and those it skips, with why — as one compare-and-set on that last fired time. Failed
//! runs' retries are proposed the same way, against the run's attempt count.
//!
//! Nothing here is remembered across passes but parsed expressions: the next time is
//! always computed from the replicated state, never from a leader's memory, so a new leader
//! continues exactly where the last committed fire left off, and a stale proposal (a
//! deposed leader's, or one racing its own retry) is refused at apply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::command::RunTaskRequest;
use berth_core::limits::{MAX_TIMES_PER_FIRE, ON_TIME_MS};
use berth_core::schedule::{
    CatchUp, Overlap, RetriedRun, RunStatus, Schedule, ScheduleFire, ScheduleState, SkippedTimes,
    TaskRun,
};

use crate::node::{Node, WriteRequest};

/// The longest a pass waits when nothing is due sooner.
const TICK: Duration = Duration::from_millis(500);
/// The shortest: a time due now is proposed after at most this.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Per schedule, what the last pass learned: the expression parsed for one generation of its
/// definition, and the time its next scheduled time falls due as computed from one last
/// fired time — so a pass over thousands of schedules evaluates only those whose state moved
/// or whose time has come.
#[derive(Default)]
struct Known {
    generation: u64,
    expr: Option<Result<berth_cron::Schedule, String>>,
    /// (last fired, next due) when nothing was due.
    due: Option<(Option<u64>, u64)>,
}

type Parsed = HashMap<String, Known>;

/// What one pass proposes for one schedule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Proposal {
    Fire {
        fire: Box<ScheduleFire>,
        /// The time run, and the launch of its first attempt.
        run: Option<(u64, RunTaskRequest)>,
    },
    Retry {
        name: String,
        run_id: String,
        scheduled_time: u64,
        attempt: u32,
        request: RunTaskRequest,
    },
}

/// The launch of one attempt of a schedule's run.
fn launch(s: &Schedule) -> RunTaskRequest {
    let spec = &s.spec;
    RunTaskRequest {
        task_definition: match spec.revision {
            Some(r) => format!("{}:{r}", spec.family),
            None => spec.family.clone(),
        },
        count: 1,
        client_token: None,
        started_by: format!("schedule:{}", berth_core::namespace::split(&spec.name).1),
        group: String::new(),
        overrides: spec.overrides.clone(),
        placement_strategy: spec.placement_strategy.clone(),
        placement_constraints: spec.placement_constraints.clone(),
        service: None,
        timeouts: spec.timeouts,
        retry: None,
    }
}

/// The first scheduled time after `after` that is before the schedule's end, or None.
fn next_time(s: &Schedule, expr: &berth_cron::Schedule, after: u64, anchor: u64) -> Option<u64> {
    let t = expr.next_after(after, anchor)?;
    match s.spec.end_at {
        Some(end) if t > end => None,
        _ => Some(t),
    }
}

/// One schedule's due times at `now` (the leader's clock), decided: the proposal, if any,
/// and when the next time falls due (its jitter included) if it is later.
pub(crate) fn plan(
    s: &Schedule,
    expr: &berth_cron::Schedule,
    now: u64,
) -> (Option<Proposal>, Option<u64>) {
    if s.state == ScheduleState::Completed {
        return (None, None);
    }
    let (cursor, anchor) = s.cursor();
    let mut times = Vec::new();
    let mut after = cursor;
    let mut completed = false;
    let mut next_due = None;
    while (times.len() as u64) < MAX_TIMES_PER_FIRE {
        let Some(t) = next_time(s, expr, after, anchor) else {
            completed = true;
            break;
        };
        let due = t.saturating_add(s.jitter_for(t));
        if due > now {
            next_due = Some(due);
            break;
        }
        times.push(t);
        after = t;
    }
    if times.is_empty() {
        if !completed {
            return (None, next_due);
        }
        // Nothing is left to fire: mark it so the pass stops looking.
        let fire = ScheduleFire {
            name: s.spec.name.clone(),
            generation: s.generation,
            expected_last: s.last_fired,
            new_last: s.last_fired.unwrap_or(cursor),
            skipped: Vec::new(),
            run: None,
            completed: true,
        };
        let fire = Box::new(fire);
        return (Some(Proposal::Fire { fire, run: None }), None);
    }
    // (time, why skipped); the one run has no reason.
    let mut decided: Vec<(u64, Option<String>)> = Vec::with_capacity(times.len());
    let mut run = None;
    if s.state == ScheduleState::Paused {
        decided.extend(
            times
                .iter()
                .map(|&t| (t, Some("the schedule was paused".to_string()))),
        );
    } else {
        let window = s.spec.catch_up_window_ms;
        let lateness = |t: u64| now.saturating_sub(t.saturating_add(s.jitter_for(t)));
        let (old, fresh): (Vec<u64>, Vec<u64>) = times.iter().partition(|&&t| lateness(t) > window);
        let old_reason = format!(
            "missed: more than the catch-up window ({}) late",
            humantime::format_duration(Duration::from_millis(window))
        );
        decided.extend(old.iter().map(|&t| (t, Some(old_reason.clone()))));
        let chosen = match s.spec.catch_up {
            CatchUp::Latest => fresh.last().copied(),
            // One run per fire; later missed times are the next fires'.
            CatchUp::All => fresh.first().copied(),
            CatchUp::None => fresh.last().copied().filter(|&t| lateness(t) <= ON_TIME_MS),
        };
        for &t in &fresh {
            if Some(t) == chosen {
                decided.push((t, None));
                if s.spec.catch_up == CatchUp::All {
                    completed = false;
                    break;
                }
                continue;
            }
            decided.push((
                t,
                Some(match s.spec.catch_up {
                    CatchUp::None => "missed: catch-up is none".to_string(),
                    _ => "missed: catch-up latest ran a later time".to_string(),
                }),
            ));
        }
        if let Some(t) = chosen {
            let live: Vec<&str> = s.live_runs().map(|r| r.id.as_str()).collect();
            if s.spec.overlap == Overlap::Forbid && !live.is_empty() {
                let why = format!("overlap: run {} is still running", live.join(", "));
                if let Some(d) = decided.iter_mut().find(|d| d.0 == t) {
                    d.1 = Some(why);
                }
            } else {
                run = Some(t);
            }
        }
    }
    let new_last = decided.iter().map(|d| d.0).max().unwrap_or(cursor);
    let mut skipped: Vec<SkippedTimes> = Vec::new();
    for (t, why) in &decided {
        let Some(why) = why else { continue };
        match skipped.last_mut() {
            Some(last) if last.reason == *why => {
                last.last = *t;
                last.count += 1;
            }
            _ => skipped.push(SkippedTimes {
                first: *t,
                last: *t,
                count: 1,
                reason: why.clone(),
            }),
        }
    }
    // Skipped ranges must be told in time order around the run, so a range is not
    // merged across it.
    let (run_req, completed) = match run {
        Some(t) => (Some((t, launch(s))), completed && new_last == t),
        None => (None, completed),
    };
    let fire = ScheduleFire {
        name: s.spec.name.clone(),
        generation: s.generation,
        expected_last: s.last_fired,
        new_last,
        skipped,
        run: None,
        completed,
    };
    let fire = Box::new(fire);
    (Some(Proposal::Fire { fire, run: run_req }), next_due)
}

/// Retries due at `now`, and the earliest retry still waiting.
pub(crate) fn retries(s: &Schedule, now: u64) -> (Vec<Proposal>, Option<u64>) {
    let mut due = Vec::new();
    let mut next = None::<u64>;
    for r in s.runs.iter().filter(|r| r.status == RunStatus::Running) {
        let Some(at) = r.retry_at else { continue };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let attempt = r.attempts.len() as u32 + 1;
        due.push(Proposal::Retry {
            name: s.spec.name.clone(),
            run_id: r.id.clone(),
            scheduled_time: r.scheduled_time,
            attempt,
            request: launch(s),
        });
    }
    (due, next)
}

/// Plain RunTasks' retries due at `now`, and the earliest still waiting. Proposed as a
/// schedule's are, with no schedule name.
pub(crate) fn plain_retries(
    runs: &imbl::OrdMap<String, RetriedRun>,
    now: u64,
) -> (Vec<Proposal>, Option<u64>) {
    let mut due = Vec::new();
    let mut next = None::<u64>;
    for r in runs.values().filter(|r| r.run.status == RunStatus::Running) {
        let Some(at) = r.run.retry_at else { continue };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        due.push(Proposal::Retry {
            name: String::new(),
            run_id: r.run.id.clone(),
            scheduled_time: r.run.scheduled_time,
            attempt: r.run.attempts.len() as u32 + 1,
            request: r.retry.launch.clone(),
        });
    }
    (due, next)
}

/// Every proposal due at `now` and when the next falls due.
fn pass(
    schedules: &imbl::OrdMap<String, Schedule>,
    parsed: &mut Parsed,
    now: u64,
) -> (Vec<Proposal>, Option<u64>) {
    parsed.retain(|name, _| schedules.contains_key(name));
    let mut proposals = Vec::new();
    let mut wake = None::<u64>;
    let mut soonest = |t: Option<u64>| {
        if let Some(t) = t {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
    };
    for s in schedules.values() {
        let (r, next) = retries(s, now);
        proposals.extend(r);
        soonest(next);
        let known = parsed.entry(s.spec.name.clone()).or_default();
        if known.generation != s.generation || known.expr.is_none() {
            *known = Known {
                generation: s.generation,
                expr: Some(
                    berth_cron::Schedule::parse(&s.spec.expression, &s.spec.timezone)
                        .map_err(|e| e.to_string()),
                ),
                due: None,
            };
        }
        if let Some((last, due)) = known.due {
            if last == s.last_fired && due > now {
                soonest(Some(due));
                continue;
            }
        }
        let expr = match &known.expr {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                // Checked when it was made; a release that reads it otherwise says so.
                tracing::warn!(schedule = %s.spec.name, error = %e, "schedule expression does not parse");
                continue;
            }
            None => continue,
        };
        let (p, next) = plan(s, expr, now);
        known.due = match (&p, next) {
            (None, Some(due)) => Some((s.last_fired, due)),
            _ => None,
        };
        proposals.extend(p);
        soonest(next);
    }
    (proposals, wake)
}

fn request_of(p: Proposal) -> WriteRequest {
    match p {
        Proposal::Fire { fire, run } => {
            let run = run.map(|(t, request)| {
                let task_run = TaskRun {
                    schedule: fire.name.clone(),
                    run_id: berth_core::schedule::Run::run_id(&fire.name, t),
                    attempt: 1,
                    scheduled_time: t,
                };
                Box::new((t, request, task_run))
            });
            WriteRequest::FireSchedule { fire, run }
        }
        Proposal::Retry {
            name,
            run_id,
            scheduled_time,
            attempt,
            request,
        } => WriteRequest::RetryScheduleRun(Box::new((
            TaskRun {
                schedule: name,
                run_id,
                attempt,
                scheduled_time,
            },
            request,
        ))),
    }
}

pub(crate) async fn run(node: Arc<Node>) {
    let mut parsed = Parsed::new();
    let mut wait = TICK;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.shutdown.wait() => return,
        }
        wait = TICK;
        if !node.is_leader() {
            parsed.clear();
            continue;
        }
        let now = crate::node::now_ms();
        let (schedules, retried) = {
            let s = node.state.read();
            (
                s.state.schedules_snapshot(),
                s.state.retried_runs_snapshot(),
            )
        };
        let (mut proposals, mut wake) = pass(&schedules, &mut parsed, now);
        let (retries, next) = plain_retries(&retried, now);
        proposals.extend(retries);
        wake = match (wake, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut applied = false;
        // Concurrently, so the batcher groups one pass's fires into few Raft entries.
        let mut writes = tokio::task::JoinSet::new();
        for p in proposals {
            let node = node.clone();
            writes.spawn(async move { node.write(request_of(p)).await });
        }
        while let Some(done) = writes.join_next().await {
            match done {
                Ok(Ok(_)) => applied = true,
                // A stale proposal is refused at apply; the next pass reads the state anew.
                Ok(Err(e)) => tracing::debug!(error = %e, "schedule fire refused"),
                Err(_) => {}
            }
        }
        if applied {
            // What was proposed is applied now: look again at once for what follows.
            wait = MIN_WAIT;
        } else if let Some(at) = wake {
            let now = crate::node::now_ms();
            wait = Duration::from_millis(at.saturating_sub(now)).clamp(MIN_WAIT, TICK);
        }
    }
}

#[cfg(test)]
mod tests;
