//! The usage ledger in the replicated state: a final record per stopped task that was ever
//! metered, kept past the task's collection for `USAGE_RECORD_RETENTION_MS`, then folded into
//! per-day totals (by family, service and startedBy), so the ledger grows with days and
//! families, not with tasks ever run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{take_due, ClusterState};
use crate::limits::USAGE_RECORD_RETENTION_MS;
use crate::model::{Millis, Task, TaskState};
use crate::service::service_of_group;
use crate::usage::*;

/// Folded usage of one (family, service, startedBy) on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDay {
    pub family: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    pub amount: Amount,
}

/// One line of a usage answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    pub key: String,
    pub amount: Amount,
}

/// The key of a line folded past the retention when grouping by task.
pub const FOLDED: &str = "(per-day totals)";

fn record_of(t: &Task, end: Millis) -> Option<UsageRecord> {
    let start = t.pull_started_at.or(t.started_at)?;
    Some(UsageRecord {
        task_id: t.id.clone(),
        family: t.family.clone(),
        revision: t.revision,
        service: service_of_group(&t.group).unwrap_or_default().to_string(),
        started_by: t.started_by.clone(),
        cpu: t.cpu,
        memory: t.memory,
        start,
        end: end.max(start),
    })
}

fn key_of(by: UsageBy, r: &UsageRecord) -> String {
    match by {
        UsageBy::Task => r.task_id.clone(),
        UsageBy::Family => r.family.clone(),
        UsageBy::Service => r.service.clone(),
        UsageBy::StartedBy => r.started_by.clone(),
        UsageBy::Day => String::new(),
    }
}

impl ClusterState {
    /// Writes the final record of a task that just STOPPED (if its metering ever started).
    pub(super) fn record_usage(&mut self, t: &Task) {
        let Some(stopped) = t.stopped_at else {
            return;
        };
        let Some(r) = record_of(t, stopped) else {
            return;
        };
        self.usage_expiry
            .insert((r.end + USAGE_RECORD_RETENTION_MS, r.task_id.clone()));
        self.usage_records.insert(r.task_id.clone(), r);
    }

    /// Folds records past the retention into per-day totals.
    pub(super) fn fold_usage(&mut self) {
        let now = self.clock;
        for id in take_due(&mut self.usage_expiry, now) {
            let Some(r) = self.usage_records.remove(&id) else {
                continue;
            };
            let (start, end) = r.billed();
            let mut day = start / DAY_MS;
            while day * DAY_MS < end {
                let ms = overlap((start, end), (day * DAY_MS, (day + 1) * DAY_MS));
                let amount = Amount::of(r.cpu, r.memory, ms);
                let days = self.usage_days.entry(day).or_default();
                match days.iter_mut().find(|d| {
                    d.family == r.family && d.service == r.service && d.started_by == r.started_by
                }) {
                    Some(d) => d.amount.add(amount),
                    None => days.push(UsageDay {
                        family: r.family.clone(),
                        service: r.service.clone(),
                        started_by: r.started_by.clone(),
                        amount,
                    }),
                }
                day += 1;
            }
        }
    }

    /// Usage in [since, until), grouped `by`, largest CPU first. Tasks not yet STOPPED count
    /// up to `now` (at least their minute); folded days cut by a bound count in proportion.
    pub fn usage(&self, since: Millis, until: Millis, now: Millis, by: UsageBy) -> Vec<UsageLine> {
        self.usage_in(None, since, until, now, by)
    }

    /// [`usage`](Self::usage) of one namespace's tasks only (all with None). Keys of family
    /// and service lines are the state's qualified names.
    pub fn usage_in(
        &self,
        namespace: Option<&str>,
        since: Millis,
        until: Millis,
        now: Millis,
        by: UsageBy,
    ) -> Vec<UsageLine> {
        let mine = |family: &str| namespace.is_none_or(|n| crate::namespace::of(family) == n);
        let period = (since, until);
        let mut lines: BTreeMap<String, Amount> = BTreeMap::new();
        let mut add = |key: String, a: Amount| {
            if a.cpu_unit_ms > 0 || a.mib_ms > 0 {
                lines.entry(key).or_default().add(a);
            }
        };
        let live = self
            .tasks
            .values()
            .filter(|t| t.last_status != TaskState::Stopped && mine(&t.family))
            .filter_map(|t| record_of(t, now));
        let mut each = |r: &UsageRecord| {
            let billed = r.billed();
            if by == UsageBy::Day {
                let mut day = billed.0 / DAY_MS;
                while day * DAY_MS < billed.1 {
                    let bounds = (day * DAY_MS, (day + 1) * DAY_MS);
                    let ms = overlap(overlap_range(billed, bounds), period);
                    if ms > 0 {
                        add(day_name(day), Amount::of(r.cpu, r.memory, ms));
                    }
                    day += 1;
                }
            } else {
                let ms = overlap(billed, period);
                if ms > 0 {
                    add(key_of(by, r), Amount::of(r.cpu, r.memory, ms));
                }
            }
        };
        for r in self.usage_records.values().filter(|r| mine(&r.family)) {
            each(r);
        }
        for r in live {
            each(&r);
        }
        let first = since / DAY_MS;
        for (day, totals) in self.usage_days.range(first..) {
            let bounds = (day * DAY_MS, (day + 1) * DAY_MS);
            let part = overlap(bounds, period);
            if part == 0 {
                continue;
            }
            for d in totals.iter().filter(|d| mine(&d.family)) {
                let key = match by {
                    UsageBy::Task => FOLDED.to_string(),
                    UsageBy::Family => d.family.clone(),
                    UsageBy::Service => d.service.clone(),
                    UsageBy::StartedBy => d.started_by.clone(),
                    UsageBy::Day => day_name(*day),
                };
                add(key, d.amount.share(part, DAY_MS));
            }
        }
        let mut out: Vec<UsageLine> = lines
            .into_iter()
            .map(|(key, amount)| UsageLine { key, amount })
            .collect();
        if by != UsageBy::Day {
            out.sort_by(|a, b| {
                b.amount
                    .cpu_unit_ms
                    .cmp(&a.amount.cpu_unit_ms)
                    .then(a.key.cmp(&b.key))
            });
        }
        out
    }

    /// Per-task records kept (not yet folded), for sizing and tests.
    pub fn usage_record_count(&self) -> usize {
        self.usage_records.len()
    }
}

/// [max(a0, b0), min(a1, b1)) as a range (empty when they do not meet).
fn overlap_range(a: (Millis, Millis), b: (Millis, Millis)) -> (Millis, Millis) {
    let start = a.0.max(b.0);
    (start, a.1.min(b.1).max(start))
}
