//! The run's history: every client operation as an invocation and a completion (ok, fail
//! or info), and every fault, with monotonic timestamps. Kept in memory for the checkers
//! and written as JSONL as it happens (so a crashed run still leaves its evidence).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    /// RunTask with a client token; `attempt` > 0 is a retry of the same token.
    Run {
        token: String,
        count: u32,
        attempt: u32,
    },
    Stop {
        task: String,
    },
    /// DescribeTasks of one task, linearizable.
    Read {
        task: String,
    },
}

impl Call {
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Read { .. })
    }
    pub fn name(&self) -> &'static str {
        match self {
            Call::Run { .. } => "run",
            Call::Stop { .. } => "stop",
            Call::Read { .. } => "read",
        }
    }
}

/// A task as an answer showed it: what the checkers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSeen {
    pub id: String,
    pub token: String,
    pub agent: String,
    pub version: u64,
    pub last_status: String,
    pub desired_status: String,
    pub cpu: u32,
    pub memory: u32,
}

impl TaskSeen {
    pub fn from_wire(t: &berth_proto::v1::Task) -> Self {
        TaskSeen {
            id: t.task_id.clone(),
            token: t.client_token.clone(),
            agent: t.agent_id.clone(),
            version: t.version,
            last_status: t.last_status.clone(),
            desired_status: t.desired_status.clone(),
            cpu: t.cpu,
            memory: t.memory,
        }
    }
}

/// What the answer said.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "kebab-case")]
pub enum Answer {
    Run {
        tasks: Vec<TaskSeen>,
        failures: Vec<String>,
        revision: u64,
    },
    Stop {
        task: TaskSeen,
        revision: u64,
    },
    /// `None`: the task is MISSING.
    Read {
        task: Option<TaskSeen>,
        revision: u64,
    },
}

/// How an operation ended: Jepsen's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Invoke,
    /// It happened, with this answer.
    Ok,
    /// It certainly did not happen (refused before any effect).
    Fail,
    /// Unknown: it may or may not have happened (timeout, connection lost after sending).
    Info,
}

/// One client operation, as the checkers see it.
#[derive(Debug, Clone)]
pub struct Op {
    pub process: u32,
    pub call: Call,
    pub invoke: u64,
    /// Completion time and kind; `None` while in flight (a run cut short leaves these,
    /// and the checkers read them as info).
    pub end: Option<(u64, Kind)>,
    pub answer: Option<Answer>,
    pub error: Option<String>,
}

impl Op {
    pub fn kind(&self) -> Kind {
        self.end.map(|(_, k)| k).unwrap_or(Kind::Info)
    }
    pub fn ok_time(&self) -> Option<u64> {
        match self.end {
            Some((t, Kind::Ok)) => Some(t),
            _ => None,
        }
    }
}

/// A fault as injected: from the start of its injection to its healing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    pub detail: String,
    /// Nanoseconds since the run's start.
    pub start: u64,
    /// When the fault took hold (the kill, pause or last cut returned): failover gaps are
    /// measured from here.
    pub effective: u64,
    pub end: u64,
    /// Control node id that was the leader when the fault began (0: none known).
    pub leader_before: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    t: u64,
    process: u32,
    #[serde(rename = "type")]
    kind: Kind,
    op: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<&'a Call>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

struct Inner {
    ops: Vec<Op>,
    faults: Vec<FaultRecord>,
    out: Option<BufWriter<File>>,
}

/// Shared by every worker; a std mutex because each critical section is a push and a
/// buffered write, never held across an await.
pub struct History {
    origin: Instant,
    inner: Mutex<Inner>,
}

impl History {
    pub fn new(path: Option<&Path>) -> std::io::Result<Self> {
        let out = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(History {
            origin: Instant::now(),
            inner: Mutex::new(Inner {
                ops: Vec::new(),
                faults: Vec::new(),
                out,
            }),
        })
    }

    /// Nanoseconds since the run began (monotonic).
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A worker that panicked mid-push leaves a consistent vector; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn invoke(&self, process: u32, endpoint: &str, call: Call) -> usize {
        let t = self.now();
        let mut g = self.lock();
        let id = g.ops.len();
        let line = Line {
            t,
            process,
            kind: Kind::Invoke,
            op: id,
            endpoint: Some(endpoint),
            call: Some(&call),
            answer: None,
            error: None,
        };
        write_line(&mut g.out, &line);
        g.ops.push(Op {
            process,
            call,
            invoke: t,
            end: None,
            answer: None,
            error: None,
        });
        id
    }

    pub fn complete(&self, id: usize, kind: Kind, answer: Option<Answer>, error: Option<String>) {
        debug_assert!(kind != Kind::Invoke);
        let t = self.now();
        let mut g = self.lock();
        let process = g.ops.get(id).map(|o| o.process).unwrap_or(0);
        let line = Line {
            t,
            process,
            kind,
            op: id,
            endpoint: None,
            call: None,
            answer: answer.as_ref(),
            error: error.as_deref(),
        };
        write_line(&mut g.out, &line);
        if let Some(op) = g.ops.get_mut(id) {
            op.end = Some((t, kind));
            op.answer = answer;
            op.error = error;
        }
    }

    pub fn fault(&self, f: FaultRecord) {
        let mut g = self.lock();
        if let Some(out) = g.out.as_mut() {
            let v = serde_json::json!({"type": "fault", "fault": &f});
            let _ = writeln!(out, "{v}");
        }
        g.faults.push(f);
    }

    pub fn flush(&self) {
        let mut g = self.lock();
        if let Some(out) = g.out.as_mut() {
            let _ = out.flush();
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    pub fn faults(&self) -> Vec<FaultRecord> {
        self.lock().faults.clone()
    }
}

fn write_line(out: &mut Option<BufWriter<File>>, line: &Line<'_>) {
    if let Some(o) = out.as_mut() {
        if let Ok(s) = serde_json::to_string(line) {
            let _ = writeln!(o, "{s}");
        }
    }
}
