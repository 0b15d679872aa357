//! Measured use of running tasks. Agents sample each task's containers through the engine's
//! stats every few seconds and send one summary per task per window (not a write per
//! sample); the state keeps the latest window and running totals, so `task describe` shows
//! average and peak and the autoscaler reads the latest window.
//!
//! CPU is in CPU units (1024 per vCPU, as reservations are), memory in MiB, so the figures
//! compare directly with what a task reserved.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::Millis;

/// The longest window an agent may summarize in one report.
pub const MAX_WINDOW_MS: u64 = 3_600_000;
/// Larger figures than any host has are refused: 1,024 vCPUs, 64 TiB.
const MAX_CPU_UNITS: u32 = 1024 * 1024;
const MAX_MEMORY_MIB: u32 = 64 * 1024 * 1024;

/// What one task used over one window, by its agent's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub task_id: String,
    pub start: Millis,
    pub end: Millis,
    /// Average over the window, CPU units.
    pub cpu_avg: u32,
    /// Highest over one sampling interval, CPU units.
    pub cpu_peak: u32,
    /// Average of the samples, MiB (page cache the kernel can reclaim not counted).
    pub memory_avg: u32,
    pub memory_peak: u32,
}

impl Window {
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.task_id.is_empty() {
            return Err(Error::invalid(
                "utilization window without a taskId".to_string(),
            ));
        }
        if self.end <= self.start || self.duration() > MAX_WINDOW_MS {
            return Err(Error::invalid(format!(
                "utilization window of task {} runs from {} to {}; it must be 1 ms to {} ms long",
                self.task_id, self.start, self.end, MAX_WINDOW_MS
            )));
        }
        if self.cpu_avg > self.cpu_peak
            || self.memory_avg > self.memory_peak
            || self.cpu_peak > MAX_CPU_UNITS
            || self.memory_peak > MAX_MEMORY_MIB
        {
            return Err(Error::invalid(format!(
                "utilization window of task {}: averages above peaks or figures beyond any \
                 host (cpu {}/{}, memory {}/{})",
                self.task_id, self.cpu_avg, self.cpu_peak, self.memory_avg, self.memory_peak
            )));
        }
        Ok(())
    }
}

/// What the state knows of one task's measured use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUtilization {
    /// The latest window reported.
    pub last: Window,
    /// When (the leader's clock) the latest window was applied: the autoscaler ignores
    /// figures that have gone stale.
    pub received_at: Millis,
    /// Since the task's first window.
    pub cpu_peak: u32,
    pub memory_peak: u32,
    /// Sums of use × time, for the averages.
    pub cpu_unit_ms: u64,
    pub memory_mib_ms: u64,
    pub measured_ms: u64,
}

impl TaskUtilization {
    pub fn new(w: Window, received_at: Millis) -> Self {
        let d = w.duration();
        TaskUtilization {
            cpu_peak: w.cpu_peak,
            memory_peak: w.memory_peak,
            cpu_unit_ms: u64::from(w.cpu_avg) * d,
            memory_mib_ms: u64::from(w.memory_avg) * d,
            measured_ms: d,
            last: w,
            received_at,
        }
    }

    /// Adds a later window; one that does not start after the last one ended (sent twice,
    /// or late) changes nothing.
    pub fn add(&mut self, w: Window, received_at: Millis) -> bool {
        if w.start < self.last.end {
            return false;
        }
        let d = w.duration();
        self.cpu_peak = self.cpu_peak.max(w.cpu_peak);
        self.memory_peak = self.memory_peak.max(w.memory_peak);
        self.cpu_unit_ms = self.cpu_unit_ms.saturating_add(u64::from(w.cpu_avg) * d);
        self.memory_mib_ms = self
            .memory_mib_ms
            .saturating_add(u64::from(w.memory_avg) * d);
        self.measured_ms = self.measured_ms.saturating_add(d);
        self.last = w;
        self.received_at = received_at;
        true
    }

    pub fn cpu_avg(&self) -> u32 {
        average(self.cpu_unit_ms, self.measured_ms)
    }

    pub fn memory_avg(&self) -> u32 {
        average(self.memory_mib_ms, self.measured_ms)
    }
}

fn average(sum: u64, over: u64) -> u32 {
    if over == 0 {
        return 0;
    }
    u32::try_from(sum / over).unwrap_or(u32::MAX)
}

/// `used` as a percentage of `reserved`, to a tenth (0 when nothing is reserved).
pub fn percent(used: u32, reserved: u32) -> f64 {
    if reserved == 0 {
        return 0.0;
    }
    (f64::from(used) * 1000.0 / f64::from(reserved)).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: Millis, end: Millis, cpu: u32, peak: u32, mem: u32) -> Window {
        Window {
            task_id: "t1".into(),
            start,
            end,
            cpu_avg: cpu,
            cpu_peak: peak,
            memory_avg: mem,
            memory_peak: mem + 10,
        }
    }

    #[test]
    fn averages_weigh_windows_by_their_length_and_peaks_are_kept() {
        let mut u = TaskUtilization::new(w(0, 10_000, 100, 300, 50), 10_000);
        assert!(u.add(w(10_000, 40_000, 500, 900, 150), 40_000));
        assert_eq!(u.cpu_avg(), (100 * 10 + 500 * 30) / 40);
        assert_eq!(u.memory_avg(), (50 * 10 + 150 * 30) / 40);
        assert_eq!((u.cpu_peak, u.memory_peak), (900, 160));
        assert_eq!(u.measured_ms, 40_000);
        assert_eq!(u.last.cpu_avg, 500);
    }

    #[test]
    fn a_window_sent_twice_or_late_counts_once() {
        let mut u = TaskUtilization::new(w(0, 10_000, 100, 300, 50), 10_000);
        let before = u.clone();
        assert!(!u.add(w(0, 10_000, 100, 300, 50), 11_000));
        assert!(!u.add(w(5_000, 12_000, 100, 300, 50), 12_000));
        assert_eq!(u, before);
    }

    #[test]
    fn impossible_windows_are_refused() {
        assert!(w(0, 10_000, 100, 300, 50).check().is_ok());
        assert!(w(10_000, 10_000, 100, 300, 50).check().is_err());
        assert!(w(0, MAX_WINDOW_MS + 1, 100, 300, 50).check().is_err());
        assert!(w(0, 10_000, 400, 300, 50).check().is_err());
        assert!(w(0, 10_000, 100, MAX_CPU_UNITS + 1, 50).check().is_err());
        let mut nameless = w(0, 10_000, 100, 300, 50);
        nameless.task_id.clear();
        assert!(nameless.check().is_err());
    }

    #[test]
    fn percent_of_a_reservation_is_rounded_to_a_tenth() {
        assert_eq!(percent(512, 1024), 50.0);
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(2048, 1024), 200.0);
        assert_eq!(percent(5, 0), 0.0);
    }
}
