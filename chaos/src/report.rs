//! The run's report: operation counts, faults, failover gaps, unavailability windows and
//! the checks, as text for people and JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checks::CheckResult;
use crate::history::{FaultRecord, Kind, Op};

/// A stretch without any successful write at least this long is an unavailability window.
pub const WINDOW_MIN_MS: f64 = 1000.0;
/// DESIGN.md §5: leader SIGKILL → writes succeed again, p99 ≤ 2 s.
pub const FAILOVER_BAR_MS: f64 = 2000.0;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gaps {
    /// Milliseconds from the fault's injection to the first successful write invoked
    /// after it, one per fault.
    pub gaps_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
    pub length_ms: f64,
    /// Faults active (or just healed) during the window.
    pub during: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub mode: String,
    pub command: String,
    pub nodes: usize,
    pub agents: String,
    pub workload_seconds: f64,
    pub wall_seconds: f64,
    pub ops: BTreeMap<String, Counts>,
    pub faults: Vec<FaultRecord>,
    pub fault_counts: BTreeMap<String, u64>,
    /// Outages seen by the prober (a fresh write every 50 ms, rotating over the nodes):
    /// the longest stretch between two successful probe writes around each fault.
    pub failover: BTreeMap<String, Gaps>,
    /// From when the fault took hold to the first successful probe write sent after it.
    pub recovery: BTreeMap<String, Gaps>,
    /// Gaps seen by the workers, whose calls in flight when a fault hits may hang until
    /// they time out: how long clients stall, not how long the cluster is unavailable.
    pub client_stall: BTreeMap<String, Gaps>,
    pub unavailability: Vec<Window>,
    pub checks: Vec<CheckResult>,
    pub violations: usize,
}

/// Nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn counts(ops: &[Op]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for op in ops {
        let c = out.entry(op.call.name().to_string()).or_default();
        match op.kind() {
            Kind::Ok => c.ok += 1,
            Kind::Fail => c.fail += 1,
            Kind::Info | Kind::Invoke => c.info += 1,
        }
    }
    out
}

/// The workers' successful writes as (invoke, complete).
pub fn worker_writes(ops: &[Op]) -> Vec<(u64, u64)> {
    ops.iter()
        .filter(|o| o.call.is_write())
        .filter_map(|o| o.ok_time().map(|c| (o.invoke, c)))
        .collect()
}

/// For each kind of fault that takes the leader away, the gap until writes succeed again:
/// from when the fault took hold to the completion of the first successful write (of
/// `writes`, as (invoke, complete)) invoked after it.
pub fn failover(writes: &[(u64, u64)], faults: &[FaultRecord]) -> BTreeMap<String, Gaps> {
    gaps_by_kind(writes, faults, false)
}

/// For the same faults, the outage: the longest stretch between two consecutive successful
/// writes (of `writes`), from the last success before the fault was injected to the first
/// success of a write invoked after it took hold. Unlike `failover` it does not depend on
/// when the docker CLI returned (a `docker kill` may return a few hundred ms after the
/// process died, and an election may be over by then).
pub fn outage(writes: &[(u64, u64)], faults: &[FaultRecord]) -> BTreeMap<String, Gaps> {
    gaps_by_kind(writes, faults, true)
}

fn gaps_by_kind(
    writes: &[(u64, u64)],
    faults: &[FaultRecord],
    outage: bool,
) -> BTreeMap<String, Gaps> {
    let mut writes = writes.to_vec();
    writes.sort();
    let mut done: Vec<u64> = writes.iter().map(|&(_, c)| c).collect();
    done.sort_unstable();
    let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for f in faults {
        if !matches!(
            f.kind.as_str(),
            "kill-leader" | "pause-leader" | "isolate-leader" | "full-restart"
        ) {
            continue;
        }
        if f.detail.starts_with("injection error") {
            continue;
        }
        // The first write invoked after the fault took hold that succeeded: its completion.
        let first = writes
            .iter()
            .filter(|(i, _)| *i >= f.effective)
            .map(|(_, c)| *c)
            .min();
        let Some(c) = first else { continue };
        let gap = if outage {
            let from = done.partition_point(|&t| t <= f.start).saturating_sub(1);
            let to = done.partition_point(|&t| t <= c);
            done[from..to]
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(0)
        } else {
            c - f.effective
        };
        by_kind
            .entry(f.kind.clone())
            .or_default()
            .push(gap as f64 / 1e6);
    }
    by_kind
        .into_iter()
        .map(|(k, mut g)| {
            let mut sorted = g.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let gaps = Gaps {
                p50_ms: percentile(&sorted, 50.0),
                p99_ms: percentile(&sorted, 99.0),
                max_ms: sorted.last().copied().unwrap_or(0.0),
                gaps_ms: std::mem::take(&mut g),
            };
            (k, gaps)
        })
        .collect()
}

/// Stretches of the workload with no successful write (of `writes`, as (invoke,
/// complete)) for at least `WINDOW_MIN_MS`.
pub fn windows(writes: &[(u64, u64)], faults: &[FaultRecord], start: u64, end: u64) -> Vec<Window> {
    let mut done: Vec<u64> = writes
        .iter()
        .map(|&(_, c)| c)
        .filter(|&t| t >= start && t <= end)
        .collect();
    done.push(start);
    done.push(end);
    done.sort();
    let mut out = Vec::new();
    for w in done.windows(2) {
        let len = (w[1] - w[0]) as f64 / 1e6;
        if len >= WINDOW_MIN_MS {
            let during = faults
                .iter()
                .filter(|f| f.start <= w[1] && f.end + 1_000_000_000 >= w[0])
                .map(|f| f.kind.clone())
                .collect();
            out.push(Window {
                start_s: w[0] as f64 / 1e9,
                end_s: w[1] as f64 / 1e9,
                length_ms: len,
                during,
            });
        }
    }
    out
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "berth chaos report");
        let _ = writeln!(s, "  command:   {}", self.command);
        let _ = writeln!(
            s,
            "  seed {}  mode {}  {} control nodes  agents {}  workload {:.0} s  wall {:.0} s",
            self.seed, self.mode, self.nodes, self.agents, self.workload_seconds, self.wall_seconds
        );
        let _ = writeln!(s, "operations (ok / fail / info):");
        for (f, c) in &self.ops {
            let _ = writeln!(s, "  {f:<6} {:>7} / {:>5} / {:>5}", c.ok, c.fail, c.info);
        }
        let _ = writeln!(s, "faults injected: {}", self.faults.len());
        for (k, n) in &self.fault_counts {
            let _ = writeln!(s, "  {k:<24} {n}");
        }
        let _ = writeln!(
            s,
            "write outage around fault (longest stretch between two successful probe writes):"
        );
        write_gaps(&mut s, &self.failover);
        let _ = writeln!(
            s,
            "recovery after fault (docker returned → first successful probe write sent after it):"
        );
        write_gaps(&mut s, &self.recovery);
        let _ = writeln!(
            s,
            "client stall after fault (took hold → first successful worker write sent after it):"
        );
        write_gaps(&mut s, &self.client_stall);
        let total: f64 = self.unavailability.iter().map(|w| w.length_ms).sum();
        let _ = writeln!(
            s,
            "unavailability windows (≥ {:.0} ms without a successful write): {}, {:.1} s in all",
            WINDOW_MIN_MS,
            self.unavailability.len(),
            total / 1000.0
        );
        for w in &self.unavailability {
            let _ = writeln!(
                s,
                "  {:>8.2}–{:<8.2} s  {:>7.0} ms  {}",
                w.start_s,
                w.end_s,
                w.length_ms,
                w.during.join(", ")
            );
        }
        let _ = writeln!(s, "checks:");
        for c in &self.checks {
            let mark = match c.ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "SKIP",
            };
            let _ = writeln!(s, "  [{mark}] {} — {}", c.name, c.detail);
            for v in &c.violations {
                let _ = writeln!(s, "         {v}");
            }
        }
        let _ = writeln!(
            s,
            "result: {}",
            if self.violations == 0 {
                "no violations".to_string()
            } else {
                format!("{} VIOLATIONS", self.violations)
            }
        );
        s
    }
}

/// One line per fault kind: how many, p50, p99 and max of the gaps.
fn write_gaps(s: &mut String, gaps: &BTreeMap<String, Gaps>) {
    for (k, g) in gaps {
        let _ = writeln!(
            s,
            "  {k:<16} n={:<3} p50 {:>7.0} ms  p99 {:>7.0} ms  max {:>7.0} ms",
            g.gaps_ms.len(),
            g.p50_ms,
            g.p99_ms,
            g.max_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 99.0), 3.0);
    }
}

#[cfg(test)]
mod gap_tests {
    use super::*;

    fn fault(kind: &str, start: u64, effective: u64) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            detail: String::new(),
            start,
            effective,
            end: effective + 1,
            leader_before: 1,
        }
    }

    #[test]
    fn outage_spans_the_death_whichever_side_of_took_hold() {
        // Writes every 10 until 100, nothing until 900, then every 10 again; the kill was
        // asked at 95 and docker returned at 600 (the election was already under way).
        let mut w: Vec<(u64, u64)> = (0..=10).map(|i| (i * 10, i * 10)).collect();
        w.extend((90..100).map(|i| (i * 10 - 5, i * 10)));
        let f = [fault("kill-leader", 95, 600)];
        assert_eq!(outage(&w, &f)["kill-leader"].gaps_ms, vec![800.0 / 1e6]);
        // Recovery from took hold: the first write sent after 600 completed at 900.
        assert_eq!(failover(&w, &f)["kill-leader"].gaps_ms, vec![300.0 / 1e6]);
    }
}
