//! Properties over random clusters and batches: no oversubscription, binding constraints
//! hold, determinism, even spread, and failures only when nothing could take the task.

use std::collections::BTreeMap;

use berth_sched::{
    parse_expression, AgentInfo, BinpackField, Constraint, Demand, Eligibility, Engine, Outcome,
    Strategy,
};
use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig, TestCaseError,
};
use proptest::strategy::Strategy as _;

const ZONES: [&str; 3] = ["z0", "z1", "z2"];
const GROUPS: [&str; 3] = ["g0", "g1", "g2"];
const EXPRESSIONS: [&str; 5] = [
    "attribute:zone in [z0, z1]",
    "attribute:zone != z2 or attribute:type == big",
    "attribute:type exists",
    "attribute:type =~ b.* and task:group != g2",
    "(agent.id != agent-0 and agent.id != agent-1)",
];

/// (cpu, memory, % cpu used, % memory used, zone, type attribute, eligibility roll, groups)
type RawAgent = (
    u32,
    u32,
    u32,
    u32,
    usize,
    Option<bool>,
    u8,
    Vec<(usize, u32)>,
);

fn agent_strategy() -> impl proptest::strategy::Strategy<Value = RawAgent> {
    (
        prop::sample::select(vec![1024u32, 2048, 4096, 300, 5000]),
        prop::sample::select(vec![2048u32, 4096, 8192, 700, 10000]),
        0u32..=100,
        0u32..=100,
        0usize..3,
        prop::option::of(any::<bool>()),
        0u8..10,
        prop::collection::vec((0usize..3, 1u32..3), 0..2),
    )
}

fn build_agents(raw: Vec<RawAgent>) -> Vec<AgentInfo> {
    raw.into_iter()
        .enumerate()
        .map(|(i, (cpu, mem, uc, um, zone, typ, elig, groups))| {
            let mut attributes = BTreeMap::from([("zone".to_string(), ZONES[zone].to_string())]);
            if let Some(big) = typ {
                attributes.insert("type".into(), if big { "big" } else { "small" }.into());
            }
            AgentInfo {
                id: format!("agent-{i}"),
                cpu,
                memory: mem,
                used_cpu: cpu / 100 * uc,
                used_memory: mem / 100 * um,
                attributes,
                eligibility: match elig {
                    0 => Eligibility::Draining,
                    1 => Eligibility::Down,
                    _ => Eligibility::Eligible,
                },
                groups: groups
                    .into_iter()
                    .map(|(g, n)| (GROUPS[g].to_string(), n))
                    .collect(),
            }
        })
        .collect()
}

fn demand_strategy() -> impl proptest::strategy::Strategy<Value = Demand> {
    (
        prop::sample::select(vec![0u32, 256, 300, 512, 1024, 2048]),
        prop::sample::select(vec![0u32, 512, 700, 1024, 2048, 4096]),
        0u32..6,
        0usize..3,
        prop::collection::vec(0u8..6, 0..3),
        prop::collection::vec(0usize..6, 0..3),
    )
        .prop_map(|(cpu, memory, count, g, strategies, constraints)| Demand {
            cpu,
            memory,
            count,
            group: GROUPS[g].into(),
            // Spreads, then at most one binpack or random, last: the chains the engine takes.
            strategies: {
                let mut chain: Vec<Strategy> = strategies
                    .into_iter()
                    .map(|s| match s {
                        0 => Strategy::Binpack(BinpackField::Both),
                        1 => Strategy::Binpack(BinpackField::Cpu),
                        2 => Strategy::Binpack(BinpackField::Memory),
                        3 => Strategy::Spread(Some("zone".into())),
                        4 => Strategy::Spread(None),
                        _ => Strategy::Random,
                    })
                    .collect();
                if let Some(k) = berth_sched::unsupported_strategy(&chain) {
                    chain.truncate(k);
                }
                chain
            },
            constraints: constraints
                .into_iter()
                .map(|c| {
                    if c == 5 {
                        Constraint::DistinctInstance
                    } else {
                        Constraint::MemberOf(EXPRESSIONS[c].into())
                    }
                })
                .collect(),
        })
}

fn allowed(a: &AgentInfo, d: &Demand, group_count: u32) -> bool {
    a.eligibility == Eligibility::Eligible
        && d.constraints.iter().all(|c| match c {
            Constraint::DistinctInstance => group_count == 0,
            Constraint::MemberOf(src) => match parse_expression(src) {
                Ok(e) => e.eval(&a.attributes, &a.id, &d.group),
                Err(_) => false,
            },
        })
}

/// Replays the outcomes against a model of the cluster, checking capacity and constraints
/// for every placement in order.
fn check(
    agents: &[AgentInfo],
    demands: &[Demand],
    outcomes: &[Outcome],
) -> Result<(), TestCaseError> {
    let mut free: Vec<(i64, i64)> = agents
        .iter()
        .map(|a| {
            (
                i64::from(a.cpu) - i64::from(a.used_cpu),
                i64::from(a.memory) - i64::from(a.used_memory),
            )
        })
        .collect();
    let mut groups: Vec<BTreeMap<String, u32>> = agents.iter().map(|a| a.groups.clone()).collect();
    prop_assert_eq!(outcomes.len(), demands.len());
    for (d, o) in demands.iter().zip(outcomes) {
        prop_assert_eq!(o.placements.len() + o.failures.len(), d.count as usize);
        for &i in &o.placements {
            let count = groups[i].get(&d.group).copied().unwrap_or(0);
            prop_assert!(
                allowed(&agents[i], d, count),
                "placement on agent {i} breaks a constraint of {d:?}"
            );
            free[i].0 -= i64::from(d.cpu);
            free[i].1 -= i64::from(d.memory);
            prop_assert!(
                free[i].0 >= 0 && free[i].1 >= 0,
                "agent {i} oversubscribed: {:?}",
                free[i]
            );
            *groups[i].entry(d.group.clone()).or_insert(0) += 1;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_oversubscribes_and_constraints_hold(
        raw in prop::collection::vec(agent_strategy(), 0..160),
        demands in prop::collection::vec(demand_strategy(), 1..24),
        seed in any::<u64>(),
    ) {
        // Up to 160 agents so that scopes outgrow a flat list (64) and become grids.
        let agents = build_agents(raw);
        let out = berth_sched::place(&agents, &demands, seed);
        prop_assert!(out.is_ok());
        if let Ok(out) = out {
            check(&agents, &demands, &out)?;
        }
    }

    #[test]
    fn same_input_and_seed_same_output(
        raw in prop::collection::vec(agent_strategy(), 0..40),
        demands in prop::collection::vec(demand_strategy(), 1..12),
        seed in any::<u64>(),
    ) {
        let agents = build_agents(raw);
        prop_assert_eq!(berth_sched::place(&agents, &demands, seed), berth_sched::place(&agents, &demands, seed));
    }

    #[test]
    fn spread_on_zone_with_room_is_even(
        per_zone in prop::collection::vec(1usize..5, 2..5),
        tasks in 1u32..40,
        then in prop::sample::select(vec![None, Some(Strategy::Random), Some(Strategy::Binpack(BinpackField::Memory)), Some(Strategy::Spread(None))]),
    ) {
        let mut agents = Vec::new();
        for (z, n) in per_zone.iter().enumerate() {
            for _ in 0..*n {
                let mut attributes = BTreeMap::new();
                attributes.insert("zone".to_string(), format!("zone-{z}"));
                agents.push(AgentInfo {
                    id: format!("agent-{}", agents.len()),
                    cpu: 64 * 1024,
                    memory: 256 * 1024,
                    used_cpu: 0,
                    used_memory: 0,
                    attributes,
                    eligibility: Eligibility::Eligible,
                    groups: BTreeMap::new(),
                });
            }
        }
        let mut strategies = vec![Strategy::Spread(Some("zone".into()))];
        strategies.extend(then);
        let d = Demand { cpu: 256, memory: 512, count: tasks, group: "web".into(), strategies, constraints: vec![] };
        let out = berth_sched::place(&agents, &[d], 9);
        prop_assert!(out.is_ok());
        if let Ok(out) = out {
            prop_assert!(out[0].failures.is_empty());
            let mut counts = vec![0u32; per_zone.len()];
            for i in &out[0].placements {
                let z: usize = agents[*i].attributes["zone"][5..].parse().unwrap_or(usize::MAX);
                counts[z] += 1;
            }
            let (lo, hi) = (counts.iter().min(), counts.iter().max());
            prop_assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "per-zone counts {counts:?}");
        }
    }

    /// Demands go one per call into a long-lived engine, with releases and agent updates in
    /// between, so the kept index and scopes are exercised; after each call, a failed task
    /// must have had no eligible, constraint-passing agent with room.
    #[test]
    fn failures_only_when_nothing_could_take_the_task(
        raw in prop::collection::vec(agent_strategy(), 0..100),
        steps in prop::collection::vec((demand_strategy(), 0u8..4, 0usize..100), 1..24),
        seed in any::<u64>(),
    ) {
        let mut agents = build_agents(raw);
        let mut engine = Engine::new(&agents);
        let mut placed: Vec<(usize, Demand)> = Vec::new();
        for (k, (d, op, pick)) in steps.into_iter().enumerate() {
            match op {
                // Give a task back.
                0 if !placed.is_empty() => {
                    let (i, d) = placed.swap_remove(pick % placed.len());
                    engine.release(i, d.cpu, d.memory, &d.group);
                    agents[i].used_cpu -= d.cpu;
                    agents[i].used_memory -= d.memory;
                    if let Some(n) = agents[i].groups.get_mut(&d.group) {
                        *n -= 1;
                    }
                }
                // Change an agent's eligibility through upsert.
                1 if !agents.is_empty() => {
                    let i = pick % agents.len();
                    agents[i].eligibility = match agents[i].eligibility {
                        Eligibility::Eligible => Eligibility::Draining,
                        _ => Eligibility::Eligible,
                    };
                    prop_assert_eq!(engine.upsert(agents[i].clone()), i);
                }
                _ => {}
            }
            let before = agents.clone();
            let out = engine.place(std::slice::from_ref(&d), seed.wrapping_add(k as u64));
            prop_assert!(out.is_ok());
            let Ok(out) = out else { continue };
            check(&before, std::slice::from_ref(&d), &out)?;
            for &i in &out[0].placements {
                agents[i].used_cpu += d.cpu;
                agents[i].used_memory += d.memory;
                *agents[i].groups.entry(d.group.clone()).or_insert(0) += 1;
                placed.push((i, d.clone()));
            }
            for (i, a) in agents.iter().enumerate() {
                prop_assert_eq!(engine.free(i), (a.cpu.saturating_sub(a.used_cpu), a.memory.saturating_sub(a.used_memory)));
            }
            if !out[0].failures.is_empty() {
                for a in &agents {
                    let count = a.groups.get(&d.group).copied().unwrap_or(0);
                    let room = a.cpu.saturating_sub(a.used_cpu) >= d.cpu && a.memory.saturating_sub(a.used_memory) >= d.memory;
                    prop_assert!(!(room && allowed(a, &d, count)), "{} could take {d:?}, failed with {:?}", a.id, out[0].failures[0]);
                }
            }
        }
    }
}
