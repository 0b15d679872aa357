//! Pay per use, as Fargate bills: per second (here per millisecond) on the task's configured
//! CPU and memory, from the moment its image pull starts until it is STOPPED, at least one
//! minute. Everything here is arithmetic on integers, so every node computes the same figure.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// A task is billed at least this long (Fargate's one-minute minimum).
pub const MIN_BILLED_MS: u64 = 60_000;
pub const DAY_MS: u64 = 86_400_000;
const HOUR_MS: f64 = 3_600_000.0;

/// What one stopped task used: final once written, kept past the task's own collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub task_id: String,
    pub family: String,
    pub revision: u32,
    /// The service that ran it; empty for a standalone task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    /// CPU units (1024 = 1 vCPU) and MiB, as configured.
    pub cpu: u32,
    pub memory: u32,
    /// Image pull started (metering starts) and STOPPED (metering ends).
    pub start: Millis,
    pub end: Millis,
}

impl UsageRecord {
    /// The billed interval: [start, end), stretched to the one-minute minimum.
    pub fn billed(&self) -> (Millis, Millis) {
        (self.start, self.end.max(self.start + MIN_BILLED_MS))
    }
}

/// What a set of tasks used: CPU-unit-milliseconds and MiB-milliseconds, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub cpu_unit_ms: u128,
    pub mib_ms: u128,
    /// Tasks that contributed (a task spread over several days counts on each).
    pub tasks: u64,
}

impl Amount {
    pub fn of(cpu: u32, memory: u32, ms: u64) -> Amount {
        Amount {
            cpu_unit_ms: u128::from(cpu) * u128::from(ms),
            mib_ms: u128::from(memory) * u128::from(ms),
            tasks: 1,
        }
    }
    pub fn add(&mut self, o: Amount) {
        self.cpu_unit_ms += o.cpu_unit_ms;
        self.mib_ms += o.mib_ms;
        self.tasks += o.tasks;
    }
    /// A share of this amount, `part / whole` of it (a day cut by a period bound).
    pub fn share(&self, part: u64, whole: u64) -> Amount {
        if whole == 0 {
            return Amount::default();
        }
        Amount {
            cpu_unit_ms: self.cpu_unit_ms * u128::from(part) / u128::from(whole),
            mib_ms: self.mib_ms * u128::from(part) / u128::from(whole),
            tasks: self.tasks,
        }
    }
    pub fn vcpu_hours(&self) -> f64 {
        self.cpu_unit_ms as f64 / 1024.0 / HOUR_MS
    }
    pub fn gib_hours(&self) -> f64 {
        self.mib_ms as f64 / 1024.0 / HOUR_MS
    }
    /// In nano-units of the price table's currency.
    pub fn cost_nanos(&self, prices: &Prices) -> u128 {
        let hour_units = 1024u128 * HOUR_MS as u128;
        (self.cpu_unit_ms * u128::from(prices.vcpu_hour_nanos)
            + self.mib_ms * u128::from(prices.gib_hour_nanos))
            / hour_units
    }
}

/// The price table, in nano-units of currency per hour (integers keep the state's equality
/// exact). Defaults: Fargate's Linux/x86 on-demand list prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    pub vcpu_hour_nanos: u64,
    pub gib_hour_nanos: u64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            vcpu_hour_nanos: 40_480_000,
            gib_hour_nanos: 4_445_000,
        }
    }
}

/// How a usage answer is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Task,
    Family,
    Service,
    StartedBy,
    Day,
}

impl UsageBy {
    pub fn parse(s: &str) -> Option<UsageBy> {
        match s {
            "" | "family" => Some(UsageBy::Family),
            "task" => Some(UsageBy::Task),
            "service" => Some(UsageBy::Service),
            "started-by" | "startedBy" => Some(UsageBy::StartedBy),
            "day" => Some(UsageBy::Day),
            _ => None,
        }
    }
}

impl fmt::Display for UsageBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsageBy::Task => "task",
            UsageBy::Family => "family",
            UsageBy::Service => "service",
            UsageBy::StartedBy => "started-by",
            UsageBy::Day => "day",
        })
    }
}

/// The length of the overlap of [a0, a1) and [b0, b1).
pub fn overlap((a0, a1): (Millis, Millis), (b0, b1): (Millis, Millis)) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// A UTC day (days since the epoch) as `YYYY-MM-DD`.
pub fn day_name(day: u64) -> String {
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_shorter_than_a_minute_is_billed_a_minute() {
        let r = UsageRecord {
            task_id: "t".into(),
            family: "web".into(),
            revision: 1,
            service: String::new(),
            started_by: String::new(),
            cpu: 1024,
            memory: 2048,
            start: 1_000,
            end: 11_000,
        };
        assert_eq!(r.billed(), (1_000, 61_000));
        let a = Amount::of(r.cpu, r.memory, r.billed().1 - r.billed().0);
        assert!((a.vcpu_hours() - 60.0 / 3600.0).abs() < 1e-12);
        assert!((a.gib_hours() - 2.0 * 60.0 / 3600.0).abs() < 1e-12);
        // One vCPU and 2 GiB for an hour at list prices: 0.04048 + 2 × 0.004445.
        let hour = Amount::of(1024, 2048, 3_600_000);
        assert_eq!(hour.cost_nanos(&Prices::default()), 40_480_000 + 8_890_000);
    }

    #[test]
    fn overlaps_and_day_names() {
        assert_eq!(overlap((0, 10), (5, 20)), 5);
        assert_eq!(overlap((0, 10), (10, 20)), 0);
        assert_eq!(overlap((5, 6), (0, 20)), 1);
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_422), "2025-11-30");
        assert_eq!(day_name(11_016), "2000-02-29");
    }
}
