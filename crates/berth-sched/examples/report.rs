//! Prints the placement engine's benchmark report: speed, packing quality against the lower
//! bound and against baselines, and memory. Figures go to BENCHMARKS.md as printed.
//!
//! cargo run --release -p berth-sched --example report [-- --quick]

use std::time::{Duration, Instant};

use berth_sched::bench::{self, baseline, Packing};
use berth_sched::{Constraint, Demand, Engine, Strategy};

/// Agent shape: 192 vCPU, 768 GiB (a large 4 GiB-per-vCPU host). With 10,000 of them the
/// 1,000,000-task mix needs about 9,100 by memory and 7,500 by CPU.
const CPU: u32 = 192 * 1024;
const MEM: u32 = 768 * 1024;
const ZONES: usize = 3;
const GROUPS: usize = 200;
/// Demands per `Engine::place` call in batched runs, about 5,500 tasks: a leader's batch.
const BATCH: usize = 1000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 5 };
    println!("# berth-sched placement report");
    println!("agents: {} vCPU / {} GiB each, {ZONES} zones; tasks: Fargate size mix {:?} per mille over CPU sizes 256..16384, memory uniform over each size's choices; demands of 1..10 tasks, {GROUPS} groups; binpack on both dimensions unless said", CPU / 1024, MEM / 1024, bench::FARGATE_MIX);
    println!(
        "one core: every figure is one thread; timings are the best and median of {runs} runs\n"
    );

    headline(runs);
    scaling(runs, quick);
    constrained(runs);
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed());
        last = Some(out);
    }
    times.sort();
    let Some(out) = last else {
        unreachable!("runs >= 1")
    };
    (times[0], times[times.len() / 2], out)
}

fn tasks(demands: &[Demand]) -> u64 {
    demands.iter().map(|d| u64::from(d.count)).sum()
}

fn run_batched(agents: &[berth_sched::AgentInfo], demands: &[Demand]) -> (Engine, u64) {
    let mut e = Engine::new(agents);
    let mut failed = 0;
    for (k, chunk) in demands.chunks(BATCH).enumerate() {
        let out = match e.place(chunk, k as u64) {
            Ok(o) => o,
            Err(err) => panic!("benchmark demands are valid: {err}"),
        };
        failed += out.iter().map(|o| o.failures.len() as u64).sum::<u64>();
    }
    (e, failed)
}

/// (CPU units, MiB) per agent.
type PerAgent = Vec<(u32, u32)>;

/// Capacity and free capacity of every agent after an engine run.
fn engine_packing(e: &Engine) -> (PerAgent, PerAgent) {
    let cap = vec![(CPU, MEM); e.len()];
    let free = (0..e.len()).map(|i| e.free(i)).collect();
    (cap, free)
}

fn show(name: &str, p: Packing, failed: u64, lb: u64, time: Option<Duration>) {
    let gib = |m: u64| m as f64 / 1024.0;
    println!(
        "| {name} | {} | {:.4} | {} | {:.1} vCPU / {:.1} GiB | {:.1} vCPU / {:.1} GiB | {} |",
        p.agents_used,
        p.agents_used as f64 / lb as f64,
        failed,
        p.stranded_cpu as f64 / 1024.0,
        gib(p.stranded_mem),
        p.free_cpu as f64 / 1024.0,
        gib(p.free_mem),
        time.map_or("—".to_string(), |t| format!("{:.3} s", t.as_secs_f64())),
    );
}

fn headline(runs: usize) {
    let agents = bench::agents(10_000, CPU, MEM, ZONES);
    let demands = bench::fargate_demands(1_000_000, GROUPS, 1);
    let n = tasks(&demands);
    let lb = bench::lower_bound(&demands, CPU, MEM);
    println!("## 1,000,000 tasks onto 10,000 agents\n");
    println!(
        "{} tasks in {} demands; lower bound {lb} agents\n",
        n,
        demands.len()
    );

    let (best, median, out) = timed(runs, || berth_sched::place(&agents, &demands, 7));
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("benchmark demands are valid: {e}"),
    };
    let placed: usize = out.iter().map(|o| o.placements.len()).sum();
    println!("- one `place()` call (index build included): best {:.3} s, median {:.3} s, {:.0} ns/task, {placed} placed", best.as_secs_f64(), median.as_secs_f64(), best.as_nanos() as f64 / n as f64);
    let (bbest, bmedian, (engine, failed)) = timed(runs, || run_batched(&agents, &demands));
    println!("- `Engine::place` in batches of {BATCH} demands: best {:.3} s, median {:.3} s, {:.0} ns/task", bbest.as_secs_f64(), bmedian.as_secs_f64(), bbest.as_nanos() as f64 / n as f64);
    let (tb, _, _) = timed(runs, || Engine::new(&agents));
    println!("- index build alone: {:.2} ms", tb.as_secs_f64() * 1e3);
    let empty = Engine::new(&agents).memory_bytes();
    let full = engine.memory_bytes();
    println!(
        "- memory: {} bytes per agent in the fresh index ({} KiB for 10,000 agents); after the run {:.1} bytes per agent, growth {:.2} bytes per placement (per-agent group counts); an `Outcome` holds 8 bytes per placement",
        empty / agents.len(),
        empty / 1024,
        full as f64 / agents.len() as f64,
        (full - empty) as f64 / n as f64
    );

    let (cap, free) = engine_packing(&engine);
    let min_cpu = 256;
    let min_mem = 512;
    println!("\n| placer | agents used | ÷ lower bound | failed | stranded (free CPU with < 512 MiB free / free memory with < 256 units free) | all free on used agents | time |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    show(
        "berth-sched (binpack both)",
        bench::packing(&cap, &free, min_cpu, min_mem),
        failed,
        lb,
        Some(bbest),
    );
    let (t, _, (free, failed)) = timed(1, || baseline::first_fit(&cap, &demands));
    show(
        "first-fit (max-tree)",
        bench::packing(&cap, &free, min_cpu, min_mem),
        failed,
        lb,
        Some(t),
    );
    let (t, _, (free, failed)) = timed(1, || baseline::random(&cap, &demands, 3));
    show(
        "random",
        bench::packing(&cap, &free, min_cpu, min_mem),
        failed,
        lb,
        Some(t),
    );
    let (t, _, (free, failed)) = timed(1, || baseline::nomad(&cap, &demands, 3));
    show(
        "Nomad-like BestFit-v3 over ⌈log2 N⌉ = 14 feasible",
        bench::packing(&cap, &free, min_cpu, min_mem),
        failed,
        lb,
        Some(t),
    );
    for (name, f) in [
        ("berth-sched binpack cpu", berth_sched::BinpackField::Cpu),
        (
            "berth-sched binpack memory",
            berth_sched::BinpackField::Memory,
        ),
    ] {
        let ds: Vec<Demand> = demands
            .iter()
            .map(|d| Demand {
                strategies: vec![Strategy::Binpack(f)],
                ..d.clone()
            })
            .collect();
        let (t, _, (e, failed)) = timed(1, || run_batched(&agents, &ds));
        let (cap, free) = engine_packing(&e);
        show(
            name,
            bench::packing(&cap, &free, min_cpu, min_mem),
            failed,
            lb,
            Some(t),
        );
    }
    println!();
}

fn scaling(runs: usize, quick: bool) {
    println!("## Time per placement by cluster size\n");
    println!("each cluster is filled to 90 tasks per agent (about 90 % of memory) in batches of {BATCH} demands; the time covers every placement from empty to full\n");
    println!(
        "| agents | tasks | best total | ns per placement (best) | ns per placement (median) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let sizes: &[usize] = if quick {
        &[100, 1_000, 10_000]
    } else {
        &[100, 1_000, 10_000, 100_000]
    };
    for &n in sizes {
        let agents = bench::agents(n, CPU, MEM, ZONES);
        let demands = bench::fargate_demands(90 * n, GROUPS, 11);
        let t = tasks(&demands);
        let r = if n >= 100_000 { runs.min(3) } else { runs };
        let (best, median, (_, failed)) = timed(r, || run_batched(&agents, &demands));
        assert_eq!(failed, 0, "the scaling runs are sized to fit");
        println!(
            "| {n} | {t} | {:.3} s | {:.0} | {:.0} |",
            best.as_secs_f64(),
            best.as_nanos() as f64 / t as f64,
            median.as_nanos() as f64 / t as f64
        );
    }
    println!();
}

fn constrained(runs: usize) {
    println!("## Strategies and constraints, 1,000,000 tasks onto 10,000 agents\n");
    println!("| demands | time (best) | ns per task | agents used | failed |");
    println!("| --- | --- | --- | --- | --- |");
    let agents = bench::agents(10_000, CPU, MEM, ZONES);
    type Shape = fn(usize) -> (Vec<Strategy>, Vec<Constraint>);
    let shapes: [(&str, Shape); 4] = [
        ("spread(zone), then binpack", |_| {
            (
                vec![
                    Strategy::Spread(Some("zone".into())),
                    Strategy::Binpack(berth_sched::BinpackField::Both),
                ],
                vec![],
            )
        }),
        ("memberOf `attribute:instance-type == standard`", |_| {
            (
                vec![],
                vec![Constraint::MemberOf(
                    "attribute:instance-type == standard".into(),
                )],
            )
        }),
        ("random", |_| (vec![Strategy::Random], vec![])),
        (
            "a third each: plain, spread(zone), memberOf zone in [zone-0, zone-1]",
            |k| match k % 3 {
                0 => (vec![], vec![]),
                1 => (vec![Strategy::Spread(Some("zone".into()))], vec![]),
                _ => (
                    vec![],
                    vec![Constraint::MemberOf(
                        "attribute:zone in [zone-0, zone-1]".into(),
                    )],
                ),
            },
        ),
    ];
    for (name, shape) in shapes {
        let demands = bench::fargate_demands_with(1_000_000, GROUPS, 1, shape);
        let n = tasks(&demands);
        let (best, _, (e, failed)) = timed(runs.min(3), || run_batched(&agents, &demands));
        let (cap, free) = engine_packing(&e);
        let p = bench::packing(&cap, &free, 256, 512);
        println!(
            "| {name} | {:.3} s | {:.0} | {} | {failed} |",
            best.as_secs_f64(),
            best.as_nanos() as f64 / n as f64,
            p.agents_used
        );
    }
    println!();
}
