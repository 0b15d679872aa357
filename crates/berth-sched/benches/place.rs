//! Criterion benches for the placement engine. The report example prints the full table for
//! BENCHMARKS.md; these track the same paths for regressions.
//!
//! cargo bench -p berth-sched --bench place

use std::hint::black_box;

use berth_sched::bench;
use berth_sched::{parse_expression, Constraint, Demand, Engine, Strategy};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const CPU: u32 = 192 * 1024;
const MEM: u32 = 768 * 1024;

fn run(e: &mut Engine, demands: &[Demand]) -> usize {
    match e.place(demands, 1) {
        Ok(out) => out.iter().map(|o| o.placements.len()).sum(),
        Err(err) => panic!("bench demands are valid: {err}"),
    }
}

/// One batch of about 5,500 tasks (4,000 for 100 agents) into a cluster already holding 45
/// tasks per agent, by cluster size.
fn batch_by_cluster_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_into_half_full_cluster");
    g.sample_size(10);
    for n in [100usize, 1_000, 10_000] {
        let agents = bench::agents(n, CPU, MEM, 3);
        let prefill = bench::fargate_demands(45 * n, 200, 5);
        let batch = bench::fargate_demands(5_500.min(40 * n), 200, 6);
        let tasks: u64 = batch.iter().map(|d| u64::from(d.count)).sum();
        g.throughput(Throughput::Elements(tasks));
        g.bench_function(format!("{n}_agents"), |b| {
            b.iter_batched(
                || {
                    let mut e = Engine::new(&agents);
                    for chunk in prefill.chunks(1000) {
                        run(&mut e, chunk);
                    }
                    e
                },
                // The engine is returned so criterion drops it outside the timing.
                |mut e| {
                    black_box(run(&mut e, &batch));
                    e
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Strategies and constraints a demand carries, by demand number.
type Shape = fn(usize) -> (Vec<Strategy>, Vec<Constraint>);

/// The same batch with a spread or a memberOf constraint into an empty 1,000-agent cluster;
/// the time includes building the demand's scope (one pass over the agents) once.
fn constrained_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("constrained_batch_1000_agents");
    g.sample_size(10);
    let agents = bench::agents(1_000, CPU, MEM, 3);
    let shapes: [(&str, Shape); 2] = [
        ("spread_zone", |_| {
            (vec![Strategy::Spread(Some("zone".into()))], vec![])
        }),
        ("member_of", |_| {
            (
                vec![],
                vec![Constraint::MemberOf(
                    "attribute:zone in [zone-0, zone-1]".into(),
                )],
            )
        }),
    ];
    for (name, shape) in shapes {
        let batch = bench::fargate_demands_with(5_500, 200, 6, shape);
        g.throughput(Throughput::Elements(5_500));
        g.bench_function(name, |b| {
            b.iter_batched(
                || Engine::new(&agents),
                // The engine is returned so criterion drops it outside the timing.
                |mut e| {
                    black_box(run(&mut e, &batch));
                    e
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn parse(c: &mut Criterion) {
    let src = "attribute:zone in [zone-0, zone-1] and (attribute:instance-type =~ m5\\..* or task:group != batch)";
    c.bench_function("parse_expression", |b| {
        b.iter(|| black_box(parse_expression(black_box(src)).is_ok()))
    });
}

criterion_group!(benches, batch_by_cluster_size, constrained_batch, parse);
criterion_main!(benches);
