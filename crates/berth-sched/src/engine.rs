//! The stateful engine: an index built once from a snapshot and kept current by every
//! placement, release and agent update, so a batch costs index queries, not scans.
//!
//! Pipeline per demand (see README.md): validate → scope (feasibility) → rank → commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::expr::{parse_expression, Expr};
use crate::index::{Grid, Leaf, Pick, Query, NIL};
use crate::rng::Rng;
use crate::{
    AgentInfo, BinpackField, Constraint, Demand, Eligibility, Error, Failure, Free, Outcome,
    Strategy,
};

/// ECS allows 5 strategies and 10 constraints per call; the same bounds keep one demand's
/// scope small and its key cheap to hash.
pub const MAX_STRATEGIES: usize = 5;
pub const MAX_CONSTRAINTS: usize = 10;
/// The position of the first strategy the engine cannot follow, if any: one that comes
/// after the first binpack or random. Spreads before it partition the candidates and it
/// picks inside the chosen partition, so a later strategy could only break its ties (ECS's
/// rule). The index does not keep exact ties apart — a bucket spans up to 1/16 of each
/// dimension and its agents sit in no particular order — and finding every tied agent
/// would mean scanning them all (every empty agent ties), so such a chain is refused
/// rather than silently cut short.
pub fn unsupported_strategy(strategies: &[Strategy]) -> Option<usize> {
    let picker = strategies
        .iter()
        .position(|s| !matches!(s, Strategy::Spread(_)))?;
    (picker + 1 < strategies.len()).then_some(picker + 1)
}

/// Scopes kept between batches. Each costs a pass over the agents to build and a few bytes
/// per agent to keep; past this many, the least recently used one is dropped.
pub const MAX_SCOPES: usize = 64;
/// Parsed expressions kept between batches (the cache is cleared when full).
const MAX_CACHED_EXPRESSIONS: usize = 1024;

/// What one demand's candidates are: the agents passing its `memberOf` expressions, less
/// those `distinctInstance` excludes, partitioned by its spreads. Two demands with the same
/// key share one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScopeKey {
    member_of: Vec<String>,
    /// Set when the scope's membership depends on the task's group (distinctInstance, spread
    /// on `instanceId`, or an expression reading `task:group`); otherwise every group shares
    /// the scope, spread on an attribute included (the tree keeps every group's counts).
    group: Option<u32>,
    distinct: bool,
    spread: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Partition by an attribute's value; children ordered by tasks of the group under them.
    Attr(String),
    /// Partition by the agent's own count of the group's tasks (spread on `instanceId`):
    /// the child for count k holds the agents running exactly k.
    Instance,
}

/// The key of agents lacking a spread attribute: they form a value of their own.
const MISSING: u32 = u32::MAX;

/// A node of a scope's partition tree. Leaves hold the agents in an index.
struct Node {
    /// Under an attribute level: tasks per group on this node's agents (the spread count).
    /// Kept for every group so that one scope serves every group spreading the same way.
    load: HashMap<u32, u64>,
    members: u32,
    parent: u32,
    /// Children by key: attribute value id, or task count under an instance level (so
    /// iterating in key order visits the least loaded agents first).
    kid: BTreeMap<u32, u32>,
    leaf: Option<Leaf>,
}

struct Scope {
    key: ScopeKey,
    exprs: Vec<Arc<Expr>>,
    group_name: String,
    levels: Vec<Level>,
    nodes: Vec<Node>,
    /// Per agent: the leaf node holding it and its slot there.
    leaf_of: Vec<u32>,
    slot_of: Vec<u32>,
    values: HashMap<String, u32>,
    /// For failure messages: eligible agents, those passing every expression, and how many
    /// eligible agents each expression rejects.
    eligible: u32,
    passing: u32,
    rejected: Vec<u32>,
    last_used: u64,
}

/// The placement engine over one cluster.
pub struct Engine {
    ids: Vec<String>,
    by_id: HashMap<String, u32>,
    capacity: Vec<Free>,
    free: Vec<Free>,
    attributes: Vec<BTreeMap<String, String>>,
    eligibility: Vec<Eligibility>,
    /// Per agent, (group, tasks) sorted by group: what spread and distinctInstance count.
    counts: Vec<Vec<(u32, u32)>>,
    groups: HashMap<String, u32>,
    group_names: Vec<String>,
    /// Every eligible agent; slot = agent index. Unconstrained demands query only this.
    all: Grid,
    /// Largest capacity per dimension, the weights of binpack on both dimensions.
    cpu_ref: u32,
    mem_ref: u32,
    scopes: Vec<Scope>,
    scope_by_key: HashMap<ScopeKey, usize>,
    clock: u64,
    exprs: HashMap<String, Arc<Expr>>,
}

fn free_of(cpu: u32, memory: u32, used_cpu: u32, used_memory: u32) -> Free {
    Free {
        cpu: cpu.saturating_sub(used_cpu),
        mem: memory.saturating_sub(used_memory),
    }
}

impl Engine {
    /// Builds the index from a snapshot: O(agents).
    pub fn new(agents: &[AgentInfo]) -> Engine {
        let cpu_ref = agents.iter().map(|a| a.cpu).max().unwrap_or(0).max(1);
        let mem_ref = agents.iter().map(|a| a.memory).max().unwrap_or(0).max(1);
        let mut e = Engine {
            ids: Vec::with_capacity(agents.len()),
            by_id: HashMap::with_capacity(agents.len()),
            capacity: Vec::with_capacity(agents.len()),
            free: Vec::with_capacity(agents.len()),
            attributes: Vec::with_capacity(agents.len()),
            eligibility: Vec::with_capacity(agents.len()),
            counts: Vec::with_capacity(agents.len()),
            groups: HashMap::new(),
            group_names: Vec::new(),
            all: Grid::new(cpu_ref, mem_ref, false),
            cpu_ref,
            mem_ref,
            scopes: Vec::new(),
            scope_by_key: HashMap::new(),
            clock: 0,
            exprs: HashMap::new(),
        };
        for a in agents {
            e.push(a.clone());
        }
        e
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Free (CPU units, MiB) on an agent as the engine last saw or placed it.
    pub fn free(&self, agent: usize) -> (u32, u32) {
        let f = self.free[agent];
        (f.cpu, f.mem)
    }

    /// Tasks of `group` the engine counts on an agent.
    pub fn group_count(&self, agent: usize, group: &str) -> u32 {
        self.groups
            .get(group)
            .map_or(0, |g| count_in(&self.counts[agent], *g))
    }

    /// Index of the agent with this id.
    pub fn agent_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).map(|i| *i as usize)
    }

    /// Id of the agent at an index that `place` returned.
    pub fn agent_id(&self, agent: usize) -> Option<&str> {
        self.ids.get(agent).map(String::as_str)
    }

    fn intern(&mut self, group: &str) -> u32 {
        if let Some(g) = self.groups.get(group) {
            return *g;
        }
        let g = self.group_names.len() as u32;
        self.groups.insert(group.to_string(), g);
        self.group_names.push(group.to_string());
        g
    }

    fn push(&mut self, a: AgentInfo) -> usize {
        let i = self.ids.len();
        let counts = self.count_list(&a.groups);
        let free = free_of(a.cpu, a.memory, a.used_cpu, a.used_memory);
        self.by_id.insert(a.id.clone(), i as u32);
        self.ids.push(a.id);
        self.capacity.push(Free {
            cpu: a.cpu,
            mem: a.memory,
        });
        self.free.push(free);
        self.attributes.push(a.attributes);
        self.eligibility.push(a.eligibility);
        self.counts.push(counts);
        if a.eligibility == Eligibility::Eligible {
            self.all.insert(i as u32, free, Some(i as u32));
        }
        i
    }

    fn count_list(&mut self, groups: &BTreeMap<String, u32>) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = groups
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(g, n)| (self.intern(g), *n))
            .collect();
        v.sort_unstable();
        v
    }

    /// Adds an agent, or replaces everything the engine knows about one with the same id
    /// (capacity, use, attributes, eligibility, group counts), e.g. after the state machine
    /// applied or refused a plan. Returns its index, which never changes for an id.
    pub fn upsert(&mut self, a: AgentInfo) -> usize {
        if a.cpu > self.cpu_ref || a.memory > self.mem_ref {
            // A larger agent than any before: rebuild the grid so its top bucket can hold it
            // apart from the rest. Rare (fleet changes), O(agents).
            self.cpu_ref = self.cpu_ref.max(a.cpu);
            self.mem_ref = self.mem_ref.max(a.memory);
            let mut g = Grid::new(self.cpu_ref, self.mem_ref, false);
            for i in self.all.members().collect::<Vec<_>>() {
                g.insert(i, self.free[i as usize], Some(i));
            }
            self.all = g;
        }
        let Some(&i) = self.by_id.get(&a.id) else {
            let i = self.push(a);
            let mut scopes = std::mem::take(&mut self.scopes);
            for s in scopes.iter_mut() {
                s.grow(self.ids.len());
                s.learn(i, self);
            }
            self.scopes = scopes;
            return i;
        };
        let i = i as usize;
        let counts = self.count_list(&a.groups);
        self.mutate(i, |e| {
            e.capacity[i] = Free {
                cpu: a.cpu,
                mem: a.memory,
            };
            e.free[i] = free_of(a.cpu, a.memory, a.used_cpu, a.used_memory);
            e.attributes[i] = a.attributes;
            e.eligibility[i] = a.eligibility;
            e.counts[i] = counts;
        });
        i
    }

    /// A task of `group` left `agent` (stopped, or its placement was refused at apply):
    /// gives its capacity back.
    pub fn release(&mut self, agent: usize, cpu: u32, memory: u32, group: &str) {
        let g = self.intern(group);
        self.mutate(agent, |e| {
            let cap = e.capacity[agent];
            let f = &mut e.free[agent];
            f.cpu = f.cpu.saturating_add(cpu).min(cap.cpu);
            f.mem = f.mem.saturating_add(memory).min(cap.mem);
            let c = &mut e.counts[agent];
            if let Ok(k) = c.binary_search_by_key(&g, |(g, _)| *g) {
                c[k].1 -= 1;
                if c[k].1 == 0 {
                    c.remove(k);
                }
            }
        });
    }

    /// Applies `f` to agent `i` with the agent taken out of every index first and put back
    /// after, so no index ever holds a stale view of it.
    fn mutate(&mut self, i: usize, f: impl FnOnce(&mut Engine)) {
        let mut scopes = std::mem::take(&mut self.scopes);
        for s in scopes.iter_mut() {
            s.forget(i, self);
        }
        if self.eligibility[i] == Eligibility::Eligible {
            self.all.remove(i as u32);
        }
        f(self);
        if self.eligibility[i] == Eligibility::Eligible {
            self.all.insert(i as u32, self.free[i], Some(i as u32));
        }
        for s in scopes.iter_mut() {
            s.learn(i, self);
        }
        self.scopes = scopes;
    }

    /// Bytes held by the index and the per-agent state, for the benchmark report.
    pub fn memory_bytes(&self) -> usize {
        let per_agent = self.ids.iter().map(|s| s.capacity() + 24).sum::<usize>()
            + self.capacity.capacity() * 8
            + self.free.capacity() * 8
            + self.eligibility.capacity()
            + self.attributes.capacity() * 24
            + self
                .counts
                .iter()
                .map(|c| 24 + c.capacity() * 8)
                .sum::<usize>()
            + self.by_id.capacity() * 28;
        per_agent + self.all.bytes() + self.scopes.iter().map(Scope::bytes).sum::<usize>()
    }

    fn parse(&mut self, src: &str) -> Result<Arc<Expr>, Error> {
        if let Some(e) = self.exprs.get(src) {
            return Ok(e.clone());
        }
        let e = Arc::new(parse_expression(src).map_err(|e| {
            Error::Constraint(format!("memberOf expression of {} bytes: {e}", src.len()))
        })?);
        if self.exprs.len() >= MAX_CACHED_EXPRESSIONS {
            self.exprs.clear();
        }
        self.exprs.insert(src.to_string(), e.clone());
        Ok(e)
    }

    /// Places every demand in order, each seeing the placements made before it (in this
    /// batch and earlier ones), and keeps them: the engine assumes its plan is applied. If
    /// the state machine refuses a placement, `release` it (or `upsert` the agent's truth).
    ///
    /// A malformed demand (bad expression, too many strategies or constraints, a strategy
    /// after the first binpack or random) refuses the whole batch before anything is placed.
    pub fn place(&mut self, demands: &[Demand], seed: u64) -> Result<Vec<Outcome>, Error> {
        for d in demands {
            if let Some(k) = unsupported_strategy(&d.strategies) {
                return Err(Error::Strategy(format!(
                    "strategy {k} comes after a binpack or random, which picks the agent; \
                     only spreads may come before it and nothing after it"
                )));
            }
            if d.strategies.len() > MAX_STRATEGIES {
                return Err(Error::Strategy(format!(
                    "{} placement strategies; at most {MAX_STRATEGIES} are allowed",
                    d.strategies.len()
                )));
            }
            if d.constraints.len() > MAX_CONSTRAINTS {
                return Err(Error::Constraint(format!(
                    "{} placement constraints; at most {MAX_CONSTRAINTS} are allowed",
                    d.constraints.len()
                )));
            }
            for c in &d.constraints {
                if let Constraint::MemberOf(src) = c {
                    self.parse(src)?;
                }
            }
        }
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(demands.len());
        let mut failed = HashMap::new();
        for d in demands {
            out.push(self.place_one(d, &mut rng, &mut failed)?);
        }
        Ok(out)
    }

    /// `failed` remembers, for this batch, which (scope, CPU, memory) found no room: within a
    /// batch capacity only shrinks and distinctInstance only excludes more, so the answer
    /// stands, and a cluster that is full answers each further task without a search or a
    /// pass over the candidates. The detail describes the cluster when the first one failed.
    fn place_one(
        &mut self,
        d: &Demand,
        rng: &mut Rng,
        failed: &mut HashMap<(Option<usize>, u32, u32), Failure>,
    ) -> Result<Outcome, Error> {
        let mut outcome = Outcome::default();
        if d.count == 0 {
            return Ok(outcome);
        }
        let g = self.intern(&d.group);
        // Spreads partition the candidates; the binpack/random that may end the chain
        // picks inside the chosen partition (`place` refused anything after it).
        let mut spread = Vec::new();
        let mut pick = Pick::Binpack(BinpackField::Both);
        for s in &d.strategies {
            match s {
                Strategy::Spread(attr) => spread.push(attr.clone()),
                Strategy::Binpack(f) => pick = Pick::Binpack(*f),
                Strategy::Random => pick = Pick::Random,
            }
        }
        let mut member_of = Vec::new();
        let mut distinct = false;
        for c in &d.constraints {
            match c {
                Constraint::DistinctInstance => distinct = true,
                Constraint::MemberOf(src) => member_of.push(src.clone()),
            }
        }
        let scope = if member_of.is_empty() && !distinct && spread.is_empty() {
            None
        } else {
            let mut exprs = Vec::with_capacity(member_of.len());
            for src in &member_of {
                exprs.push(self.parse(src)?);
            }
            let by_group =
                distinct || spread.contains(&None) || exprs.iter().any(|e| e.uses_task_group());
            let key = ScopeKey {
                member_of,
                group: by_group.then_some(g),
                distinct,
                spread,
            };
            let (s, evicted) = self.scope_for(key, exprs, &d.group);
            if evicted {
                // The evicted scope's number now names another.
                failed.clear();
            }
            Some(s)
        };
        if let Some(f) = failed.get(&(scope, d.cpu, d.memory)) {
            outcome.failures = vec![f.clone(); d.count as usize];
            return Ok(outcome);
        }
        outcome.placements.reserve(d.count as usize);
        for _ in 0..d.count {
            let found = self
                .find(scope, d, g, pick, rng, false)
                .or_else(|| self.find(scope, d, g, pick, rng, true));
            match found {
                Some(a) => {
                    self.commit(a as usize, d.cpu, d.memory, g);
                    outcome.placements.push(a as usize);
                }
                None => {
                    // Within one demand capacity only shrinks and distinctInstance only
                    // excludes more, so the rest of its tasks fail for the same reason.
                    let f = self.explain(scope, d);
                    let left = d.count as usize - outcome.placements.len();
                    outcome.failures = vec![f.clone(); left];
                    failed.insert((scope, d.cpu, d.memory), f);
                    break;
                }
            }
        }
        Ok(outcome)
    }

    fn find(
        &self,
        scope: Option<usize>,
        d: &Demand,
        g: u32,
        pick: Pick,
        rng: &mut Rng,
        exhaustive: bool,
    ) -> Option<u32> {
        let q = Query {
            cpu: d.cpu,
            mem: d.memory,
            pick,
            free: &self.free,
            cpu_ref: u64::from(self.cpu_ref),
            mem_ref: u64::from(self.mem_ref),
            exhaustive,
        };
        match scope {
            None => self.all.find(&q, rng),
            Some(s) => self.scopes[s].find(0, g, &q, rng),
        }
    }

    /// Takes `cpu` and `memory` on agent `a` for a task of group `g`, and moves the agent in
    /// every index that holds it.
    fn commit(&mut self, a: usize, cpu: u32, memory: u32, g: u32) {
        let f = self.free[a];
        assert!(
            f.cpu >= cpu && f.mem >= memory,
            "placement would oversubscribe agent {}",
            self.ids[a]
        );
        assert_eq!(
            self.eligibility[a],
            Eligibility::Eligible,
            "placement on ineligible agent {}",
            self.ids[a]
        );
        let mut scopes = std::mem::take(&mut self.scopes);
        // Scopes whose membership depends on this group's count (distinctInstance, spread on
        // instanceId) take the agent out and put it back where its new count belongs.
        let mut regroup: Vec<usize> = Vec::new();
        for (k, s) in scopes.iter_mut().enumerate() {
            if s.key.group == Some(g) && s.leaf_of[a] != NIL {
                s.remove(a, &self.counts[a]);
                regroup.push(k);
            }
        }
        let nf = Free {
            cpu: f.cpu - cpu,
            mem: f.mem - memory,
        };
        self.free[a] = nf;
        let c = &mut self.counts[a];
        match c.binary_search_by_key(&g, |(g, _)| *g) {
            Ok(k) => c[k].1 += 1,
            Err(k) => c.insert(k, (g, 1)),
        }
        self.all.moved(a as u32, nf);
        for s in scopes.iter_mut() {
            if s.leaf_of[a] != NIL {
                s.moved(a, nf, g);
            }
        }
        for k in regroup {
            scopes[k].admit(a, self);
        }
        self.scopes = scopes;
    }

    /// The scope for `key`, built if absent; also whether building it evicted another.
    fn scope_for(&mut self, key: ScopeKey, exprs: Vec<Arc<Expr>>, group: &str) -> (usize, bool) {
        self.clock += 1;
        if let Some(&s) = self.scope_by_key.get(&key) {
            self.scopes[s].last_used = self.clock;
            return (s, false);
        }
        let evicted = self.scopes.len() >= MAX_SCOPES;
        if evicted {
            let lru = (0..self.scopes.len())
                .min_by_key(|s| self.scopes[*s].last_used)
                .unwrap_or(0);
            let gone = self.scopes.swap_remove(lru);
            self.scope_by_key.remove(&gone.key);
            if let Some(moved) = self.scopes.get(lru) {
                self.scope_by_key.insert(moved.key.clone(), lru);
            }
        }
        let mut s = Scope::new(key.clone(), exprs, group, self.ids.len());
        s.last_used = self.clock;
        // The one pass over all agents a constrained demand costs, once per scope.
        for i in 0..self.ids.len() {
            s.learn(i, self);
        }
        self.scopes.push(s);
        self.scope_by_key.insert(key, self.scopes.len() - 1);
        (self.scopes.len() - 1, evicted)
    }

    /// Why no candidate could take a task of `d`, in ECS's vocabulary.
    fn explain(&self, scope: Option<usize>, d: &Demand) -> Failure {
        let eligible = self.all.len();
        if eligible == 0 {
            let draining = self
                .eligibility
                .iter()
                .filter(|e| **e == Eligibility::Draining)
                .count();
            let down = self
                .eligibility
                .iter()
                .filter(|e| **e == Eligibility::Down)
                .count();
            return Failure {
                reason: "AGENT_UNAVAILABLE".into(),
                detail: format!(
                    "AGENT_UNAVAILABLE — no agent is eligible for new tasks ({} registered: {draining} draining, {down} down)",
                    self.ids.len()
                ),
            };
        }
        let Some(s) = scope else {
            return self.explain_resources(self.all.members(), d);
        };
        let s = &self.scopes[s];
        if s.passing == 0 {
            // Expressions are named by their position among the demand's constraints (the
            // caller's order), not quoted: one may be kilobytes long, and a failure is
            // stored with the task's answer.
            let positions = d
                .constraints
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c, Constraint::MemberOf(_)))
                .map(|(k, _)| k);
            let each: Vec<String> = positions
                .zip(&s.rejected)
                .map(|(k, n)| {
                    format!(
                        "constraint {k} (memberOf) rejects {n} of {} eligible agents",
                        s.eligible
                    )
                })
                .collect();
            return Failure {
                reason: "ATTRIBUTE".into(),
                detail: format!(
                    "ATTRIBUTE — no eligible agent passes every constraint: {}",
                    each.join("; ")
                ),
            };
        }
        if s.nodes[0].members == 0 {
            return Failure {
                reason: "ATTRIBUTE".into(),
                detail: format!(
                    "ATTRIBUTE — distinctInstance filtered all {} candidate agents: each already runs a task of group `{}`",
                    s.passing, d.group
                ),
            };
        }
        self.explain_resources(s.members(), d)
    }

    /// A pass over the candidates, only on failure: names the dimension that binds and the
    /// agent closest to fitting.
    fn explain_resources(&self, members: impl Iterator<Item = u32>, d: &Demand) -> Failure {
        // (free, agent) maxima; the lowest index wins ties so the message is deterministic.
        let better = |best: Option<(u32, u32)>, v: u32, a: u32| match best {
            Some((bv, ba)) if bv > v || (bv == v && ba < a) => best,
            _ => Some((v, a)),
        };
        let (mut mem, mut cpu, mut mem_with_cpu, mut n) = (None, None, None, 0usize);
        for a in members {
            let f = self.free[a as usize];
            n += 1;
            mem = better(mem, f.mem, a);
            cpu = better(cpu, f.cpu, a);
            if f.cpu >= d.cpu {
                mem_with_cpu = better(mem_with_cpu, f.mem, a);
            }
        }
        let id = |a: u32| &self.ids[a as usize];
        match (mem, cpu, mem_with_cpu) {
            (Some((m, a)), _, _) if m < d.memory => Failure {
                reason: "RESOURCE:MEMORY".into(),
                detail: format!(
                    "RESOURCE:MEMORY — needs {} MiB; largest free is {m} MiB on {} ({n} candidate agents)",
                    d.memory,
                    id(a)
                ),
            },
            (_, Some((c, a)), _) if c < d.cpu => Failure {
                reason: "RESOURCE:CPU".into(),
                detail: format!(
                    "RESOURCE:CPU — needs {} CPU units; largest free is {c} on {} ({n} candidate agents)",
                    d.cpu,
                    id(a)
                ),
            },
            (_, _, Some((m, a))) => Failure {
                reason: "RESOURCE:MEMORY".into(),
                detail: format!(
                    "RESOURCE:MEMORY — needs {} MiB with {} CPU units; agents with that CPU free have at most {m} MiB free ({})",
                    d.memory,
                    d.cpu,
                    id(a)
                ),
            },
            _ => Failure {
                reason: "RESOURCE:CPU".into(),
                detail: format!("RESOURCE:CPU — needs {} CPU units; no candidate agent has it", d.cpu),
            },
        }
    }
}

fn count_in(counts: &[(u32, u32)], g: u32) -> u32 {
    counts
        .binary_search_by_key(&g, |(g, _)| *g)
        .map_or(0, |k| counts[k].1)
}

impl Scope {
    fn new(key: ScopeKey, exprs: Vec<Arc<Expr>>, group: &str, agents: usize) -> Scope {
        let levels = key
            .spread
            .iter()
            .map(|s| match s {
                Some(attr) => Level::Attr(attr.clone()),
                None => Level::Instance,
            })
            .collect();
        let rejected = vec![0; exprs.len()];
        Scope {
            key,
            exprs,
            group_name: group.to_string(),
            levels,
            nodes: vec![Node::new(NIL)],
            leaf_of: vec![NIL; agents],
            slot_of: vec![NIL; agents],
            values: HashMap::new(),
            eligible: 0,
            passing: 0,
            rejected,
            last_used: 0,
        }
    }

    fn grow(&mut self, agents: usize) {
        self.leaf_of.resize(agents, NIL);
        self.slot_of.resize(agents, NIL);
    }

    fn bytes(&self) -> usize {
        12 * self.leaf_of.capacity()
            + self
                .nodes
                .iter()
                .map(|n| {
                    96 + n.load.capacity() * 16
                        + n.kid.len() * 16
                        + n.leaf.as_ref().map_or(0, Leaf::bytes)
                })
                .sum::<usize>()
    }

    fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.leaf.as_ref())
            .flat_map(|l| l.members())
    }

    /// Whether agent `i` passes the expressions; also its share of the failure statistics.
    fn passes(&self, i: usize, e: &Engine) -> (bool, Vec<bool>) {
        let each: Vec<bool> = self
            .exprs
            .iter()
            .map(|x| x.eval(&e.attributes[i], &e.ids[i], &self.group_name))
            .collect();
        (each.iter().all(|b| *b), each)
    }

    fn group_count(&self, i: usize, e: &Engine) -> u32 {
        self.key.group.map_or(0, |g| count_in(&e.counts[i], g))
    }

    /// Counts agent `i` in and, if it is a candidate, inserts it.
    fn learn(&mut self, i: usize, e: &Engine) {
        if e.eligibility[i] != Eligibility::Eligible {
            return;
        }
        self.eligible += 1;
        let (pass, each) = self.passes(i, e);
        for (k, ok) in each.iter().enumerate() {
            if !ok {
                self.rejected[k] += 1;
            }
        }
        if pass {
            self.passing += 1;
            self.admit(i, e);
        }
    }

    /// Undoes `learn` for agent `i` (with the engine still holding its old state).
    fn forget(&mut self, i: usize, e: &Engine) {
        if e.eligibility[i] != Eligibility::Eligible {
            return;
        }
        self.eligible -= 1;
        let (pass, each) = self.passes(i, e);
        for (k, ok) in each.iter().enumerate() {
            if !ok {
                self.rejected[k] -= 1;
            }
        }
        if pass {
            self.passing -= 1;
        }
        self.remove(i, &e.counts[i]);
    }

    /// Inserts an agent known to pass the expressions, unless distinctInstance excludes it.
    fn admit(&mut self, i: usize, e: &Engine) {
        let own = self.group_count(i, e);
        if self.key.distinct && own > 0 {
            return;
        }
        let counts = &e.counts[i];
        let mut n = 0u32;
        self.nodes[0].members += 1;
        for d in 0..self.levels.len() {
            let key = match &self.levels[d] {
                Level::Attr(name) => match e.attributes[i].get(name) {
                    Some(v) => match self.values.get(v) {
                        Some(k) => *k,
                        None => {
                            let k = self.values.len() as u32;
                            self.values.insert(v.clone(), k);
                            k
                        }
                    },
                    None => MISSING,
                },
                Level::Instance => own,
            };
            let child = match self.nodes[n as usize].kid.get(&key) {
                Some(c) => *c,
                None => {
                    let c = self.nodes.len() as u32;
                    self.nodes.push(Node::new(n));
                    self.nodes[n as usize].kid.insert(key, c);
                    c
                }
            };
            let node = &mut self.nodes[child as usize];
            node.members += 1;
            if matches!(self.levels[d], Level::Attr(_)) {
                for (g, c) in counts {
                    *node.load.entry(*g).or_insert(0) += u64::from(*c);
                }
            }
            n = child;
        }
        let Scope {
            nodes,
            slot_of,
            leaf_of,
            ..
        } = self;
        let leaf = nodes[n as usize]
            .leaf
            .get_or_insert_with(|| Leaf::Flat(Vec::new()));
        let slot = leaf.insert(i as u32, &e.free, (e.cpu_ref, e.mem_ref), &mut |a, s| {
            slot_of[a as usize] = s
        });
        slot_of[i] = slot;
        leaf_of[i] = n;
    }

    /// Takes agent `i` out of the tree if it is in; `counts` are its group counts as they
    /// were added (the engine changes them only after this).
    fn remove(&mut self, i: usize, counts: &[(u32, u32)]) {
        let n = self.leaf_of[i];
        if n == NIL {
            return;
        }
        let Scope { nodes, slot_of, .. } = self;
        if let Some(leaf) = nodes[n as usize].leaf.as_mut() {
            leaf.remove(slot_of[i], &mut |a, s| slot_of[a as usize] = s);
        }
        self.leaf_of[i] = NIL;
        self.slot_of[i] = NIL;
        let mut node = n;
        while node != 0 {
            let parent = self.nodes[node as usize].parent;
            let n = &mut self.nodes[node as usize];
            n.members -= 1;
            for (g, c) in counts {
                if let Some(l) = n.load.get_mut(g) {
                    *l = l.saturating_sub(u64::from(*c));
                    if *l == 0 {
                        n.load.remove(g);
                    }
                }
            }
            node = parent;
        }
        self.nodes[0].members -= 1;
    }

    /// Agent `i` took a task of group `g` and now has `f` free; it stays where it is.
    fn moved(&mut self, i: usize, f: crate::Free, g: u32) {
        let n = self.leaf_of[i];
        let slot = self.slot_of[i];
        if let Some(leaf) = self.nodes[n as usize].leaf.as_mut() {
            leaf.moved(slot, f);
        }
        let mut node = n;
        let mut depth = self.levels.len();
        while node != 0 {
            let n = &mut self.nodes[node as usize];
            if matches!(self.levels[depth - 1], Level::Attr(_)) {
                *n.load.entry(g).or_insert(0) += 1;
            }
            node = n.parent;
            depth -= 1;
        }
    }

    /// Spread: visit children least loaded first (for `group`), and take the first that
    /// has room. Visiting in load order costs a sort of the node's children per task: O(V
    /// log V) for V attribute values, the price of one scope serving every group.
    fn find(&self, node: u32, group: u32, q: &Query<'_>, rng: &mut Rng) -> Option<u32> {
        let n = &self.nodes[node as usize];
        if n.members == 0 {
            return None;
        }
        if let Some(leaf) = &n.leaf {
            return leaf.find(q, rng);
        }
        let depth = self.depth(node);
        match self.levels[depth] {
            Level::Instance => n.kid.values().find_map(|c| self.find(*c, group, q, rng)),
            Level::Attr(_) => {
                let mut kids: Vec<(u64, u32)> = n
                    .kid
                    .values()
                    .map(|c| {
                        (
                            self.nodes[*c as usize]
                                .load
                                .get(&group)
                                .copied()
                                .unwrap_or(0),
                            *c,
                        )
                    })
                    .collect();
                kids.sort_unstable();
                kids.into_iter()
                    .find_map(|(_, c)| self.find(c, group, q, rng))
            }
        }
    }

    fn depth(&self, mut node: u32) -> usize {
        let mut d = 0;
        while node != 0 {
            node = self.nodes[node as usize].parent;
            d += 1;
        }
        d
    }
}

impl Node {
    fn new(parent: u32) -> Node {
        Node {
            load: HashMap::new(),
            members: 0,
            parent,
            kid: BTreeMap::new(),
            leaf: None,
        }
    }
}
