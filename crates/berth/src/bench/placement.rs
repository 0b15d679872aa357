//! `berth bench placement`: how tightly placement packs, measured through the control plane
//! where it discriminates. A random sequence of Fargate task sizes arrives one RunTask at a
//! time (binpack on CPU and memory) on simulated agents until the tasks ask for 50 % and
//! then 70 % of the cluster; at each fill the agents Berth used are set beside offline
//! first-fit-decreasing on the same tasks (which sees the whole sequence and sorts it) and
//! beside the lower bound no packing beats.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use rand::{Rng, SeedableRng};

use super::scale::{start_fleet, Fleet};
use super::LocalCluster;

/// Fargate's task sizes (CPU units, MiB): for each vCPU step its smallest memory, one in the
/// middle and its largest.
const SIZES: &[(u32, u32)] = &[
    (256, 512),
    (256, 1024),
    (256, 2048),
    (512, 1024),
    (512, 2048),
    (512, 4096),
    (1024, 2048),
    (1024, 4096),
    (1024, 8192),
    (2048, 4096),
    (2048, 8192),
    (2048, 16384),
    (4096, 8192),
    (4096, 16384),
    (4096, 30720),
];

/// Each agent: 16 vCPU and 64 GiB, the 1:4 shape of general-purpose hosts; the size mix
/// above averages close to that ratio, so neither dimension alone decides.
const AGENT: (u32, u32) = (16 * 1024, 64 * 1024);

#[derive(clap::Args)]
pub struct PlacementArgs {
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Fills to report at, percent of the cluster's CPU or memory, ascending.
    #[arg(long, value_delimiter = ',', default_value = "50,70")]
    pub fills: Vec<u32>,
    /// Seed of the size sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn family(size: (u32, u32)) -> String {
    format!("size-{}-{}", size.0, size.1)
}

/// The share of the cluster `tasks` ask for: the larger of their CPU and memory shares.
fn demand(tasks: &[(u32, u32)], agents: usize) -> f64 {
    let cpu: u64 = tasks.iter().map(|t| t.0 as u64).sum();
    let mem: u64 = tasks.iter().map(|t| t.1 as u64).sum();
    let cpu = cpu as f64 / (AGENT.0 as f64 * agents as f64);
    let mem = mem as f64 / (AGENT.1 as f64 * agents as f64);
    cpu.max(mem)
}

/// Agents no packing can go below: the larger dimension's total over one agent's room.
fn lower_bound(tasks: &[(u32, u32)]) -> usize {
    let cpu: u64 = tasks.iter().map(|t| t.0 as u64).sum();
    let mem: u64 = tasks.iter().map(|t| t.1 as u64).sum();
    (cpu.div_ceil(AGENT.0 as u64)).max(mem.div_ceil(AGENT.1 as u64)) as usize
}

/// Offline first-fit-decreasing over both dimensions: tasks sorted by their larger share
/// of an agent (then the smaller), each into the first agent with room for it.
fn first_fit_decreasing(tasks: &[(u32, u32)]) -> usize {
    let key = |t: &(u32, u32)| {
        let c = t.0 as f64 / AGENT.0 as f64;
        let m = t.1 as f64 / AGENT.1 as f64;
        (c.max(m), c.min(m))
    };
    let mut sorted = tasks.to_vec();
    sorted.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut free: Vec<(u32, u32)> = Vec::new();
    for t in sorted {
        match free.iter_mut().find(|f| f.0 >= t.0 && f.1 >= t.1) {
            Some(f) => {
                f.0 -= t.0;
                f.1 -= t.1;
            }
            None => free.push((AGENT.0 - t.0, AGENT.1 - t.1)),
        }
    }
    free.len()
}

/// The arrival sequence: sizes drawn uniformly from the mix until the tasks ask for
/// `fill` of the cluster.
fn sequence(seed: u64, agents: usize, fill: f64) -> Vec<(u32, u32)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    while demand(&out, agents) < fill {
        out.push(SIZES[rng.gen_range(0..SIZES.len())]);
    }
    out
}

pub async fn placement(c: &mut LocalCluster, a: PlacementArgs) -> Result<()> {
    if a.agents == 0 || a.fills.is_empty() {
        bail!("--agents and --fills must not be 0 or empty");
    }
    if a.fills.iter().any(|f| *f == 0 || *f > 95) || a.fills.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--fills: ascending percentages from 1 to 95");
    }
    let (leader, _) = c.leader(Duration::from_secs(30)).await?;
    for size in SIZES {
        c.register_definition(leader, &family(*size), size.0, size.1)
            .await?;
    }
    let Fleet { handles, stop, .. } = start_fleet(c, leader, a.agents, AGENT, "leader").await?;
    let max_fill = *a.fills.last().unwrap_or(&70) as f64 / 100.0;
    let tasks = sequence(a.seed, a.agents, max_fill);
    println!(
        "placement: {} agents of {} vCPU / {} GiB, {} Fargate sizes drawn uniformly (seed {}), one RunTask per task via the leader, strategy binpack (CPU and memory)",
        a.agents,
        AGENT.0 / 1024,
        AGENT.1 / 1024,
        SIZES.len(),
        a.seed
    );

    let mut client = TasksClient::new(c.api(leader)?);
    let mut used = std::collections::HashSet::new();
    let mut refused = 0usize;
    let mut fills = a.fills.iter().peekable();
    let t0 = Instant::now();
    for (i, size) in tasks.iter().enumerate() {
        let r = client
            .run(RunTaskRequest {
                task_definition: family(*size),
                count: 1,
                client_token: format!("place-{i}"),
                placement_strategy: vec![PlacementStrategy {
                    r#type: "binpack".into(),
                    field: String::new(),
                }],
                ..Default::default()
            })
            .await?
            .into_inner();
        match r.tasks.first() {
            Some(t) if !t.agent_id.is_empty() => {
                used.insert(t.agent_id.clone());
            }
            _ => refused += 1,
        }
        let so_far = &tasks[..=i];
        while let Some(f) = fills.peek() {
            if demand(so_far, a.agents) < **f as f64 / 100.0 {
                break;
            }
            let ffd = first_fit_decreasing(so_far);
            let bound = lower_bound(so_far);
            let ratio = used.len() as f64 / ffd as f64;
            println!(
                "  {f} % fill: {} tasks ({refused} refused); agents used: Berth {}, offline FFD {ffd}, lower bound {bound}; Berth / FFD {ratio:.3} (bar ≤ 1.010: {}), {:.1} s in",
                i + 1,
                used.len(),
                if ratio <= 1.01 { "met" } else { "not met" },
                t0.elapsed().as_secs_f64()
            );
            fills.next();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_decreasing_packs_whole_agents_and_never_beats_the_bound() {
        // Four half-agents fill two agents exactly.
        let half = (AGENT.0 / 2, AGENT.1 / 2);
        assert_eq!(first_fit_decreasing(&[half; 4]), 2);
        assert_eq!(lower_bound(&[half; 4]), 2);
        // A CPU-heavy and a memory-heavy task share an agent.
        let cpu_heavy = (AGENT.0 * 3 / 4, AGENT.1 / 4);
        let mem_heavy = (AGENT.0 / 4, AGENT.1 * 3 / 4);
        assert_eq!(first_fit_decreasing(&[cpu_heavy, mem_heavy]), 1);
        let tasks = sequence(7, 50, 0.7);
        assert!(first_fit_decreasing(&tasks) >= lower_bound(&tasks));
    }

    #[test]
    fn a_sequence_stops_at_its_fill_and_is_the_same_for_a_seed() {
        let tasks = sequence(1, 100, 0.5);
        assert!(demand(&tasks, 100) >= 0.5);
        assert!(demand(&tasks[..tasks.len() - 1], 100) < 0.5);
        assert_eq!(tasks, sequence(1, 100, 0.5));
        // Every size fits an agent.
        assert!(SIZES.iter().all(|s| s.0 <= AGENT.0 && s.1 <= AGENT.1));
    }
}
