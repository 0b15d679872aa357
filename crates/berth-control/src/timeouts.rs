//! The control plane's backstop for task time limits. Agents enforce a task's start timeout
//! and maximum run time themselves, on their monotonic clocks, so a task on an agent cut off
//! from the control plane still stops on time. This loop, on the leader, stops what an agent
//! did not (an agent stuck, or one running a release without limits) once the limit, the
//! stop grace and a margin have passed, so the control plane's view never keeps a task past
//! its limit for long.

use std::sync::Arc;
use std::time::Duration;

use berth_core::limits::{DEFAULT_STOP_TIMEOUT_S, TIMEOUT_BACKSTOP_MS};
use berth_core::state::TaskFilter;
use berth_core::{ClusterState, DesiredStatus, StopCode, TaskState};

use crate::node::{Node, WriteRequest};

/// How often tasks are looked at: the backstop is coarse by design.
const TICK: Duration = Duration::from_secs(5);

/// A task past its limit, with the stop it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overdue {
    pub task_id: String,
    pub code: StopCode,
    pub reason: String,
}

/// Tasks past a limit at `now` (the leader's clock) by more than the backstop margin.
pub(crate) fn overdue(state: &ClusterState, now: u64) -> Vec<Overdue> {
    let filter = TaskFilter {
        desired_status: Some(DesiredStatus::Running),
        ..Default::default()
    };
    let mut out = Vec::new();
    for t in state.tasks(&filter, None) {
        if t.last_status < TaskState::Running {
            let limit = t.timeouts.start_timeout_ms();
            if now > t.created_at + limit + TIMEOUT_BACKSTOP_MS {
                out.push(Overdue {
                    task_id: t.id.clone(),
                    code: StopCode::TaskFailedToStart,
                    reason: format!(
                        "StartTimeout: the task did not reach RUNNING within {} (stopped by \
                         the control plane)",
                        humantime::format_duration(Duration::from_millis(limit))
                    ),
                });
            }
            continue;
        }
        let (Some(limit), Some(started)) = (t.timeouts.max_runtime_ms(), t.started_at) else {
            continue;
        };
        // The agent's SIGTERM-to-SIGKILL grace: the longest stopTimeout of its containers.
        let grace = state
            .task_definition(&t.family, Some(t.revision))
            .ok()
            .and_then(|d| {
                d.container_definitions
                    .iter()
                    .map(|c| c.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT_S))
                    .max()
            })
            .unwrap_or(DEFAULT_STOP_TIMEOUT_S);
        if now > started + limit + u64::from(grace) * 1000 + TIMEOUT_BACKSTOP_MS {
            out.push(Overdue {
                task_id: t.id.clone(),
                code: StopCode::EssentialContainerExited,
                reason: format!(
                    "Timeout: the task ran past its maximum run time of {} (stopped by the \
                     control plane)",
                    humantime::format_duration(Duration::from_millis(limit))
                ),
            });
        }
    }
    out
}

pub(crate) async fn run(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = node.shutdown.wait() => return,
        }
        if !node.is_leader() {
            continue;
        }
        let due = {
            let s = node.state.read();
            overdue(&s.state, crate::node::now_ms())
        };
        for o in due {
            let task_id = o.task_id.clone();
            let req = WriteRequest::StopOverdueTask {
                task_id: o.task_id,
                code: o.code,
                reason: o.reason,
            };
            if let Err(e) = node.write(req).await {
                tracing::debug!(task = %task_id, error = %e, "stopping an overdue task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::command::{AgentRegistration, Placement, RunTasks};
    use berth_core::{
        Batch, Command, ContainerDefinition, TaskDefinitionSpec, TaskReport, Timeouts,
    };

    fn state(timeouts: Timeouts, running_at: Option<u64>) -> ClusterState {
        let mut s = ClusterState::new();
        let spec = TaskDefinitionSpec {
            family: "job".into(),
            cpu: Some(256),
            memory: Some(512),
            network_mode: None,
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "x".into(),
                stop_timeout: Some(2),
                ..Default::default()
            }],
            timeouts,
        };
        let mut commands = vec![
            Command::RegisterTaskDefinition { spec },
            Command::RegisterAgent(AgentRegistration {
                id: "a1".into(),
                cpu: 4096,
                memory: 8192,
                attributes: Default::default(),
                address: String::new(),
            }),
            Command::RunTasks(RunTasks {
                family: "job".into(),
                revision: 1,
                client_token: None,
                fingerprint: 0,
                started_by: String::new(),
                group: "family:job".into(),
                overrides: vec![],
                placements: vec![Placement {
                    task_id: "t1".into(),
                    agent_id: "a1".into(),
                }],
                failures: vec![],
                service: None,
                run: None,
                timeouts: Timeouts::default(),
                retry: None,
            }),
        ];
        if let Some(at) = running_at {
            commands.push(Command::ReportTasks {
                agent_id: "a1".into(),
                epoch: 1,
                reports: vec![TaskReport {
                    task_id: "t1".into(),
                    last_status: TaskState::Running,
                    at,
                    containers: vec![],
                    stop_code: None,
                    stopped_reason: None,
                }],
            });
        }
        s.apply(
            1,
            &Batch {
                now: 1_000,
                commands,
            },
        );
        s
    }

    #[test]
    fn a_task_that_never_started_is_stopped_after_its_start_timeout_and_the_margin() {
        let s = state(
            Timeouts {
                start_timeout: Some(60),
                max_runtime: None,
            },
            None,
        );
        let limit = 1_000 + 60_000 + TIMEOUT_BACKSTOP_MS;
        assert!(overdue(&s, limit).is_empty());
        let o = overdue(&s, limit + 1);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].code, StopCode::TaskFailedToStart);
        assert!(o[0].reason.starts_with("StartTimeout"), "{}", o[0].reason);
    }

    #[test]
    fn a_task_past_its_maximum_run_time_and_grace_is_stopped() {
        let s = state(
            Timeouts {
                start_timeout: None,
                max_runtime: Some(10),
            },
            Some(5_000),
        );
        let limit = 5_000 + 10_000 + 2_000 + TIMEOUT_BACKSTOP_MS;
        assert!(overdue(&s, limit).is_empty());
        let o = overdue(&s, limit + 1);
        assert_eq!(o.len(), 1);
        assert!(o[0].reason.starts_with("Timeout"), "{}", o[0].reason);
        // Without a maximum run time a task runs as long as it likes.
        let s = state(Timeouts::default(), Some(5_000));
        assert!(overdue(&s, u64::MAX / 2).is_empty());
    }
}
