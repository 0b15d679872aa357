//! The placement engine. A snapshot of agents and a batch of demands go in; placements, or
//! per-task failures with a reason a person can act on, come out. No I/O, no clocks, no
//! global randomness (the seed is an input): the same input always gives the same output.
//!
//! The control plane's leader runs it for every RunTask batch and proposes the result; the
//! state machine re-checks capacity at apply, so a stale placement is refused, never applied.

use std::collections::BTreeMap;

/// Whether an agent may take new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    Draining,
    Down,
}

/// One agent as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub id: String,
    pub cpu: u32,
    pub memory: u32,
    pub used_cpu: u32,
    pub used_memory: u32,
    pub attributes: BTreeMap<String, String>,
    pub eligibility: Eligibility,
    /// Tasks per group already on this agent (for spread and distinctInstance).
    pub groups: BTreeMap<String, u32>,
}

/// Which dimension binpack packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
    /// Both dimensions, best fit (the default).
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Binpack(BinpackField),
    /// Spread tasks of the demand's group over the values of an attribute; `None` spreads
    /// over agents (ECS `instanceId`).
    Spread(Option<String>),
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    DistinctInstance,
    /// A `memberOf` expression in its source form.
    MemberOf(String),
}

/// `count` tasks of one size, placed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub cpu: u32,
    pub memory: u32,
    pub count: u32,
    pub group: String,
    pub strategies: Vec<Strategy>,
    pub constraints: Vec<Constraint>,
}

/// Why a task could not be placed: `reason` in ECS's vocabulary (`RESOURCE:CPU`,
/// `RESOURCE:MEMORY`, `ATTRIBUTE`, `AGENT_UNAVAILABLE`), `detail` for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub detail: String,
}

/// The answer for one demand: indexes into the snapshot's agents, one per placed task, and
/// one failure per task that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub placements: Vec<usize>,
    pub failures: Vec<Failure>,
}

/// A demand the engine refuses to consider at all (a malformed constraint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("placement constraint: {0}")]
    Constraint(String),
}

/// Places every demand in order; each sees the placements made for the ones before it.
pub fn place(agents: &[AgentInfo], demands: &[Demand], _seed: u64) -> Result<Vec<Outcome>, Error> {
    for d in demands {
        if let Some(Constraint::MemberOf(e)) = d.constraints.iter().find(|c| matches!(c, Constraint::MemberOf(_))) {
            return Err(Error::Constraint(format!("memberOf `{e}` is not supported yet")));
        }
    }
    let mut free: Vec<(u32, u32)> = agents
        .iter()
        .map(|a| (a.cpu.saturating_sub(a.used_cpu), a.memory.saturating_sub(a.used_memory)))
        .collect();
    let mut out = Vec::with_capacity(demands.len());
    for d in demands {
        let mut outcome = Outcome::default();
        for _ in 0..d.count {
            // Best fit on both dimensions: the eligible agent left with the least room.
            let best = agents
                .iter()
                .enumerate()
                .filter(|(i, a)| a.eligibility == Eligibility::Eligible && free[*i].0 >= d.cpu && free[*i].1 >= d.memory)
                .min_by_key(|(i, a)| {
                    let (c, m) = free[*i];
                    let left_c = u64::from(c - d.cpu) * 1_000_000 / u64::from(a.cpu.max(1));
                    let left_m = u64::from(m - d.memory) * 1_000_000 / u64::from(a.memory.max(1));
                    (left_c + left_m, *i)
                })
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    free[i].0 -= d.cpu;
                    free[i].1 -= d.memory;
                    outcome.placements.push(i);
                }
                None => outcome.failures.push(why_not(agents, &free, d)),
            }
        }
        out.push(outcome);
    }
    Ok(out)
}

fn why_not(agents: &[AgentInfo], free: &[(u32, u32)], d: &Demand) -> Failure {
    let eligible: Vec<usize> = (0..agents.len()).filter(|i| agents[*i].eligibility == Eligibility::Eligible).collect();
    if eligible.is_empty() {
        return Failure { reason: "AGENT_UNAVAILABLE".into(), detail: "no agent is eligible for new tasks".into() };
    }
    let best_mem = eligible.iter().max_by_key(|i| (free[**i].1, std::cmp::Reverse(**i))).copied().unwrap_or(0);
    if free[best_mem].1 < d.memory {
        return Failure {
            reason: "RESOURCE:MEMORY".into(),
            detail: format!("needs {} MiB; largest free is {} MiB on agent {}", d.memory, free[best_mem].1, agents[best_mem].id),
        };
    }
    let best_cpu = eligible.iter().max_by_key(|i| (free[**i].0, std::cmp::Reverse(**i))).copied().unwrap_or(0);
    if free[best_cpu].0 < d.cpu {
        return Failure {
            reason: "RESOURCE:CPU".into(),
            detail: format!("needs {} CPU units; largest free is {} on agent {}", d.cpu, free[best_cpu].0, agents[best_cpu].id),
        };
    }
    Failure {
        reason: "RESOURCE:CPU,MEMORY".into(),
        detail: format!("no agent has both {} CPU units and {} MiB free", d.cpu, d.memory),
    }
}
