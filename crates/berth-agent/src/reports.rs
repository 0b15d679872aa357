//! The outbox of task reports: every state change waits here until a control node has
//! acknowledged it, across reconnects and re-registrations.
//!
//! Bounded without losing what matters: a task reaches at most eight states, so the book
//! holds at most eight reports per task, and a newer report of the same state replaces the
//! older one (it only refreshes container details). Past [`MAX_REPORTS`] in total the
//! oldest non-final report is dropped (the control plane skips states it was not told of;
//! a STOPPED report is never dropped). Reports are idempotent at the control plane (a state
//! not ahead of the task's is ignored), so sending one twice is harmless.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use berth_core::{TaskReport, TaskState};
use tokio::sync::Notify;

/// Reports kept at most.
pub const MAX_REPORTS: usize = 65_536;

#[derive(Default)]
pub struct ReportBook {
    // A std mutex: held for short, non-async sections only.
    inner: Mutex<Inner>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<(u64, TaskReport)>,
    next_seq: u64,
}

/// Reports taken for one send, identified so that only they are removed on success.
pub struct Taken {
    pub seqs: Vec<u64>,
    pub reports: Vec<TaskReport>,
}

impl ReportBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the queue inconsistent (every
        // operation is a single push/retain); keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, report: TaskReport) {
        {
            let mut g = self.lock();
            // Same task, same state again: the newer one replaces the queued one.
            g.entries.retain(|(_, r)| {
                !(r.task_id == report.task_id && r.last_status == report.last_status)
            });
            if g.entries.len() >= MAX_REPORTS {
                if let Some(pos) = g
                    .entries
                    .iter()
                    .position(|(_, r)| r.last_status != TaskState::Stopped)
                {
                    let (_, dropped) = g.entries.remove(pos).unwrap_or((0, report.clone()));
                    tracing::warn!(task = %dropped.task_id, status = %dropped.last_status, "report outbox full; dropping an intermediate state");
                }
            }
            let seq = g.next_seq;
            g.next_seq += 1;
            g.entries.push_back((seq, report));
        }
        self.notify.notify_one();
    }

    /// The oldest reports, up to `max`, left in the book until [`ReportBook::ack`].
    pub fn take(&self, max: usize) -> Taken {
        let g = self.lock();
        let (seqs, reports) = g.entries.iter().take(max).cloned().unzip();
        Taken { seqs, reports }
    }

    /// The control plane has these: forget them.
    pub fn ack(&self, seqs: &[u64]) {
        let set: HashSet<u64> = seqs.iter().copied().collect();
        self.lock().entries.retain(|(s, _)| !set.contains(s));
    }

    /// Keeps only reports about tasks `keep` accepts (after a full assignment: the others
    /// are tasks the control plane no longer holds here, and would refuse).
    pub fn retain_tasks(&self, keep: impl Fn(&str) -> bool) {
        self.lock().entries.retain(|(_, r)| keep(&r.task_id));
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes when a report was pushed since the last wait.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(task: &str, s: TaskState, at: u64) -> TaskReport {
        TaskReport {
            task_id: task.into(),
            last_status: s,
            at,
            containers: vec![],
            stop_code: None,
            stopped_reason: None,
        }
    }

    #[test]
    fn only_acknowledged_reports_leave() {
        let b = ReportBook::default();
        b.push(r("a", TaskState::Pending, 1));
        b.push(r("a", TaskState::Running, 2));
        let t = b.take(10);
        assert_eq!(t.reports.len(), 2);
        // Pushed while the first two were in flight: stays after their ack.
        b.push(r("b", TaskState::Pending, 3));
        b.ack(&t.seqs);
        let t = b.take(10);
        assert_eq!(t.reports, vec![r("b", TaskState::Pending, 3)]);
    }

    #[test]
    fn a_newer_report_of_the_same_state_replaces_the_older() {
        let b = ReportBook::default();
        b.push(r("a", TaskState::Running, 1));
        let inflight = b.take(10);
        b.push(r("a", TaskState::Running, 2));
        // The in-flight copy's ack must not remove the newer one.
        b.ack(&inflight.seqs);
        assert_eq!(b.take(10).reports, vec![r("a", TaskState::Running, 2)]);
    }

    #[test]
    fn unassigned_tasks_are_pruned() {
        let b = ReportBook::default();
        b.push(r("a", TaskState::Running, 1));
        b.push(r("b", TaskState::Running, 1));
        b.retain_tasks(|t| t == "b");
        assert_eq!(b.take(10).reports, vec![r("b", TaskState::Running, 1)]);
    }
}
