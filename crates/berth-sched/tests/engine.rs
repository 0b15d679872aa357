//! The engine's behaviour, one rule per test: a state in memory, a batch, the plan asserted.

use std::collections::BTreeMap;

use berth_sched::{
    place, AgentInfo, BinpackField, Constraint, Demand, Eligibility, Engine, Error, Outcome,
    Strategy,
};

fn agent(id: &str, cpu: u32, memory: u32, zone: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        cpu,
        memory,
        used_cpu: 0,
        used_memory: 0,
        attributes: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        eligibility: Eligibility::Eligible,
        groups: BTreeMap::new(),
    }
}

fn demand(cpu: u32, memory: u32, count: u32) -> Demand {
    Demand {
        cpu,
        memory,
        count,
        group: "family:web".into(),
        strategies: vec![],
        constraints: vec![],
    }
}

fn run(agents: &[AgentInfo], demands: &[Demand]) -> Vec<Outcome> {
    match place(agents, demands, 42) {
        Ok(o) => o,
        Err(e) => panic!("valid demands refused: {e}"),
    }
}

#[test]
fn binpack_both_fills_the_fullest_agent_first() {
    let mut agents = vec![
        agent("a", 4096, 8192, "z1"),
        agent("b", 4096, 8192, "z1"),
        agent("c", 4096, 8192, "z1"),
    ];
    agents[1].used_cpu = 2048;
    agents[1].used_memory = 4096;
    let out = run(&agents, &[demand(1024, 2048, 2)]);
    assert_eq!(out[0].placements, vec![1, 1]);
    assert!(out[0].failures.is_empty());
}

#[test]
fn binpack_on_one_dimension_looks_at_that_dimension() {
    let mut agents = vec![agent("a", 4096, 16384, "z1"), agent("b", 4096, 16384, "z1")];
    // a: little CPU left, much memory; b: the reverse.
    agents[0].used_cpu = 3072;
    agents[1].used_memory = 14336;
    let mut d = demand(256, 512, 1);
    d.strategies = vec![Strategy::Binpack(BinpackField::Cpu)];
    assert_eq!(run(&agents, &[d.clone()])[0].placements, vec![0]);
    d.strategies = vec![Strategy::Binpack(BinpackField::Memory)];
    assert_eq!(run(&agents, &[d])[0].placements, vec![1]);
}

#[test]
fn a_batch_accounts_for_its_own_placements() {
    let agents = vec![agent("a", 2048, 4096, "z1")];
    let out = run(
        &agents,
        &[
            demand(1024, 2048, 1),
            demand(1024, 2048, 1),
            demand(1024, 2048, 1),
        ],
    );
    assert_eq!(out[0].placements, vec![0]);
    assert_eq!(out[1].placements, vec![0]);
    assert!(out[2].placements.is_empty());
    assert_eq!(out[2].failures.len(), 1);
}

#[test]
fn spread_over_three_zones_lands_one_task_per_zone() {
    let agents: Vec<AgentInfo> = (0..9)
        .map(|i| agent(&format!("agent-{i}"), 4096, 8192, &format!("z{}", i % 3)))
        .collect();
    let mut d = demand(256, 512, 3);
    d.strategies = vec![Strategy::Spread(Some("zone".into()))];
    let out = run(&agents, &[d]);
    let mut zones: Vec<&str> = out[0]
        .placements
        .iter()
        .map(|i| agents[*i].attributes["zone"].as_str())
        .collect();
    zones.sort();
    assert_eq!(zones, vec!["z0", "z1", "z2"]);
}

#[test]
fn spread_counts_tasks_already_running_in_the_group() {
    let mut agents = vec![agent("a", 4096, 8192, "z1"), agent("b", 4096, 8192, "z2")];
    agents[0].groups.insert("family:web".into(), 2);
    agents[1].groups.insert("family:other".into(), 5);
    let mut d = demand(256, 512, 3);
    d.strategies = vec![Strategy::Spread(Some("zone".into()))];
    let out = run(&agents, &[d]);
    // z2 has 0 of the group, z1 has 2: the first two go to z2, then alternate.
    assert_eq!(out[0].placements, vec![1, 1, 0]);
}

#[test]
fn spread_on_instance_then_binpack() {
    let agents: Vec<AgentInfo> = (0..3)
        .map(|i| agent(&format!("agent-{i}"), 4096, 8192, "z"))
        .collect();
    let mut d = demand(256, 512, 6);
    d.strategies = vec![
        Strategy::Spread(None),
        Strategy::Binpack(BinpackField::Memory),
    ];
    let out = run(&agents, &[d]);
    let mut per = [0; 3];
    for p in &out[0].placements {
        per[*p] += 1;
    }
    assert_eq!(per, [2, 2, 2]);
}

/// Issue 11: `binpack` then `spread` placed as if the spread were not there. A strategy
/// after the one that picks is refused, whatever it is; spreads before it still work.
#[test]
fn a_strategy_after_binpack_or_random_is_refused_not_ignored() {
    let agents = vec![agent("a", 4096, 8192, "z1"), agent("b", 4096, 8192, "z2")];
    for chain in [
        vec![
            Strategy::Binpack(BinpackField::Memory),
            Strategy::Spread(Some("zone".into())),
        ],
        vec![Strategy::Random, Strategy::Binpack(BinpackField::Cpu)],
        vec![
            Strategy::Spread(Some("zone".into())),
            Strategy::Binpack(BinpackField::Cpu),
            Strategy::Binpack(BinpackField::Memory),
        ],
    ] {
        let mut d = demand(256, 512, 1);
        d.strategies = chain.clone();
        match place(&agents, &[d], 1) {
            Err(Error::Strategy(m)) => {
                assert!(m.contains("after a binpack or random"), "{m}")
            }
            other => panic!("{chain:?} was not refused: {other:?}"),
        }
    }
    let mut d = demand(256, 512, 2);
    d.strategies = vec![
        Strategy::Spread(Some("zone".into())),
        Strategy::Spread(None),
        Strategy::Binpack(BinpackField::Memory),
    ];
    let out = run(&agents, &[d]);
    let mut placed = out[0].placements.clone();
    placed.sort_unstable();
    assert_eq!(placed, vec![0, 1], "one task per zone");
}

#[test]
fn distinct_instance_returns_the_excess_as_failures() {
    let agents: Vec<AgentInfo> = (0..3)
        .map(|i| agent(&format!("agent-{i}"), 4096, 8192, "z"))
        .collect();
    let mut d = demand(256, 512, 5);
    d.constraints = vec![Constraint::DistinctInstance];
    let out = run(&agents, &[d]);
    let mut placed = out[0].placements.clone();
    placed.sort();
    assert_eq!(placed, vec![0, 1, 2]);
    assert_eq!(out[0].failures.len(), 2);
    assert_eq!(out[0].failures[0].reason, "ATTRIBUTE");
    assert!(
        out[0].failures[0].detail.contains("distinctInstance"),
        "{}",
        out[0].failures[0].detail
    );
}

#[test]
fn member_of_filters_and_failure_names_the_constraint() {
    let agents = vec![
        agent("a", 4096, 8192, "z1"),
        agent("b", 4096, 8192, "z2"),
        agent("c", 4096, 8192, "z3"),
    ];
    let mut d = demand(256, 512, 2);
    d.constraints = vec![Constraint::MemberOf(
        "attribute:zone in [z2, z3] and agent.id != c".into(),
    )];
    let out = run(&agents, &[d.clone()]);
    assert_eq!(out[0].placements, vec![1, 1]);
    d.constraints = vec![
        Constraint::MemberOf("attribute:zone == z9".into()),
        Constraint::MemberOf("attribute:zone exists".into()),
    ];
    let out = run(&agents, &[d]);
    assert_eq!(out[0].failures.len(), 2);
    let f = &out[0].failures[0];
    assert_eq!(f.reason, "ATTRIBUTE");
    assert!(
        f.detail.contains("constraint 0 (memberOf) rejects 3 of 3"),
        "{}",
        f.detail
    );
    assert!(
        f.detail.contains("constraint 1 (memberOf) rejects 0 of 3"),
        "{}",
        f.detail
    );
}

#[test]
fn task_group_expressions_see_the_demand_group() {
    let agents = vec![agent("a", 4096, 8192, "z1"), agent("b", 4096, 8192, "z2")];
    let mut d = demand(256, 512, 1);
    d.constraints = vec![Constraint::MemberOf("task:group == family:web and attribute:zone == z2 or task:group != family:web and attribute:zone == z1".into())];
    assert_eq!(run(&agents, &[d.clone()])[0].placements, vec![1]);
    d.group = "family:api".into();
    assert_eq!(run(&agents, &[d])[0].placements, vec![0]);
}

#[test]
fn resource_failures_name_the_binding_dimension() {
    let mut agents = vec![
        agent("agent-1", 4096, 8192, "z"),
        agent("agent-3", 4096, 8192, "z"),
    ];
    agents[0].used_memory = 7168;
    agents[1].used_memory = 6144;
    let out = run(&agents, &[demand(256, 4096, 1)]);
    let f = &out[0].failures[0];
    assert_eq!(f.reason, "RESOURCE:MEMORY");
    assert!(
        f.detail
            .starts_with("RESOURCE:MEMORY — needs 4096 MiB; largest free is 2048 MiB on agent-3"),
        "{}",
        f.detail
    );

    let out = run(&agents, &[demand(8192, 512, 1)]);
    let f = &out[0].failures[0];
    assert_eq!(f.reason, "RESOURCE:CPU");
    assert!(
        f.detail
            .contains("needs 8192 CPU units; largest free is 4096 on agent-1"),
        "{}",
        f.detail
    );

    // Enough CPU on one agent and enough memory on another, never both on one.
    let mut agents = vec![agent("a", 4096, 8192, "z"), agent("b", 4096, 8192, "z")];
    agents[0].used_cpu = 4096;
    agents[1].used_memory = 8192;
    let f = &run(&agents, &[demand(1024, 1024, 1)])[0].failures[0];
    assert_eq!(f.reason, "RESOURCE:MEMORY");
    assert!(
        f.detail
            .contains("agents with that CPU free have at most 0 MiB free (b)"),
        "{}",
        f.detail
    );
}

#[test]
fn no_eligible_agent_is_agent_unavailable() {
    let mut agents = vec![agent("a", 4096, 8192, "z"), agent("b", 4096, 8192, "z")];
    agents[0].eligibility = Eligibility::Draining;
    agents[1].eligibility = Eligibility::Down;
    let f = &run(&agents, &[demand(256, 512, 1)])[0].failures[0];
    assert_eq!(f.reason, "AGENT_UNAVAILABLE");
    assert!(f.detail.contains("1 draining, 1 down"), "{}", f.detail);
    let f = &run(&[], &[demand(256, 512, 1)])[0].failures[0];
    assert_eq!(f.reason, "AGENT_UNAVAILABLE");
}

#[test]
fn a_bad_expression_refuses_the_batch_with_its_position() {
    let agents = vec![agent("a", 4096, 8192, "z")];
    let mut d = demand(256, 512, 1);
    d.constraints = vec![Constraint::MemberOf("attribute:zone = z".into())];
    match place(&agents, &[demand(256, 512, 1), d], 1) {
        Err(Error::Constraint(m)) => assert!(m.contains("at byte 15"), "{m}"),
        other => panic!("expected a constraint error, got {other:?}"),
    }
}

#[test]
fn random_follows_the_seed() {
    let agents: Vec<AgentInfo> = (0..50)
        .map(|i| agent(&format!("agent-{i}"), 4096, 8192, "z"))
        .collect();
    let mut d = demand(256, 512, 10);
    d.strategies = vec![Strategy::Random];
    let a = place(&agents, &[d.clone()], 1).map(|o| o[0].placements.clone());
    let b = place(&agents, &[d.clone()], 1).map(|o| o[0].placements.clone());
    let c = place(&agents, &[d], 2).map(|o| o[0].placements.clone());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn the_engine_keeps_state_between_batches_and_takes_updates() {
    let agents = vec![agent("a", 2048, 4096, "z1"), agent("b", 2048, 4096, "z2")];
    let mut e = Engine::new(&agents);
    let mut spread = demand(1024, 2048, 2);
    spread.strategies = vec![Strategy::Spread(Some("zone".into()))];
    let out = e.place(&[spread.clone()], 1).map(|o| o[0].placements.len());
    assert_eq!(out, Ok(2));
    assert_eq!(e.free(0), (1024, 2048));
    assert_eq!(e.group_count(1, "family:web"), 1);
    // The scope built for the spread is kept and must see the release.
    e.release(0, 1024, 2048, "family:web");
    assert_eq!(e.free(0), (2048, 4096));
    let out = e
        .place(&[spread.clone()], 2)
        .map(|o| o[0].placements.clone());
    assert_eq!(out, Ok(vec![0, 0]));
    // Drain b: nothing more may land there.
    let mut b = agents[1].clone();
    b.eligibility = Eligibility::Draining;
    b.used_cpu = 1024;
    b.used_memory = 2048;
    assert_eq!(e.upsert(b), 1);
    let out = e.place(&[spread], 3).map(|o| o[0].clone());
    let Ok(o) = out else { panic!("valid") };
    assert!(o.placements.is_empty());
    assert_eq!(o.failures.len(), 2);
    // A new agent joins and is used.
    let c = agent("c", 8192, 16384, "z3");
    assert_eq!(e.upsert(c), 2);
    let out = e
        .place(&[demand(4096, 8192, 1)], 4)
        .map(|o| o[0].placements.clone());
    assert_eq!(out, Ok(vec![2]));
}
