//! Workloads, measurements and baseline placers shared by the criterion benches, the report
//! example and the tests. Not used by the engine itself.

use std::collections::BTreeMap;

use crate::rng::Rng;
use crate::{AgentInfo, Demand, Eligibility, Strategy};

/// Fargate's task sizes: CPU units and the memory choices (MiB) that go with them.
pub fn fargate_sizes() -> Vec<(u32, Vec<u32>)> {
    let gib = |g: u32| g * 1024;
    vec![
        (256, vec![512, 1024, 2048]),
        (512, (1..=4).map(gib).collect()),
        (1024, (2..=8).map(gib).collect()),
        (2048, (4..=16).map(gib).collect()),
        (4096, (8..=30).map(gib).collect()),
        (8192, (16..=60).step_by(4).map(gib).collect()),
        (16384, (32..=120).step_by(8).map(gib).collect()),
    ]
}

/// Share of tasks per CPU size, in per mille: mostly small tasks, as on a shared fleet.
pub const FARGATE_MIX: [u32; 7] = [300, 250, 200, 120, 80, 40, 10];

/// A deterministic stream of task sizes: a CPU size drawn by `FARGATE_MIX`, then one of its
/// memory choices uniformly.
pub struct SizeMix {
    rng: Rng,
    sizes: Vec<(u32, Vec<u32>)>,
}

impl SizeMix {
    pub fn new(seed: u64) -> SizeMix {
        SizeMix {
            rng: Rng::new(seed),
            sizes: fargate_sizes(),
        }
    }

    pub fn next_size(&mut self) -> (u32, u32) {
        let mut r = self.rng.below(1000) as u32;
        let mut tier = 0;
        while r >= FARGATE_MIX[tier] {
            r -= FARGATE_MIX[tier];
            tier += 1;
        }
        let (cpu, mems) = &self.sizes[tier];
        (*cpu, mems[self.rng.below(mems.len())])
    }

    /// Uniform in `0..n`, from the same stream.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.below(n)
    }
}

/// `tasks` tasks of the Fargate mix as RunTask-like demands: 1 to 10 tasks each (RunTask's
/// limit), one of `groups` groups, binpack on both dimensions.
pub fn fargate_demands(tasks: usize, groups: usize, seed: u64) -> Vec<Demand> {
    fargate_demands_with(tasks, groups, seed, |_| (Vec::new(), Vec::new()))
}

/// As [`fargate_demands`], with strategies and constraints chosen per demand by `shape`
/// (given the demand's number).
pub fn fargate_demands_with(
    tasks: usize,
    groups: usize,
    seed: u64,
    mut shape: impl FnMut(usize) -> (Vec<Strategy>, Vec<crate::Constraint>),
) -> Vec<Demand> {
    let mut mix = SizeMix::new(seed);
    let mut out = Vec::with_capacity(tasks / 5);
    let mut left = tasks;
    while left > 0 {
        let count = (1 + mix.below(10)).min(left);
        let (cpu, memory) = mix.next_size();
        let (strategies, constraints) = shape(out.len());
        out.push(Demand {
            cpu,
            memory,
            count: count as u32,
            group: format!("family:app-{}", mix.below(groups.max(1))),
            strategies,
            constraints,
        });
        left -= count;
    }
    out
}

/// `n` identical empty agents over `zones` zones (round robin), with attributes `zone` and
/// `instance-type`.
pub fn agents(n: usize, cpu: u32, memory: u32, zones: usize) -> Vec<AgentInfo> {
    (0..n)
        .map(|i| AgentInfo {
            id: format!("agent-{i}"),
            cpu,
            memory,
            used_cpu: 0,
            used_memory: 0,
            attributes: BTreeMap::from([
                ("zone".to_string(), format!("zone-{}", i % zones.max(1))),
                (
                    "instance-type".to_string(),
                    if i % 4 == 3 { "large" } else { "standard" }.to_string(),
                ),
            ]),
            eligibility: Eligibility::Eligible,
            groups: BTreeMap::new(),
        })
        .collect()
}

/// Fewest agents of this size that could hold the demands: the larger over the two
/// dimensions of ⌈total demand / agent capacity⌉.
pub fn lower_bound(demands: &[Demand], cpu: u32, memory: u32) -> u64 {
    let total_cpu: u64 = demands
        .iter()
        .map(|d| u64::from(d.cpu) * u64::from(d.count))
        .sum();
    let total_mem: u64 = demands
        .iter()
        .map(|d| u64::from(d.memory) * u64::from(d.count))
        .sum();
    total_cpu
        .div_ceil(u64::from(cpu))
        .max(total_mem.div_ceil(u64::from(memory)))
}

/// How well a packing used its agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packing {
    pub agents_used: u64,
    /// Free CPU units on used agents whose free memory cannot hold the smallest task, and
    /// free MiB on used agents whose free CPU cannot: capacity no task can ever use.
    pub stranded_cpu: u64,
    pub stranded_mem: u64,
    /// Free capacity on used agents, all of it.
    pub free_cpu: u64,
    pub free_mem: u64,
}

/// Measures a packing from each agent's (capacity, free) after placement; agents started
/// empty, so an agent is used if anything is taken.
pub fn packing(
    capacity: &[(u32, u32)],
    free: &[(u32, u32)],
    min_cpu: u32,
    min_mem: u32,
) -> Packing {
    let mut p = Packing::default();
    for (cap, f) in capacity.iter().zip(free) {
        if cap == f {
            continue;
        }
        p.agents_used += 1;
        p.free_cpu += u64::from(f.0);
        p.free_mem += u64::from(f.1);
        if f.1 < min_mem {
            p.stranded_cpu += u64::from(f.0);
        }
        if f.0 < min_cpu {
            p.stranded_mem += u64::from(f.1);
        }
    }
    p
}

/// Baselines: the same demands placed task by task by simpler rules, without strategies or
/// constraints, each returning every agent's free (CPU, MiB) afterwards and the number of
/// tasks that found no room.
pub mod baseline {
    use super::*;

    /// Lowest-numbered agent with room, found through a max-tree over (free CPU, free
    /// memory): a subtree is entered only if both maxima fit, so a query descends a few paths
    /// instead of scanning.
    pub fn first_fit(capacity: &[(u32, u32)], demands: &[Demand]) -> (Vec<(u32, u32)>, u64) {
        let n = capacity.len();
        let size = n.next_power_of_two().max(1);
        let mut tree = vec![(0u32, 0u32); 2 * size];
        tree[size..size + n].copy_from_slice(capacity);
        for i in (1..size).rev() {
            tree[i] = (
                tree[2 * i].0.max(tree[2 * i + 1].0),
                tree[2 * i].1.max(tree[2 * i + 1].1),
            );
        }
        fn descend(tree: &[(u32, u32)], i: usize, size: usize, c: u32, m: u32) -> Option<usize> {
            if tree[i].0 < c || tree[i].1 < m {
                return None;
            }
            if i >= size {
                return Some(i);
            }
            descend(tree, 2 * i, size, c, m).or_else(|| descend(tree, 2 * i + 1, size, c, m))
        }
        let mut failed = 0;
        for d in demands {
            for _ in 0..d.count {
                match descend(&tree, 1, size, d.cpu, d.memory) {
                    Some(mut i) => {
                        tree[i].0 -= d.cpu;
                        tree[i].1 -= d.memory;
                        while i > 1 {
                            i /= 2;
                            tree[i] = (
                                tree[2 * i].0.max(tree[2 * i + 1].0),
                                tree[2 * i].1.max(tree[2 * i + 1].1),
                            );
                        }
                    }
                    None => failed += 1,
                }
            }
        }
        (tree[size..size + n].to_vec(), failed)
    }

    /// A uniformly random agent with room: 64 random probes, then a walk from a random start.
    pub fn random(
        capacity: &[(u32, u32)],
        demands: &[Demand],
        seed: u64,
    ) -> (Vec<(u32, u32)>, u64) {
        let mut free = capacity.to_vec();
        let n = free.len();
        let mut rng = Rng::new(seed);
        let mut failed = 0;
        for d in demands {
            for _ in 0..d.count {
                let fits = |f: &(u32, u32)| f.0 >= d.cpu && f.1 >= d.memory;
                let mut pick = (0..64).map(|_| rng.below(n)).find(|i| fits(&free[*i]));
                if pick.is_none() {
                    let start = rng.below(n);
                    pick = (0..n).map(|k| (start + k) % n).find(|i| fits(&free[*i]));
                }
                match pick {
                    Some(i) => {
                        free[i].0 -= d.cpu;
                        free[i].1 -= d.memory;
                    }
                    None => failed += 1,
                }
            }
        }
        (free, failed)
    }

    /// Nomad's service scheduler, reduced to bin-packing: agents in a shuffled order visited
    /// round robin; for each task the next ⌈log2 N⌉ feasible agents are scored with
    /// BestFit-v3 (`20 − (10^freeCpu% + 10^freeMem%)` after placing the task) and the best
    /// taken.
    pub fn nomad(capacity: &[(u32, u32)], demands: &[Demand], seed: u64) -> (Vec<(u32, u32)>, u64) {
        let mut free = capacity.to_vec();
        let n = free.len();
        let limit = (usize::BITS - (n.max(2) - 1).leading_zeros()) as usize;
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut cursor = 0;
        let mut failed = 0;
        for d in demands {
            for _ in 0..d.count {
                let mut best: Option<(f64, usize)> = None;
                let mut found = 0;
                for _ in 0..n {
                    let i = order[cursor];
                    cursor = (cursor + 1) % n;
                    let f = free[i];
                    if f.0 < d.cpu || f.1 < d.memory {
                        continue;
                    }
                    let pc = f64::from(f.0 - d.cpu) / f64::from(capacity[i].0.max(1));
                    let pm = f64::from(f.1 - d.memory) / f64::from(capacity[i].1.max(1));
                    let score = 20.0 - (10f64.powf(pc) + 10f64.powf(pm));
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, i));
                    }
                    found += 1;
                    if found == limit {
                        break;
                    }
                }
                match best {
                    Some((_, i)) => {
                        free[i].0 -= d.cpu;
                        free[i].1 -= d.memory;
                    }
                    None => failed += 1,
                }
            }
        }
        (free, failed)
    }
}
