//! Measured use of the agent's tasks: every `stats_every` the engine's stats of each running
//! task container (one-shot: cumulative CPU time and memory in use, from its cgroup), summed
//! per task; every `window` one summary per task goes to the outbox, which the session sends
//! to the control plane. A Raft write per window per agent, never one per sample.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::utilization::Window;
use bollard::query_parameters::StatsOptionsBuilder;
use tokio::sync::Notify;
use tokio_stream::StreamExt;

use crate::runtime::Runtime;
use crate::shutdown::Shutdown;

/// Windows kept while the control plane cannot be told (then the oldest are dropped).
const OUTBOX_MAX: usize = 10_000;
const MIB: u64 = 1024 * 1024;
/// Longest one container's stats may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// One task's figures at one instant: cumulative CPU time and memory in use, summed over its
/// running containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub task_id: String,
    /// Wall clock, ms since the epoch.
    pub at: u64,
    pub cpu_ns: u64,
    pub memory: u64,
}

#[derive(Debug, Default)]
struct Acc {
    /// The previous sample's time and CPU time.
    prev: Option<(u64, u64)>,
    start: Option<u64>,
    end: u64,
    cpu_unit_ms: u64,
    cpu_peak: u32,
    covered_ms: u64,
    memory_sum: u64,
    memory_n: u64,
    memory_peak: u32,
}

/// Turns samples into windows. Free of I/O.
#[derive(Debug, Default)]
pub struct Meter {
    accs: HashMap<String, Acc>,
}

impl Meter {
    /// Adds one round of samples. A task missing from the round has stopped running: what it
    /// gathered is dropped with it.
    pub fn add(&mut self, samples: &[Sample]) {
        self.accs
            .retain(|id, _| samples.iter().any(|s| &s.task_id == id));
        for s in samples {
            let acc = self.accs.entry(s.task_id.clone()).or_default();
            // Rounded up: a task that uses anything uses at least 1 MiB.
            let memory = u32::try_from(s.memory.div_ceil(MIB)).unwrap_or(u32::MAX);
            acc.memory_sum += u64::from(memory);
            acc.memory_n += 1;
            acc.memory_peak = acc.memory_peak.max(memory);
            if let Some((at, cpu)) = acc.prev {
                // A container restarted or replaced resets its counter: skip that interval.
                if s.at > at && s.cpu_ns >= cpu {
                    let dt = s.at - at;
                    let cpu_unit_ms = (s.cpu_ns - cpu).saturating_mul(1024) / 1_000_000;
                    let units = u32::try_from(cpu_unit_ms / dt).unwrap_or(u32::MAX);
                    acc.cpu_unit_ms += cpu_unit_ms;
                    acc.cpu_peak = acc.cpu_peak.max(units);
                    acc.covered_ms += dt;
                    acc.start.get_or_insert(at);
                    acc.end = s.at;
                }
            }
            acc.prev = Some((s.at, s.cpu_ns));
        }
    }

    /// Closes the current window of every task that has a measured interval in it.
    pub fn close(&mut self) -> Vec<Window> {
        let mut out = Vec::new();
        for (id, acc) in &mut self.accs {
            let Some(start) = acc.start else {
                continue;
            };
            if acc.covered_ms == 0 || acc.end <= start {
                continue;
            }
            let cpu_avg = u32::try_from(acc.cpu_unit_ms / acc.covered_ms).unwrap_or(u32::MAX);
            let memory_avg =
                u32::try_from(acc.memory_sum / acc.memory_n.max(1)).unwrap_or(u32::MAX);
            out.push(Window {
                task_id: id.clone(),
                start,
                end: acc.end,
                cpu_avg: cpu_avg.min(acc.cpu_peak),
                cpu_peak: acc.cpu_peak,
                memory_avg: memory_avg.min(acc.memory_peak),
                memory_peak: acc.memory_peak,
            });
            // The next window starts where this one ended.
            *acc = Acc {
                prev: acc.prev,
                ..Acc::default()
            };
        }
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        out
    }
}

/// Windows waiting to be sent.
#[derive(Default)]
pub struct Outbox {
    windows: Mutex<VecDeque<Window>>,
    pub ready: Notify,
}

impl Outbox {
    pub fn push(&self, windows: Vec<Window>) {
        if windows.is_empty() {
            return;
        }
        {
            let mut q = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            q.extend(windows);
            while q.len() > OUTBOX_MAX {
                q.pop_front();
            }
        }
        self.ready.notify_one();
    }

    /// Up to `n` of the oldest windows; they stay until [`Outbox::ack`].
    pub fn peek(&self, n: usize) -> Vec<Window> {
        let q = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().take(n).cloned().collect()
    }

    /// Removes the first `n` (what a successful send carried).
    pub fn ack(&self, n: usize) {
        let mut q = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(q.len());
        q.drain(..n);
    }
}

/// Samples every running task container of this agent.
async fn sample(runtime: &Runtime) -> Vec<Sample> {
    let Ok(observed) = runtime.list_own().await else {
        return Vec::new();
    };
    let mut by_task: HashMap<String, Sample> = HashMap::new();
    for o in observed.into_iter().filter(|o| o.running) {
        let opts = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = runtime.docker().stats(&o.id, Some(opts));
        // An engine that stops answering is the engine watch's to report; here it only
        // costs this round its figures.
        let Ok(Some(Ok(stats))) = tokio::time::timeout(STATS_TIMEOUT, stream.next()).await else {
            continue;
        };
        let cpu_ns = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        // As `docker stats` shows it: page cache the kernel can reclaim is not in use.
        let memory = stats
            .memory_stats
            .map(|m| {
                let usage = m.usage.unwrap_or(0);
                let cache = m
                    .stats
                    .as_ref()
                    .and_then(|s| {
                        s.get("inactive_file")
                            .or_else(|| s.get("total_inactive_file"))
                    })
                    .copied()
                    .unwrap_or(0);
                usage.saturating_sub(cache)
            })
            .unwrap_or(0);
        let s = by_task.entry(o.task_id.clone()).or_insert(Sample {
            task_id: o.task_id.clone(),
            at: 0,
            cpu_ns: 0,
            memory: 0,
        });
        s.cpu_ns += cpu_ns;
        s.memory += memory;
        s.at = s.at.max(now_ms());
    }
    by_task.into_values().collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Samples until shutdown; a window closes every `window`.
pub async fn run(
    runtime: Runtime,
    outbox: Arc<Outbox>,
    every: Duration,
    window: Duration,
    shutdown: Shutdown,
) {
    let mut meter = Meter::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let samples = sample(&runtime).await;
        meter.add(&samples);
        if closed.elapsed() >= window {
            closed = tokio::time::Instant::now();
            outbox.push(meter.close());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(task: &str, at: u64, cpu_ms: u64, mib: u64) -> Sample {
        Sample {
            task_id: task.into(),
            at,
            cpu_ns: cpu_ms * 1_000_000,
            memory: mib * MIB,
        }
    }

    #[test]
    fn a_window_averages_cpu_over_time_and_keeps_the_busiest_interval() {
        let mut m = Meter::default();
        m.add(&[s("t", 1_000, 0, 10)]);
        // Half a vCPU for 5 s, then two vCPUs for 5 s.
        m.add(&[s("t", 6_000, 2_500, 20)]);
        m.add(&[s("t", 11_000, 12_500, 30)]);
        let w = m.close();
        assert_eq!(w.len(), 1);
        let w = &w[0];
        assert_eq!((w.start, w.end), (1_000, 11_000));
        assert_eq!(w.cpu_peak, 2048);
        assert_eq!(w.cpu_avg, (512 + 2048) / 2);
        assert_eq!((w.memory_avg, w.memory_peak), (20, 30));
        w.check().unwrap();
    }

    #[test]
    fn the_next_window_starts_where_the_last_ended_and_stopped_tasks_are_dropped() {
        let mut m = Meter::default();
        m.add(&[s("a", 0, 0, 1), s("b", 0, 0, 1)]);
        m.add(&[s("a", 5_000, 5_000, 1), s("b", 5_000, 0, 1)]);
        assert_eq!(m.close().len(), 2);
        // b stopped running.
        m.add(&[s("a", 10_000, 5_000, 1)]);
        let w = m.close();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].task_id.as_str(), w[0].start, w[0].cpu_avg),
            ("a", 5_000, 0)
        );
        // Nothing measured since: no window.
        assert!(m.close().is_empty());
    }

    #[test]
    fn a_counter_that_goes_back_skips_that_interval() {
        let mut m = Meter::default();
        m.add(&[s("t", 0, 9_000, 1)]);
        m.add(&[s("t", 5_000, 100, 1)]);
        assert!(m.close().is_empty());
        m.add(&[s("t", 10_000, 5_100, 1)]);
        let w = m.close();
        assert_eq!(w[0].cpu_avg, 1024);
    }

    #[test]
    fn the_outbox_keeps_windows_until_acknowledged() {
        let o = Outbox::default();
        let mut m = Meter::default();
        m.add(&[s("t", 0, 0, 1)]);
        m.add(&[s("t", 5_000, 5_000, 1)]);
        o.push(m.close());
        assert_eq!(o.peek(10).len(), 1);
        assert_eq!(o.peek(10).len(), 1);
        o.ack(1);
        assert!(o.peek(10).is_empty());
    }
}
