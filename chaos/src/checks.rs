//! What the suite proves after healing: each check is a function of the history and the
//! cluster's final state, and returns a named result with its evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::{
    Agent, DescribeTasksRequest, ListAgentsRequest, ListTasksRequest, PlacementConstraint,
    RunTaskRequest, StopTaskRequest, Task,
};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::history::{Answer, Call, Kind, Op, TaskSeen};
use crate::linear::{self, Entry, TaskModel, TaskOp, TaskView, Verdict};

/// Search steps allowed per task history; far above what any real history needs.
const LINEARIZABILITY_BUDGET: u64 = 2_000_000;
/// Violations listed in full per check; the rest are counted.
const SHOW: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// `None`: not applicable in this run (said why in `detail`).
    pub ok: Option<bool>,
    pub detail: String,
    pub violations: Vec<String>,
}

impl CheckResult {
    pub fn new(name: &str, violations: Vec<String>, detail: String) -> Self {
        CheckResult {
            name: name.to_string(),
            ok: Some(violations.is_empty()),
            detail,
            violations: truncate(violations),
        }
    }
    pub fn skipped(name: &str, why: &str) -> Self {
        CheckResult {
            name: name.to_string(),
            ok: None,
            detail: why.to_string(),
            violations: Vec::new(),
        }
    }
}

fn truncate(mut v: Vec<String>) -> Vec<String> {
    if v.len() > SHOW {
        let more = v.len() - SHOW;
        v.truncate(SHOW);
        v.push(format!("… and {more} more"));
    }
    v
}

pub fn lifecycle_rank(s: &str) -> u8 {
    match s {
        "PROVISIONING" => 0,
        "PENDING" => 1,
        "ACTIVATING" => 2,
        "RUNNING" => 3,
        "DEACTIVATING" => 4,
        "STOPPING" => 5,
        "DEPROVISIONING" => 6,
        "STOPPED" => 7,
        // Unknown statuses sort last, and are reported by the monotonicity check.
        _ => u8::MAX,
    }
}

pub fn view(t: &TaskSeen) -> TaskView {
    TaskView {
        version: t.version,
        stop_desired: t.desired_status == "STOPPED",
        status: lifecycle_rank(&t.last_status),
    }
}

// ------------------------------------------------------------------ final state

/// Every task of the cluster, read linearizably page by page (`started_by` filters when
/// not empty). Retried across endpoints: the cluster was just healed.
pub async fn list_tasks(
    endpoints: &[(String, Api)],
    started_by: &str,
    agent_id: &str,
) -> Result<(Vec<Task>, u64)> {
    let mut last_err = anyhow!("no endpoint");
    for attempt in 0..(endpoints.len() * 4) {
        let (_, ch) = &endpoints[attempt % endpoints.len()];
        let mut out = Vec::new();
        let mut token = String::new();
        let mut revision = 0;
        let r: Result<()> = async {
            loop {
                let r = TasksClient::new(ch.clone())
                    .list(ListTasksRequest {
                        started_by: started_by.to_string(),
                        agent_id: agent_id.to_string(),
                        max_results: 1000,
                        next_token: token.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| anyhow!("ListTasks: {}", s.message()))?
                    .into_inner();
                revision = revision.max(r.revision);
                out.extend(r.tasks);
                if r.next_token.is_empty() {
                    return Ok(());
                }
                token = r.next_token;
            }
        }
        .await;
        match r {
            Ok(()) => return Ok((out, revision)),
            Err(e) => last_err = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_err)
}

/// Every agent, page by page (Agents.List is paged like the other lists).
pub async fn list_agents(ch: &Api, stale: bool) -> Result<(Vec<Agent>, u64)> {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut revision = 0;
    loop {
        let r = AgentsClient::new(ch.clone())
            .list(ListAgentsRequest {
                stale,
                max_results: 1000,
                next_token: token.clone(),
            })
            .await
            .map_err(|s| anyhow!("Agents.List: {}", s.message()))?
            .into_inner();
        revision = revision.max(r.revision);
        out.extend(r.agents);
        if r.next_token.is_empty() {
            return Ok((out, revision));
        }
        token = r.next_token;
    }
}

// ------------------------------------------------------------------ checks

/// Every acknowledged RunTask's tasks exist exactly once; a token's tasks are exactly its
/// acknowledged answer (never two sets for one token); an unacknowledged token made at most
/// the count it asked for; no task of this run carries a token this run never sent.
pub fn exactly_once(ops: &[Op], final_tasks: &[Task]) -> CheckResult {
    let mut v = Vec::new();
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_token: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in final_tasks {
        *by_id.entry(&t.task_id).or_default() += 1;
        by_token
            .entry(&t.client_token)
            .or_default()
            .insert(&t.task_id);
    }
    for (id, n) in &by_id {
        if *n > 1 {
            v.push(format!("task {id} listed {n} times"));
        }
    }
    // token → (count asked, acknowledged answers)
    let mut tokens: BTreeMap<&str, (u32, Vec<BTreeSet<&str>>)> = BTreeMap::new();
    for op in ops {
        if let Call::Run { token, count, .. } = &op.call {
            let e = tokens.entry(token).or_insert((*count, Vec::new()));
            if let (Kind::Ok, Some(Answer::Run { tasks, .. })) = (op.kind(), &op.answer) {
                e.1.push(tasks.iter().map(|t| t.id.as_str()).collect());
            }
        }
    }
    let mut acked_tasks = 0usize;
    for (token, (count, answers)) in &tokens {
        let have = by_token.get(token).cloned().unwrap_or_default();
        if let Some(first) = answers.first() {
            acked_tasks += first.len();
            for a in &answers[1..] {
                if a != first {
                    v.push(format!(
                        "token {token}: two different answers {first:?} and {a:?}"
                    ));
                }
            }
            for id in first {
                if !by_id.contains_key(id) {
                    v.push(format!("token {token}: acknowledged task {id} is gone"));
                }
            }
            if &have != first {
                v.push(format!(
                    "token {token}: acknowledged {first:?}, cluster holds {have:?}"
                ));
            }
        } else if have.len() as u32 > *count {
            v.push(format!(
                "token {token} (outcome unknown): asked {count}, cluster holds {}",
                have.len()
            ));
        }
    }
    for t in final_tasks {
        if !tokens.contains_key(t.client_token.as_str()) {
            v.push(format!(
                "task {} has token `{}` this run never sent",
                t.task_id, t.client_token
            ));
        }
    }
    let unknown = tokens.values().filter(|(_, a)| a.is_empty()).count();
    let detail = format!(
        "{} tokens ({} acknowledged, {unknown} never acknowledged), {acked_tasks} acknowledged tasks, {} tasks in the cluster",
        tokens.len(),
        tokens.len() - unknown,
        final_tasks.len()
    );
    CheckResult::new(
        "acknowledged RunTasks exist exactly once, one task set per token",
        v,
        detail,
    )
}

/// The observations of each task, as (invoke, complete, what was seen). A stop or read
/// refused NOT_FOUND is an observation of absence.
fn observations(ops: &[Op]) -> BTreeMap<String, Vec<Entry<TaskOp>>> {
    // Create: the earliest acknowledged answer for each task.
    let mut out: BTreeMap<String, Vec<Entry<TaskOp>>> = BTreeMap::new();
    let mut created: BTreeMap<String, (u64, u64, TaskView)> = BTreeMap::new();
    for op in ops {
        let Some((end, Kind::Ok)) = op.end else {
            if let (Some((end, Kind::Fail)), Some(err)) = (op.end, &op.error) {
                if err.starts_with("NotFound") {
                    if let Call::Stop { task } | Call::Read { task } = &op.call {
                        out.entry(task.clone()).or_default().push(Entry {
                            invoke: op.invoke,
                            complete: Some(end),
                            op: TaskOp::Read(None),
                        });
                    }
                }
            }
            continue;
        };
        match (&op.call, &op.answer) {
            (Call::Run { .. }, Some(Answer::Run { tasks, .. })) => {
                for t in tasks {
                    let e = created
                        .entry(t.id.clone())
                        .or_insert((op.invoke, end, view(t)));
                    if end < e.1 {
                        *e = (op.invoke, end, view(t));
                    }
                }
            }
            (Call::Stop { task }, Some(Answer::Stop { task: t, .. })) if &t.id == task => {
                out.entry(task.clone()).or_default().push(Entry {
                    invoke: op.invoke,
                    complete: Some(end),
                    op: TaskOp::Stop(view(t)),
                });
            }
            (Call::Read { task }, Some(Answer::Read { task: t, .. })) => {
                out.entry(task.clone()).or_default().push(Entry {
                    invoke: op.invoke,
                    complete: Some(end),
                    op: TaskOp::Read(t.as_ref().map(view)),
                });
            }
            _ => {}
        }
    }
    for (id, (invoke, complete, v)) in created {
        out.entry(id).or_default().push(Entry {
            invoke,
            complete: Some(complete),
            op: TaskOp::Create(v),
        });
    }
    out
}

/// Task states only moved forward: of two observations one after the other in real time,
/// the later shows the same or a later version, lifecycle status and desired status; and
/// every status is one of the lifecycle's.
pub fn forward_only(ops: &[Op]) -> CheckResult {
    let mut v = Vec::new();
    let obs = observations(ops);
    let mut pairs = 0u64;
    for (task, entries) in &obs {
        let seen: Vec<(u64, u64, TaskView)> = entries
            .iter()
            .filter_map(|e| {
                let c = e.complete?;
                match e.op {
                    TaskOp::Create(x) | TaskOp::Stop(x) | TaskOp::Read(Some(x)) => {
                        Some((e.invoke, c, x))
                    }
                    TaskOp::Read(None) => None,
                }
            })
            .collect();
        for s in &seen {
            if s.2.status == u8::MAX {
                v.push(format!("task {task}: unknown lastStatus"));
            }
        }
        for a in &seen {
            for b in &seen {
                if a.1 < b.0 {
                    pairs += 1;
                    if !a.2.may_precede(&b.2) {
                        v.push(format!("task {task}: {:?} then {:?}", a.2, b.2));
                    }
                }
            }
        }
    }
    CheckResult::new(
        "task states only moved forward",
        v,
        format!("{} tasks, {pairs} ordered pairs of observations", obs.len()),
    )
}

/// Each task's history of creation, stops and linearizable reads is linearizable.
pub fn linearizable(ops: &[Op]) -> CheckResult {
    let mut v = Vec::new();
    let obs = observations(ops);
    let (mut unknown, mut checked, mut max_len) = (0, 0, 0);
    for (task, entries) in &obs {
        max_len = max_len.max(entries.len());
        checked += 1;
        match linear::check(&TaskModel::Absent, entries, LINEARIZABILITY_BUDGET) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { stuck_after } => v.push(format!(
                "task {task}: no linearization ({} operations, stuck after {stuck_after}): {}",
                entries.len(),
                entries
                    .iter()
                    .map(|e| format!(
                        "[{:.3}-{:.3}] {:?}",
                        e.invoke as f64 / 1e9,
                        e.complete.unwrap_or(0) as f64 / 1e9,
                        e.op
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Verdict::Unknown { .. } => unknown += 1,
        }
    }
    let mut r = CheckResult::new(
        "single-task histories are linearizable (Wing–Gong)",
        v,
        format!("{checked} task histories, longest {max_len} operations, {unknown} beyond the search budget"),
    );
    if unknown > 0 && r.ok == Some(true) {
        r.detail.push_str(" (not proven for those)");
    }
    r
}

/// No agent's used capacity exceeds its capacity in any state seen (samples during the run
/// and each node's final state), the used figures equal the sum over the agent's live
/// tasks, and — with real agents — the task containers running under each agent's label
/// fit its capacity.
pub fn capacity(
    samples: &[String],
    per_node: &[(u64, Result<Vec<Agent>>)],
    recount: &[String],
    docker: &[String],
    detail_extra: &str,
) -> CheckResult {
    let mut v: Vec<String> = samples.to_vec();
    let mut agents = 0;
    // A node that cannot be asked is not evidence of oversubscription; it is named in the
    // detail (and fails the liveness and convergence checks on its own).
    let mut unasked = Vec::new();
    for (node, r) in per_node {
        match r {
            Ok(list) => {
                for a in list {
                    agents += 1;
                    if a.used_cpu > a.cpu || a.used_memory > a.memory {
                        v.push(format!(
                            "node {node}: agent {} uses {}/{} CPU, {}/{} MiB",
                            a.agent_id, a.used_cpu, a.cpu, a.used_memory, a.memory
                        ));
                    }
                }
            }
            Err(e) => unasked.push(format!("node {node} ({e:#})")),
        }
    }
    v.extend(recount.iter().cloned());
    v.extend(docker.iter().cloned());
    let unasked = if unasked.is_empty() {
        String::new()
    } else {
        format!("; not asked at the end: {}", unasked.join(", "))
    };
    CheckResult::new(
        "no agent oversubscribed",
        v,
        format!(
            "{} samples in flight, {agents} agent records across nodes at the end{detail_extra}{unasked}",
            samples.len()
        ),
    )
}

/// Re-adds each agent's live tasks and compares with its used figures, both read at one
/// revision (retried until they are).
pub async fn recount(endpoints: &[(String, Api)]) -> (Vec<String>, String) {
    let mut v = Vec::new();
    // Agents keep reporting, so the two reads may land at different revisions: retried.
    for i in 0..30 {
        let Ok((agents, rev_a)) = list_agents(&endpoints[i % endpoints.len()].1, false).await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let Ok((tasks, rev_t)) = list_tasks(endpoints, "", "").await else {
            continue;
        };
        if rev_a != rev_t {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let mut sum: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
        for t in &tasks {
            if t.last_status != "STOPPED" {
                let e = sum.entry(&t.agent_id).or_default();
                e.0 += t.cpu;
                e.1 += t.memory;
                e.2 += 1;
            }
        }
        for a in &agents {
            let (cpu, mem, n) = sum.get(a.agent_id.as_str()).copied().unwrap_or_default();
            if (cpu, mem, n) != (a.used_cpu, a.used_memory, a.task_count) {
                v.push(format!(
                    "agent {}: records {} CPU / {} MiB / {} tasks, its live tasks add up to {cpu} / {mem} / {n}",
                    a.agent_id, a.used_cpu, a.used_memory, a.task_count
                ));
            }
        }
        return (
            v,
            format!(", recount of {} tasks at revision {rev_t}", tasks.len()),
        );
    }
    (v, ", recount skipped (no quiet revision)".to_string())
}

/// Every agent whose process still runs is READY at the end and takes a task: one task
/// pinned to it (`memberOf agent.id`) must be placed there and reach RUNNING, then is
/// stopped. Under `started_by` of its own, so the run's other checks do not count it.
pub async fn agents_serve(
    endpoints: &[(String, Api)],
    agent_ids: &[String],
    family: &str,
    started_by: &str,
) -> CheckResult {
    let name = "every running agent is READY and takes a task at the end";
    let mut v = Vec::new();
    let mut done = Vec::new();
    for id in agent_ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        let mut i = 0usize;
        let mut made_room = false;
        let outcome: Result<String, String> = loop {
            let ch = &endpoints[i % endpoints.len()].1;
            i += 1;
            let agent = list_agents(ch, false)
                .await
                .map(|(agents, _)| agents.into_iter().find(|a| &a.agent_id == id));
            let status = match &agent {
                Ok(Some(a)) if a.status == "READY" => {
                    // The workload may have filled the agent: stop one of its tasks (the
                    // workload is over) and wait for the capacity to come back.
                    let room = a.cpu - a.used_cpu.min(a.cpu) >= CHECK_TASK_CPU
                        && a.memory - a.used_memory.min(a.memory) >= CHECK_TASK_MEMORY;
                    if room {
                        break place_on(ch, id, family, started_by).await;
                    }
                    if !made_room {
                        made_room = stop_one_on(ch, id).await;
                    }
                    format!("READY but full ({}/{} MiB)", a.used_memory, a.memory)
                }
                Ok(Some(a)) => a.status.clone(),
                Ok(None) => "not registered".into(),
                Err(e) => format!("unknown ({e:#})"),
            };
            if tokio::time::Instant::now() > deadline {
                break Err(format!("agent {id} is {status} at the end"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match outcome {
            Ok(task) => done.push((id.clone(), task)),
            Err(e) => v.push(e),
        }
    }
    // Clean up; a stop that fails only leaves a sleeping task of another startedBy.
    for (_, task) in &done {
        for (_, ch) in endpoints {
            let stop = TasksClient::new(ch.clone())
                .stop(StopTaskRequest {
                    task_id: task.clone(),
                    reason: "chaos: agent check done".into(),
                })
                .await;
            if stop.is_ok() {
                break;
            }
        }
    }
    CheckResult::new(
        name,
        v,
        format!(
            "{} agents READY with a task RUNNING on each: {}",
            done.len(),
            done.iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// The size of the workload's task definition, which the agent check runs.
const CHECK_TASK_CPU: u32 = 256;
const CHECK_TASK_MEMORY: u32 = 512;

/// Stops one running task on `agent`; whether one was stopped.
async fn stop_one_on(ch: &Api, agent: &str) -> bool {
    let listed = TasksClient::new(ch.clone())
        .list(ListTasksRequest {
            agent_id: agent.to_string(),
            desired_status: "RUNNING".into(),
            max_results: 1,
            ..Default::default()
        })
        .await;
    let Some(task) = listed
        .ok()
        .and_then(|r| r.into_inner().tasks.into_iter().next())
    else {
        return false;
    };
    TasksClient::new(ch.clone())
        .stop(StopTaskRequest {
            task_id: task.task_id,
            reason: "chaos: room for the agent check".into(),
        })
        .await
        .is_ok()
}

/// Runs one task pinned to `agent` and waits for it to run; its id.
async fn place_on(ch: &Api, agent: &str, family: &str, started_by: &str) -> Result<String, String> {
    let r = TasksClient::new(ch.clone())
        .run(RunTaskRequest {
            task_definition: family.to_string(),
            count: 1,
            client_token: format!("{started_by}-{agent}"),
            started_by: started_by.to_string(),
            placement_constraints: vec![PlacementConstraint {
                r#type: "memberOf".into(),
                expression: format!("agent.id == \"{agent}\""),
            }],
            ..Default::default()
        })
        .await
        .map_err(|s| format!("agent {agent}: RunTask failed: {}", s.message()))?
        .into_inner();
    let Some(task) = r.tasks.first() else {
        return Err(format!(
            "agent {agent} is READY but a task pinned to it was not placed: {:?}",
            r.failures.iter().map(|f| &f.detail).collect::<Vec<_>>()
        ));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = TasksClient::new(ch.clone())
            .describe(DescribeTasksRequest {
                task_ids: vec![task.task_id.clone()],
                stale: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().tasks.into_iter().next());
        let status = seen.map(|t| t.last_status).unwrap_or_default();
        if status == "RUNNING" {
            return Ok(task.task_id.clone());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "agent {agent}: the task placed on it is {status} 30 s later, not RUNNING"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every control node ends at the same state: the same digest at the same applied index.
/// Polled until the indexes agree (late entries may still be applying).
pub async fn converged(cluster: &Cluster, within: Duration) -> CheckResult {
    let name = "all control nodes at the same state (digest at equal applied index)";
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let infos = cluster.infos(true).await;
        let ok: Vec<_> = infos
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|i| (*id, i)))
            .collect();
        if ok.len() == infos.len() {
            let applied: BTreeSet<u64> = ok.iter().map(|(_, i)| i.applied_index).collect();
            if applied.len() == 1 {
                let digests: BTreeSet<u64> = ok.iter().map(|(_, i)| i.state_digest).collect();
                let desc = ok
                    .iter()
                    .map(|(id, i)| {
                        format!(
                            "node {id}: applied {} digest {:016x}",
                            i.applied_index, i.state_digest
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return if digests.len() == 1 {
                    CheckResult::new(name, vec![], desc)
                } else {
                    CheckResult::new(name, vec![format!("digests differ: {desc}")], String::new())
                };
            }
        }
        let last = crate::cluster::describe_infos(&infos);
        if tokio::time::Instant::now() > deadline {
            return CheckResult::new(
                name,
                vec![format!("no common applied index within {within:?}: {last}")],
                String::new(),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, token: &str, version: u64, desired: &str, last: &str) -> TaskSeen {
        TaskSeen {
            id: id.into(),
            token: token.into(),
            agent: "a".into(),
            version,
            last_status: last.into(),
            desired_status: desired.into(),
            cpu: 256,
            memory: 512,
        }
    }
    fn op(call: Call, invoke: u64, end: u64, kind: Kind, answer: Option<Answer>) -> Op {
        Op {
            process: 0,
            call,
            invoke,
            end: Some((end, kind)),
            answer,
            error: None,
        }
    }
    fn wire(id: &str, token: &str) -> Task {
        Task {
            task_id: id.into(),
            client_token: token.into(),
            ..Default::default()
        }
    }

    #[test]
    fn exactly_once_catches_duplicates_and_losses() {
        let run = |token: &str, ids: &[&str]| {
            op(
                Call::Run {
                    token: token.into(),
                    count: 1,
                    attempt: 0,
                },
                0,
                1,
                Kind::Ok,
                Some(Answer::Run {
                    tasks: ids
                        .iter()
                        .map(|i| seen(i, token, 1, "RUNNING", "PROVISIONING"))
                        .collect(),
                    failures: vec![],
                    revision: 1,
                }),
            )
        };
        let ops = vec![run("t1", &["a"]), run("t2", &["b"])];
        assert_eq!(
            exactly_once(&ops, &[wire("a", "t1"), wire("b", "t2")]).ok,
            Some(true)
        );
        // Lost acknowledged task.
        assert_eq!(exactly_once(&ops, &[wire("a", "t1")]).ok, Some(false));
        // A second task for one token (a retry that ran twice).
        assert_eq!(
            exactly_once(&ops, &[wire("a", "t1"), wire("c", "t1"), wire("b", "t2")]).ok,
            Some(false)
        );
        // A token answered twice with different tasks.
        let mut ops2 = ops.clone();
        ops2.push(run("t1", &["z"]));
        assert_eq!(
            exactly_once(&ops2, &[wire("a", "t1"), wire("b", "t2")]).ok,
            Some(false)
        );
        // An unknown outcome may have made its task, once.
        let info = op(
            Call::Run {
                token: "t3".into(),
                count: 1,
                attempt: 0,
            },
            0,
            1,
            Kind::Info,
            None,
        );
        let mut ops3 = ops.clone();
        ops3.push(info.clone());
        ops3.push(info);
        assert_eq!(
            exactly_once(&ops3, &[wire("a", "t1"), wire("b", "t2"), wire("x", "t3")]).ok,
            Some(true)
        );
        assert_eq!(
            exactly_once(
                &ops3,
                &[
                    wire("a", "t1"),
                    wire("b", "t2"),
                    wire("x", "t3"),
                    wire("y", "t3")
                ]
            )
            .ok,
            Some(false)
        );
    }

    #[test]
    fn stale_read_after_stop_is_caught_by_both_checks() {
        let ops = vec![
            op(
                Call::Run {
                    token: "t".into(),
                    count: 1,
                    attempt: 0,
                },
                0,
                10,
                Kind::Ok,
                Some(Answer::Run {
                    tasks: vec![seen("a", "t", 5, "RUNNING", "PROVISIONING")],
                    failures: vec![],
                    revision: 5,
                }),
            ),
            op(
                Call::Stop { task: "a".into() },
                20,
                30,
                Kind::Ok,
                Some(Answer::Stop {
                    task: seen("a", "t", 8, "STOPPED", "PROVISIONING"),
                    revision: 8,
                }),
            ),
            op(
                Call::Read { task: "a".into() },
                40,
                50,
                Kind::Ok,
                Some(Answer::Read {
                    task: Some(seen("a", "t", 5, "RUNNING", "PROVISIONING")),
                    revision: 7,
                }),
            ),
        ];
        assert_eq!(linearizable(&ops).ok, Some(false));
        assert_eq!(forward_only(&ops).ok, Some(false));
        // Without the stale read, fine.
        assert_eq!(linearizable(&ops[..2]).ok, Some(true));
        assert_eq!(forward_only(&ops[..2]).ok, Some(true));
    }
}
