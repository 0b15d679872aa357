//! Launches seen from outside the cluster: every task container the Docker engine creates
//! for the suite's agents, from the engine's own event stream (started before the workload,
//! read as it happens: the engine keeps only its last few hundred events). After healing,
//! every one must belong to a task the cluster committed. A launch decided by a leader that
//! lost its majority (isolated, paused, partitioned) would start a container for a task no
//! committed entry holds; agents are meant to run only what their assignment stream sends
//! from applied (so committed) state, and this checks that from the engine's side.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use berth_proto::v1::Task;

use crate::checks::CheckResult;

pub const CHECK_NAME: &str = "every task container the engine started belongs to a committed task";

/// The engine's `create` events for containers labelled with a Berth task.
pub struct EngineLaunches {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Drop for EngineLaunches {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EngineLaunches {
    pub fn start() -> Result<Self> {
        let mut child = Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--filter",
                "label=berth.task",
                "--format",
                r#"{{index .Actor.Attributes "berth.agent"}} {{index .Actor.Attributes "berth.task"}}"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running `docker events`")?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("`docker events` has no output"))?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(EngineLaunches {
            child,
            lines,
            reader: Some(reader),
        })
    }

    /// Stops reading; agent → task ids whose containers the engine created.
    pub fn finish(mut self) -> BTreeMap<String, BTreeSet<String>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut by_agent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        for line in lines.iter() {
            if let Some((agent, task)) = line.trim().split_once(' ') {
                by_agent
                    .entry(agent.to_string())
                    .or_default()
                    .insert(task.to_string());
            }
        }
        by_agent
    }
}

/// Every container of `agents` must be for one of `committed` (the cluster's tasks, read
/// after healing: STOPPED ones are kept an hour, longer than a run).
pub fn check(
    launched: &BTreeMap<String, BTreeSet<String>>,
    agents: &[String],
    committed: &[Task],
) -> CheckResult {
    let known: BTreeSet<&str> = committed.iter().map(|t| t.task_id.as_str()).collect();
    let mut violations = Vec::new();
    let mut containers = 0;
    for agent in agents {
        for task in launched.get(agent).into_iter().flatten() {
            containers += 1;
            if !known.contains(task.as_str()) {
                violations.push(format!(
                    "agent {agent} started a container for task {task}, which no committed entry holds"
                ));
            }
        }
    }
    let detail = format!(
        "{containers} task containers created on {} agents (the engine's create events), {} tasks in the cluster",
        agents.len(),
        committed.len()
    );
    if containers == 0 {
        return CheckResult::new(
            CHECK_NAME,
            vec![
                "the engine reported no task container at all: the event stream saw nothing".into(),
            ],
            detail,
        );
    }
    CheckResult::new(CHECK_NAME, violations, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            task_id: id.into(),
            ..Default::default()
        }
    }

    fn launched(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, t) in pairs {
            m.entry(a.to_string()).or_default().insert(t.to_string());
        }
        m
    }

    #[test]
    fn a_container_for_a_task_no_entry_holds_is_a_violation() {
        let agents = vec!["compose-a".to_string(), "compose-b".to_string()];
        let seen = launched(&[("compose-a", "t1"), ("compose-b", "t2"), ("other", "t9")]);
        let ok = check(&seen, &agents, &[task("t1"), task("t2")]);
        assert_eq!(ok.ok, Some(true), "{:?}", ok.violations);
        let bad = check(&seen, &agents, &[task("t1")]);
        assert_eq!(bad.ok, Some(false));
        assert!(bad.violations[0].contains("t2"), "{:?}", bad.violations);
    }

    #[test]
    fn an_event_stream_that_saw_nothing_fails_rather_than_passing_empty() {
        let agents = vec!["compose-a".to_string()];
        let r = check(&BTreeMap::new(), &agents, &[task("t1")]);
        assert_eq!(r.ok, Some(false));
    }
}
