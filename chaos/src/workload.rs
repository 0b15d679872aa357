//! Concurrent clients on the public API: RunTask with client tokens (retried with the same
//! token when the outcome is unknown), StopTask, and linearizable reads of single tasks.
//! Every call is recorded in the history before it is sent and when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::bearer::Api;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::{DescribeTasksRequest, RunTaskRequest, StopTaskRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::history::{Answer, Call, History, Kind, TaskSeen};

/// Retries of one RunTask token after an unknown outcome, before the worker moves on
/// (the token's fate is then settled by the final checks).
const RUN_RETRIES: u32 = 3;
/// Known tasks kept for stops and reads; the oldest are forgotten past this (bounded).
const KNOWN_TASKS_MAX: usize = 4096;

pub struct WorkloadConfig {
    pub workers: u32,
    pub family: String,
    /// Every RunTask carries this `startedBy`, so the checks find this run's tasks.
    pub started_by: String,
    pub seed: u64,
    /// Pause between a worker's operations (ms, uniform in the range).
    pub think_ms: (u64, u64),
    /// Above this many live tasks known to the workers, stops are favoured over runs so the
    /// agents' capacity is not simply exhausted.
    pub live_target: usize,
}

/// Tasks the workers learnt of from RunTask answers: what stops and reads pick from.
#[derive(Default)]
pub struct Known {
    tasks: Mutex<Vec<(String, bool)>>,
}

impl Known {
    fn add(&self, id: &str) {
        let mut g = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= KNOWN_TASKS_MAX {
            g.remove(0);
        }
        g.push((id.to_string(), false));
    }
    fn pick(&self, rng: &mut StdRng, live_only: bool) -> Option<String> {
        let g = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<&(String, bool)> = g.iter().filter(|(_, s)| !live_only || !s).collect();
        if live.is_empty() {
            return None;
        }
        // Favour recent tasks: they are the ones still moving.
        let n = live.len();
        let i = if rng.gen_bool(0.7) {
            n - 1 - rng.gen_range(0..n.min(64))
        } else {
            rng.gen_range(0..n)
        };
        Some(live[i].0.clone())
    }
    fn mark_stopped(&self, id: &str) {
        let mut g = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.iter_mut().rev().find(|(t, _)| t == id) {
            e.1 = true;
        }
    }
    fn live(&self) -> usize {
        let g = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().filter(|(_, s)| !s).count()
    }
}

/// Codes that mean the call certainly had no effect: the server refused it as such.
fn definite_failure(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::ResourceExhausted
    )
}

fn classify(s: &tonic::Status) -> Kind {
    if definite_failure(s.code()) {
        Kind::Fail
    } else {
        // UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN, INTERNAL, ABORTED: the request
        // may have reached a leader and been committed.
        Kind::Info
    }
}

fn short(s: &tonic::Status) -> String {
    let mut m = format!("{:?}: {}", s.code(), s.message());
    m.truncate(300);
    m
}

pub async fn run_worker(
    process: u32,
    cfg: Arc<WorkloadConfig>,
    endpoints: Vec<(String, Api)>,
    history: Arc<History>,
    known: Arc<Known>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(
        cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(process as u64 + 1)),
    );
    // Each worker starts on its own node and moves to the next one after a failure, as a
    // client with a list of endpoints would.
    let mut home = process as usize % endpoints.len();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (ep, ch) = &endpoints[home];
        let live = known.live();
        let roll: f64 = rng.gen();
        let run_p = if live > cfg.live_target { 0.2 } else { 0.45 };
        let moved = if roll < run_p {
            seq += 1;
            let token = format!("{}-w{process}-{seq}", cfg.started_by);
            let count = if rng.gen_bool(0.8) {
                1
            } else {
                rng.gen_range(2..=3)
            };
            run_task(
                process, &cfg, &endpoints, &mut home, &history, &known, token, count, &stop,
            )
            .await
        } else if roll < run_p + 0.2 {
            match known.pick(&mut rng, true) {
                Some(task) => stop_task(process, ep, ch.clone(), &history, &known, task).await,
                None => false,
            }
        } else {
            match known.pick(&mut rng, false) {
                Some(task) => read_task(process, ep, ch.clone(), &history, task).await,
                None => false,
            }
        };
        if moved {
            home = (home + 1) % endpoints.len();
        }
        let (lo, hi) = cfg.think_ms;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(lo..=hi.max(lo)))).await;
    }
}

/// A RunTask through one node only, recorded like any other: does the node still get
/// writes committed? True when acknowledged.
pub async fn probe(
    process: u32,
    cfg: &WorkloadConfig,
    endpoint: (String, Api),
    history: &History,
    known: &Known,
    token: String,
) -> bool {
    let before = history.ops().len();
    let endpoints = [endpoint];
    let mut home = 0;
    let stop = AtomicBool::new(false);
    run_task(
        process, cfg, &endpoints, &mut home, history, known, token, 1, &stop,
    )
    .await;
    history.ops()[before..]
        .iter()
        .any(|o| o.process == process && o.kind() == Kind::Ok)
}

/// One RunTask token: sent, and resent with the same token while its outcome is unknown.
/// Returns true when the worker should move to another endpoint.
#[allow(clippy::too_many_arguments)]
async fn run_task(
    process: u32,
    cfg: &WorkloadConfig,
    endpoints: &[(String, Api)],
    home: &mut usize,
    history: &History,
    known: &Known,
    token: String,
    count: u32,
    stop: &AtomicBool,
) -> bool {
    let mut moved = false;
    for attempt in 0..=RUN_RETRIES {
        let (ep, ch) = &endpoints[*home];
        let call = Call::Run {
            token: token.clone(),
            count,
            attempt,
        };
        let id = history.invoke(process, ep, call);
        let req = RunTaskRequest {
            task_definition: cfg.family.clone(),
            count,
            client_token: token.clone(),
            started_by: cfg.started_by.clone(),
            ..Default::default()
        };
        match TasksClient::new(ch.clone()).run(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let tasks: Vec<TaskSeen> = r.tasks.iter().map(TaskSeen::from_wire).collect();
                for t in &tasks {
                    known.add(&t.id);
                }
                let failures = r.failures.iter().map(|f| f.reason.clone()).collect();
                history.complete(
                    id,
                    Kind::Ok,
                    Some(Answer::Run {
                        tasks,
                        failures,
                        revision: r.revision,
                    }),
                    None,
                );
                return moved;
            }
            Err(s) => {
                let kind = classify(&s);
                history.complete(id, kind, None, Some(short(&s)));
                if kind == Kind::Fail {
                    return moved;
                }
                // Unknown: try again with the same token on the next node.
                *home = (*home + 1) % endpoints.len();
                moved = false;
                if stop.load(Ordering::Relaxed) {
                    return moved;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    moved
}

async fn stop_task(
    process: u32,
    ep: &str,
    ch: Api,
    history: &History,
    known: &Known,
    task: String,
) -> bool {
    let id = history.invoke(process, ep, Call::Stop { task: task.clone() });
    let req = StopTaskRequest {
        task_id: task.clone(),
        reason: "chaos".to_string(),
    };
    match TasksClient::new(ch).stop(req).await {
        Ok(r) => {
            let r = r.into_inner();
            match r.task {
                Some(t) => {
                    known.mark_stopped(&task);
                    history.complete(
                        id,
                        Kind::Ok,
                        Some(Answer::Stop {
                            task: TaskSeen::from_wire(&t),
                            revision: r.revision,
                        }),
                        None,
                    );
                }
                // An answer without the task breaks the API's contract; recorded as info so
                // the checkers do not trust it, and counted in the report.
                None => history.complete(id, Kind::Info, None, Some("answer without task".into())),
            }
            false
        }
        Err(s) => {
            let kind = classify(&s);
            history.complete(id, kind, None, Some(short(&s)));
            kind == Kind::Info
        }
    }
}

async fn read_task(process: u32, ep: &str, ch: Api, history: &History, task: String) -> bool {
    let id = history.invoke(process, ep, Call::Read { task: task.clone() });
    let req = DescribeTasksRequest {
        task_ids: vec![task.clone()],
        stale: false,
    };
    match TasksClient::new(ch).describe(req).await {
        Ok(r) => {
            let r = r.into_inner();
            let seen = r
                .tasks
                .iter()
                .find(|t| t.task_id == task)
                .map(TaskSeen::from_wire);
            let missing = r.failures.iter().any(|f| f.reason == "MISSING");
            if seen.is_none() && !missing {
                history.complete(
                    id,
                    Kind::Info,
                    None,
                    Some("answer names neither task nor MISSING".into()),
                );
            } else {
                history.complete(
                    id,
                    Kind::Ok,
                    Some(Answer::Read {
                        task: seen,
                        revision: r.revision,
                    }),
                    None,
                );
            }
            false
        }
        Err(s) => {
            let kind = classify(&s);
            history.complete(id, kind, None, Some(short(&s)));
            kind == Kind::Info
        }
    }
}

/// Most probe writes in flight at once; past it a tick is skipped (bounded).
const PROBES_IN_FLIGHT: usize = 64;

/// A fresh write every `every`, to the nodes in turn, each on its own: how soon after a
/// fault a *new* request succeeds, whatever the workers' calls in flight are stuck on. The
/// write is a StopTask of one task of its own (always a Raft entry; idempotent), so probes
/// neither consume capacity nor enter the checked history. Returns (invoke, complete) of
/// every acknowledged probe.
pub async fn prober(
    endpoints: Vec<(String, Api)>,
    history: Arc<History>,
    task_id: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, u64)> {
    let done: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tick = tokio::time::interval(every);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if in_flight.load(Ordering::Relaxed) >= PROBES_IN_FLIGHT {
            continue;
        }
        let ch = endpoints[i % endpoints.len()].1.clone();
        i += 1;
        let (done, in_flight, history, task_id) = (
            done.clone(),
            in_flight.clone(),
            history.clone(),
            task_id.clone(),
        );
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let invoke = history.now();
            let r = TasksClient::new(ch)
                .stop(StopTaskRequest {
                    task_id,
                    reason: "chaos probe".to_string(),
                })
                .await;
            if r.is_ok() {
                let t = history.now();
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((invoke, t));
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let out = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
    out
}
