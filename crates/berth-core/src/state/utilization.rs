//! Measured use in the replicated state: the latest window and running totals per task, as
//! its agent summarized them. Soft figures: a window for a task the agent no longer holds is
//! skipped, not refused, and a task's figures leave with the task.

use super::ClusterState;
use crate::command::{CommandResult, Outcome};
use crate::error::Error;
use crate::model::{Millis, TaskState};
use crate::utilization::{TaskUtilization, Window};

/// Windows per RecordUtilization command (an agent holds at most this many tasks' worth).
pub const MAX_WINDOWS: usize = 10_000;

impl ClusterState {
    pub(super) fn record_utilization(
        &mut self,
        agent_id: &str,
        epoch: u64,
        windows: &[Window],
    ) -> CommandResult {
        self.check_registration(agent_id, epoch, "utilization")?;
        if windows.len() > MAX_WINDOWS {
            return Err(Error::invalid(format!(
                "{} utilization windows in one report; at most {MAX_WINDOWS}",
                windows.len()
            )));
        }
        for w in windows {
            w.check()?;
        }
        let now = self.clock;
        for w in windows {
            let held = self
                .tasks
                .get(&w.task_id)
                .is_some_and(|t| t.agent_id == agent_id && t.last_status != TaskState::Stopped);
            if !held {
                continue;
            }
            match self.utilization.get_mut(&w.task_id) {
                Some(u) => {
                    u.add(w.clone(), now);
                }
                None => {
                    self.utilization
                        .insert(w.task_id.clone(), TaskUtilization::new(w.clone(), now));
                }
            }
        }
        Ok(Outcome::Reported)
    }

    /// A task's measured use, once its agent has sent a window.
    pub fn task_utilization(&self, task_id: &str) -> Option<&TaskUtilization> {
        self.utilization.get(task_id)
    }

    /// A live task's latest window, if it is recent at `now`: reported within two of its own
    /// windows and five seconds. An agent that stopped reporting has no current figures.
    pub fn current_utilization(&self, task_id: &str, now: Millis) -> Option<&Window> {
        let u = self.utilization.get(task_id)?;
        let t = self.tasks.get(task_id)?;
        let live = t.last_status != TaskState::Stopped;
        let fresh = now <= u.received_at + 2 * u.last.duration() + 5_000;
        (live && fresh).then_some(&u.last)
    }

    /// What an agent's tasks use now (CPU units, MiB): the sum of their current windows'
    /// averages.
    pub fn agent_used(&self, agent_id: &str, now: Millis) -> (u32, u32) {
        let Some(ids) = self.agent_tasks.get(agent_id) else {
            return (0, 0);
        };
        ids.iter()
            .filter_map(|id| self.current_utilization(id, now))
            .fold((0u32, 0u32), |(c, m), w| {
                (c.saturating_add(w.cpu_avg), m.saturating_add(w.memory_avg))
            })
    }
}
