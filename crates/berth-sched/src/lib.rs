//! The placement engine. A snapshot of agents and a batch of demands go in; placements, or
//! per-task failures with a reason a person can act on, come out. No I/O, no clocks, no
//! global randomness (the seed is an input): the same input always gives the same output.
//!
//! The control plane's leader runs it for every RunTask batch and proposes the result; the
//! state machine re-checks capacity at apply, so a stale placement is refused, never applied.
//!
//! [`Engine`] keeps an index over free capacity between batches (the fast path); [`place`]
//! builds one for a single call. [`parse_expression`] checks a `memberOf` expression before
//! anything is placed. The pipeline and vocabulary are in the crate's README.md.

use std::collections::BTreeMap;

pub mod bench;
mod engine;
mod expr;
mod index;
mod rng;

pub use engine::{unsupported_strategy, Engine, MAX_CONSTRAINTS, MAX_SCOPES, MAX_STRATEGIES};
pub use expr::{
    parse_expression, Expr, Operand, ParseError, Pattern, Test, MAX_DEPTH, MAX_EXPRESSION_LEN,
};

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
    /// Spreads, then at most one binpack or random, last (see [`unsupported_strategy`]).
    pub strategies: Vec<Strategy>,
    /// In the order the caller gave them: a failure names a constraint by its position.
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

/// A demand the engine refuses to consider at all (a malformed constraint, a chain of
/// strategies it cannot follow). Messages name clauses by position and never repeat a
/// caller's text in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("placement constraint: {0}")]
    Constraint(String),
    #[error("placement strategy: {0}")]
    Strategy(String),
}

/// Free capacity of one agent, the two dimensions the index packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Free {
    pub cpu: u32,
    pub mem: u32,
}

/// Places every demand in order; each sees the placements made for the ones before it.
///
/// A convenience over [`Engine`]: it builds the index from `agents` (O(agents)) and drops it.
/// A caller placing batch after batch should keep an `Engine` and feed it changes instead.
pub fn place(agents: &[AgentInfo], demands: &[Demand], seed: u64) -> Result<Vec<Outcome>, Error> {
    Engine::new(agents).place(demands, seed)
}
