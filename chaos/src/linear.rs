//! A Wing–Gong linearizability checker (with Lowe's memoisation of visited configurations)
//! and the sequential model of one task as clients see it through the public API.
//!
//! The checker searches for a total order of the operations that (a) respects real time —
//! an operation that completed before another was invoked comes first — and (b) is legal
//! for a sequential model. Operations whose outcome is unknown (`complete: None`, the
//! history's `info`) may take effect at any point after their invocation, or never.
//!
//! Histories are checked one object (one task) at a time: linearizability is local
//! (Herlihy & Wing), so a history is linearizable iff each object's sub-history is, and the
//! per-object search stays small.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: the state after applying `op` (with its observed output)
/// to `self`, or `None` when that output is impossible from this state.
pub trait Model: Clone + Eq + Hash {
    type Op;
    fn step(&self, op: &Self::Op) -> Option<Self>;
}

/// One operation of an object's history. Times come from one monotonic clock.
#[derive(Debug, Clone)]
pub struct Entry<O> {
    pub invoke: u64,
    /// `None`: the outcome is unknown (timed out, connection lost after sending); the
    /// operation may have taken effect at any time after `invoke`, or not at all.
    pub complete: Option<u64>,
    pub op: O,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `stuck_after` is the longest prefix of completed operations that
    /// could be linearized (a hint for the reader of the report).
    NotLinearizable {
        stuck_after: usize,
    },
    /// The search gave up after `budget` steps; neither proven nor refuted.
    Unknown {
        budget: u64,
    },
}

/// Bitset of linearized operations; part of the memo key with the model state.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one object's history from `init`. `budget` bounds the number of search steps
/// (each a model step tried), so a pathological history cannot hang the suite.
pub fn check<M: Model>(init: &M, history: &[Entry<M::Op>], budget: u64) -> Verdict {
    let n = history.len();
    // Operations ordered by invocation: candidates for "next" are always a prefix-ish
    // window of this order, which keeps the scan short.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| history[i].invoke);
    let must: usize = history.iter().filter(|e| e.complete.is_some()).count();

    let mut done = Bits::new(n);
    let mut memo: HashSet<(Bits, M)> = HashSet::new();
    let mut steps = 0u64;
    let mut best = 0usize;
    // Explicit DFS stack: (state, linearized count of completed ops, next candidate index
    // into `order` to try, op index that led here).
    struct Frame<M> {
        state: M,
        completed: usize,
        next: usize,
        via: Option<usize>,
    }
    let mut stack = vec![Frame {
        state: init.clone(),
        completed: 0,
        next: 0,
        via: None,
    }];
    while let Some(top) = stack.last_mut() {
        if top.completed == must {
            return Verdict::Linearizable;
        }
        best = best.max(top.completed);
        // The earliest completion among operations not yet linearized: nothing invoked
        // after it can come next.
        let horizon = order
            .iter()
            .filter(|&&i| !done.get(i))
            .filter_map(|&i| history[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        while top.next < n {
            let i = order[top.next];
            top.next += 1;
            if done.get(i) {
                continue;
            }
            if history[i].invoke > horizon {
                // Sorted by invocation: every later one is past the horizon too.
                top.next = n;
                break;
            }
            steps += 1;
            if steps > budget {
                return Verdict::Unknown { budget };
            }
            let Some(next) = top.state.step(&history[i].op) else {
                continue;
            };
            done.set(i);
            if !memo.insert((done.clone(), next.clone())) {
                done.clear(i);
                continue;
            }
            let completed = top.completed + usize::from(history[i].complete.is_some());
            stack.push(Frame {
                state: next,
                completed,
                next: 0,
                via: Some(i),
            });
            advanced = true;
            break;
        }
        if !advanced {
            let f = stack.pop();
            if let Some(Frame { via: Some(i), .. }) = f {
                done.clear(i);
            }
        }
    }
    Verdict::NotLinearizable { stuck_after: best }
}

// ---------------------------------------------------------------------------------------
// The task model

/// What a client sees of a task: enough to order its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskView {
    /// State revision of the task's last change.
    pub version: u64,
    /// `desiredStatus == STOPPED`.
    pub stop_desired: bool,
    /// `lastStatus` as its rank in the lifecycle (PROVISIONING = 0 … STOPPED = 7).
    pub status: u8,
}

impl TaskView {
    /// `later` may follow `self`: nothing moved backwards. Agents and the control plane
    /// change tasks too (reports, InfrastructureHealth stops), invisibly to the clients, so
    /// any forward move is allowed between two client operations. Two views at one version
    /// may still differ: one Raft entry carries many commands (a stop and an agent's report
    /// of the same task), and a write's answer shows the task after its own command only.
    pub fn may_precede(&self, later: &TaskView) -> bool {
        later.version >= self.version
            && later.status >= self.status
            && (later.stop_desired || !self.stop_desired)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskModel {
    Absent,
    Present(TaskView),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOp {
    /// RunTask answered with this task.
    Create(TaskView),
    /// StopTask answered with this task.
    Stop(TaskView),
    /// DescribeTasks (linearizable) answered with this task, or MISSING (`None`).
    Read(Option<TaskView>),
}

impl Model for TaskModel {
    type Op = TaskOp;

    fn step(&self, op: &TaskOp) -> Option<TaskModel> {
        match (self, op) {
            (TaskModel::Absent, TaskOp::Create(v)) => Some(TaskModel::Present(*v)),
            (TaskModel::Absent, TaskOp::Read(None)) => Some(TaskModel::Absent),
            (TaskModel::Absent, _) => None,
            (TaskModel::Present(_), TaskOp::Create(_)) => None,
            (TaskModel::Present(_), TaskOp::Read(None)) => None,
            (TaskModel::Present(v), TaskOp::Read(Some(r))) => {
                v.may_precede(r).then_some(TaskModel::Present(*r))
            }
            (TaskModel::Present(v), TaskOp::Stop(s)) => {
                // A stop of a task not yet stopping is a change of its own: a new version.
                let ok =
                    s.stop_desired && v.may_precede(s) && (v.stop_desired || s.version > v.version);
                ok.then_some(TaskModel::Present(*s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read/write register, the textbook object, to test the search itself.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Register(u32);

    #[derive(Debug, Clone)]
    enum RegOp {
        Write(u32),
        Read(u32),
        Cas(u32, u32, bool),
    }

    impl Model for Register {
        type Op = RegOp;
        fn step(&self, op: &RegOp) -> Option<Register> {
            match *op {
                RegOp::Write(v) => Some(Register(v)),
                RegOp::Read(v) => (self.0 == v).then_some(self.clone()),
                RegOp::Cas(from, to, ok) => {
                    if ok {
                        (self.0 == from).then_some(Register(to))
                    } else {
                        (self.0 != from).then_some(self.clone())
                    }
                }
            }
        }
    }

    fn e<O>(invoke: u64, complete: u64, op: O) -> Entry<O> {
        Entry {
            invoke,
            complete: Some(complete),
            op,
        }
    }
    fn info<O>(invoke: u64, op: O) -> Entry<O> {
        Entry {
            invoke,
            complete: None,
            op,
        }
    }
    fn reg(h: &[Entry<RegOp>]) -> Verdict {
        check(&Register(0), h, 1_000_000)
    }

    #[test]
    fn register_sequential_and_concurrent() {
        use RegOp::*;
        assert_eq!(reg(&[]), Verdict::Linearizable);
        assert_eq!(
            reg(&[
                e(0, 1, Write(1)),
                e(2, 3, Read(1)),
                e(4, 5, Write(2)),
                e(6, 7, Read(2))
            ]),
            Verdict::Linearizable
        );
        // A read concurrent with a write may see either value.
        assert_eq!(
            reg(&[e(0, 10, Write(1)), e(1, 2, Read(0))]),
            Verdict::Linearizable
        );
        assert_eq!(
            reg(&[e(0, 10, Write(1)), e(1, 2, Read(1))]),
            Verdict::Linearizable
        );
        // Two concurrent writes, reads after both agree on one order.
        assert_eq!(
            reg(&[
                e(0, 10, Write(1)),
                e(0, 10, Write(2)),
                e(11, 12, Read(1)),
                e(13, 14, Read(1))
            ]),
            Verdict::Linearizable
        );
    }

    #[test]
    fn register_rejects_known_violations() {
        use RegOp::*;
        // Stale read: the write completed before the read began.
        assert!(matches!(
            reg(&[e(0, 1, Write(1)), e(2, 3, Read(0))]),
            Verdict::NotLinearizable { .. }
        ));
        // Lost write: 1 then 2 written in sequence, 1 read afterwards.
        assert!(matches!(
            reg(&[e(0, 1, Write(1)), e(2, 3, Write(2)), e(4, 5, Read(1))]),
            Verdict::NotLinearizable { .. }
        ));
        // Reads that disagree on the order of two concurrent writes, one after the other.
        assert!(matches!(
            reg(&[
                e(0, 10, Write(1)),
                e(0, 10, Write(2)),
                e(11, 12, Read(1)),
                e(13, 14, Read(2)),
                e(15, 16, Read(1)),
            ]),
            Verdict::NotLinearizable { .. }
        ));
        // New-old inversion: a read sees the new value, a later read the old one, while
        // the write is still in flight (not linearizable, though each read alone is).
        assert!(matches!(
            reg(&[e(0, 100, Write(1)), e(10, 20, Read(1)), e(30, 40, Read(0))]),
            Verdict::NotLinearizable { .. }
        ));
        // Two successful compare-and-sets from the same value, one after the other.
        assert!(matches!(
            reg(&[e(0, 1, Cas(0, 1, true)), e(2, 3, Cas(0, 2, true))]),
            Verdict::NotLinearizable { .. }
        ));
        // Value out of nowhere.
        assert!(matches!(
            reg(&[e(0, 1, Read(7))]),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_happen() {
        use RegOp::*;
        // An info write may have taken effect ...
        assert_eq!(
            reg(&[info(0, Write(1)), e(5, 6, Read(1))]),
            Verdict::Linearizable
        );
        // ... or not.
        assert_eq!(
            reg(&[info(0, Write(1)), e(5, 6, Read(0))]),
            Verdict::Linearizable
        );
        // But only once, and only after it was invoked.
        assert!(matches!(
            reg(&[info(0, Write(1)), e(1, 2, Read(1)), e(3, 4, Read(0))]),
            Verdict::NotLinearizable { .. }
        ));
        assert!(matches!(
            reg(&[e(0, 1, Read(1)), info(2, Write(1))]),
            Verdict::NotLinearizable { .. }
        ));
        // It may still land late: after a later read saw the old value.
        assert_eq!(
            reg(&[info(0, Write(1)), e(1, 2, Read(0)), e(3, 4, Read(1))]),
            Verdict::Linearizable
        );
    }

    #[test]
    fn budget_is_reported_not_guessed() {
        use RegOp::*;
        // Many concurrent writes and a wrong final read make a large search space.
        let mut h: Vec<Entry<RegOp>> = (0..40).map(|i| e(0, 100, Write(i + 1))).collect();
        h.push(e(200, 201, Read(999)));
        assert_eq!(check(&Register(0), &h, 50), Verdict::Unknown { budget: 50 });
    }

    #[test]
    fn wide_concurrency_stays_fast_with_memoisation() {
        use RegOp::*;
        // 60 concurrent writes of the same value and a read: memoisation collapses the
        // orders (they all lead to the same states).
        let mut h: Vec<Entry<RegOp>> = (0..60).map(|_| e(0, 100, Write(5))).collect();
        h.push(e(200, 201, Read(5)));
        assert_eq!(check(&Register(0), &h, 1_000_000), Verdict::Linearizable);
    }

    // -- task model

    fn v(version: u64, stop_desired: bool, status: u8) -> TaskView {
        TaskView {
            version,
            stop_desired,
            status,
        }
    }
    fn task(h: &[Entry<TaskOp>]) -> Verdict {
        check(&TaskModel::Absent, h, 1_000_000)
    }
    use TaskOp::{Create, Read, Stop};

    #[test]
    fn task_histories_that_are_fine() {
        // Created, read, agent moved it to RUNNING (hidden), stopped, read.
        let h = [
            e(0, 10, Create(v(5, false, 0))),
            e(11, 12, Read(Some(v(5, false, 0)))),
            e(13, 14, Read(Some(v(9, false, 3)))),
            e(15, 16, Stop(v(12, true, 3))),
            e(17, 18, Read(Some(v(14, true, 7)))),
        ];
        assert_eq!(task(&h), Verdict::Linearizable);
        // A read concurrent with the stop may miss it.
        let h = [
            e(0, 1, Create(v(5, false, 0))),
            e(2, 10, Stop(v(8, true, 0))),
            e(3, 4, Read(Some(v(5, false, 0)))),
        ];
        assert_eq!(task(&h), Verdict::Linearizable);
        // Stopping an already stopping task changes nothing.
        let h = [
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Stop(v(8, true, 0))),
            e(4, 5, Stop(v(8, true, 0))),
        ];
        assert_eq!(task(&h), Verdict::Linearizable);
        // The control plane stopped it on its own (agent DOWN): no client stop needed.
        let h = [
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Read(Some(v(30, true, 7)))),
        ];
        assert_eq!(task(&h), Verdict::Linearizable);
        // A stop and an agent report in one Raft entry: same version, the read sees more.
        let h = [
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Stop(v(8, true, 0))),
            e(4, 5, Read(Some(v(8, true, 3)))),
        ];
        assert_eq!(task(&h), Verdict::Linearizable);
    }

    #[test]
    fn task_histories_that_must_be_rejected() {
        let bad = |h: &[Entry<TaskOp>]| matches!(task(h), Verdict::NotLinearizable { .. });
        // Stale read after an acknowledged stop (the stop is lost or the read is stale).
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Stop(v(8, true, 0))),
            e(4, 5, Read(Some(v(5, false, 0)))),
        ]));
        // The task vanished after its creation was acknowledged.
        assert!(bad(&[e(0, 1, Create(v(5, false, 0))), e(2, 3, Read(None))]));
        // Version went backwards between two reads in sequence.
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Read(Some(v(9, false, 3)))),
            e(4, 5, Read(Some(v(7, false, 1)))),
        ]));
        // Status went backwards at a higher version (RUNNING, then PENDING).
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Read(Some(v(9, false, 3)))),
            e(4, 5, Read(Some(v(10, false, 1)))),
        ]));
        // Stopped, then desired RUNNING again (resurrection).
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Read(Some(v(9, true, 0)))),
            e(4, 5, Read(Some(v(10, false, 0)))),
        ]));
        // A stop that claims to stop a running task without a new version.
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Read(Some(v(6, false, 3)))),
            e(4, 5, Stop(v(6, true, 3))),
        ]));
        // Created twice (two answers for one task id).
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 3, Create(v(5, false, 0))),
        ]));
        // New-old inversion across two concurrent-with-the-stop reads: the first saw the
        // stop, the second (strictly later) did not.
        assert!(bad(&[
            e(0, 1, Create(v(5, false, 0))),
            e(2, 100, Stop(v(8, true, 0))),
            e(10, 20, Read(Some(v(8, true, 0)))),
            e(30, 40, Read(Some(v(5, false, 0)))),
        ]));
    }
}
