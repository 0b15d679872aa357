//! `berth-chaos`: runs concurrent clients against the docker-compose cluster through the
//! public API, injects faults from a seed, heals, checks, and reports. Exit status 0: no
//! violation; 1: a violation; 2: the run itself could not be made (cluster not up, …).
//! `chaos/run.sh` brings the cluster up and calls this.

mod checks;
mod cluster;
mod faults;
mod history;
mod launches;
mod linear;
mod report;
mod schedules;
mod services;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::{ContainerDefinition, RegisterTaskDefinitionRequest, TaskDefinitionSpec};
use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::checks::CheckResult;
use crate::cluster::{agent_channel, lazy_channel, Cluster};
use crate::faults::{FaultKind, Nemesis};
use crate::history::History;
use crate::workload::{Known, WorkloadConfig};
use berth_simagent::{self as simagent, SimAgent};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentsMode {
    /// The compose agents (berth-agent-a/b/c, ids compose-a/b/c) run real containers.
    Real,
    /// Agents simulated in this process over the agent protocol.
    Sim,
}

#[derive(Parser)]
#[command(
    name = "berth-chaos",
    about = "Chaos suite for a docker-compose Berth cluster"
)]
struct Args {
    /// Seed of every random choice (faults, their timing, the clients' operations).
    #[arg(long)]
    seed: Option<u64>,
    /// The short CI run: a fixed set of faults (3 leader kills, a pause, an isolation, a
    /// full restart, one of each other kind) in a seeded order.
    #[arg(long, conflicts_with = "duration")]
    short: bool,
    /// Run faults drawn from the seed for this long (e.g. 30m, 90s, 1h).
    #[arg(long)]
    duration: Option<String>,
    /// Control nodes in the cluster (3, or 5 with deploy/up.sh --five).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    #[arg(long, value_enum, default_value_t = AgentsMode::Sim)]
    agents: AgentsMode,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// The cluster's certificates (deploy/up.sh makes them there).
    #[arg(long, default_value = "deploy/.tls")]
    tls_dir: PathBuf,
    /// The cluster runs with --insecure: plaintext everywhere.
    #[arg(long)]
    insecure: bool,
    /// Pause between one client's operations, ms, as LO-HI.
    #[arg(long, default_value = "10-40")]
    think_ms: String,
    /// Longest a client waits for an answer; past it the outcome is unknown (info).
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// The cluster's --snapshot-every (to aim kills at snapshot points).
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    #[arg(long, default_value_t = 5_000)]
    keep_behind_snapshot: u64,
    /// Quiet time between faults, ms, as LO-HI.
    #[arg(long, default_value = "3000-6000")]
    quiet_ms: String,
    /// Where the history (history.jsonl) and the report (report.txt, report.json) go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these faults (comma-separated names, e.g. kill-leader,kill-snapshot-install);
    /// the short plan keeps its order, the long run draws among them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The command line to print in the report (run.sh passes its own).
    #[arg(long, default_value = "")]
    command: String,
}

fn range(s: &str) -> Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow!("`{s}` is not LO-HI"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a > b {
        bail!("`{s}`: LO above HI");
    }
    Ok((a, b))
}

fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("duration `{s}`"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("duration `{s}`: unit must be s, m or h"),
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("berth-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Calls `f` through each node in turn until one answers, a few rounds.
pub(crate) async fn any_node<T, F, Fut>(endpoints: &[(String, Api)], what: &str, f: F) -> Result<T>
where
    F: Fn(Api) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut last = anyhow!("no endpoint");
    for i in 0..(endpoints.len() * 5) {
        let ch = endpoints[i % endpoints.len()].1.clone();
        match tokio::time::timeout(Duration::from_secs(5), f(ch)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) => last = anyhow!("{what}: {}", s.message()),
            Err(_) => last = anyhow!("{what}: timed out"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// Registers `spec` through any node.
pub(crate) async fn register_spec(
    endpoints: &[(String, Api)],
    spec: TaskDefinitionSpec,
) -> Result<()> {
    let what = format!("registering {}", spec.family);
    any_node(endpoints, &what, |ch| {
        let spec = spec.clone();
        async move {
            TaskDefinitionsClient::new(ch)
                .register(RegisterTaskDefinitionRequest {
                    task_definition: Some(spec),
                })
                .await
        }
    })
    .await?;
    Ok(())
}

async fn register_definition(endpoints: &[(String, Api)], family: &str) -> Result<()> {
    let spec = TaskDefinitionSpec {
        family: family.to_string(),
        cpu: Some(256),
        memory: Some(512),
        // The workload's tasks only sleep. Without a network they add no endpoint churn to
        // the engine's bridge: Docker 20.10's network controller deadlocks (a container's
        // leave and another's endpoint delete take the network's and the controller's
        // locks in opposite orders) once some thousands of bridge endpoints have come and
        // gone, which ended a long run with a hung engine.
        network_mode: Some("none".into()),
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "berth/workload".into(),
            command: vec!["sleep".into(), "900".into()],
            stop_timeout: Some(2),
            ..Default::default()
        }],
        timeouts: Default::default(),
    };
    register_spec(endpoints, spec).await
}

async fn run(args: Args) -> Result<bool> {
    let wall = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 100_000)
            .unwrap_or(1)
    });
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    let short = args.short || duration.is_none();
    let think = range(&args.think_ms)?;
    let quiet = range(&args.quiet_ms)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/berth-chaos-{seed}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let history = Arc::new(History::new(Some(&out.join("history.jsonl")))?);
    let log = |h: &History, m: &str| eprintln!("[{:8.2}s] {m}", h.now() as f64 / 1e9);

    crate::cluster::init_tls((!args.insecure).then_some(args.tls_dir.as_path()))?;
    let cluster = Cluster::new(args.nodes, args.agents == AgentsMode::Real)?;
    let all: std::collections::BTreeSet<u64> = cluster.ids.iter().copied().collect();
    log(&history, &format!("seed {seed}; waiting for the cluster"));
    let leader = cluster.wait_healthy(&all, Duration::from_secs(120)).await?;
    log(&history, &format!("cluster healthy, leader {leader}"));

    let timeout = Duration::from_millis(args.request_timeout_ms);
    let endpoints: Vec<(String, Api)> = cluster
        .api_endpoints()
        .into_iter()
        .map(|e| lazy_channel(&e, timeout).map(|c| (e, c)))
        .collect::<Result<_>>()?;
    let started_by = format!("chaos-{seed}-{}", std::process::id());
    let family = "chaos".to_string();
    register_definition(&endpoints, &family).await?;
    // With real agents, every task container the engine creates from here on, read from
    // the engine's side.
    let engine_launches = if args.agents == AgentsMode::Real {
        Some(launches::EngineLaunches::start()?)
    } else {
        None
    };
    services::create(&endpoints, &family, seed).await?;
    schedules::create(&endpoints, seed).await?;

    let stop_workers = Arc::new(AtomicBool::new(false));
    let stop_agents = Arc::new(AtomicBool::new(false));
    let mut sim_agents = Vec::new();
    let mut agent_tasks = Vec::new();
    if args.agents == AgentsMode::Sim {
        for z in ["a", "b", "c"] {
            let id = format!("chaos-sim-{z}");
            // Each simulated agent on its own certificate: an agent speaks only for itself.
            let raft: Vec<Channel> = cluster
                .ids
                .iter()
                .map(|&i| agent_channel(&cluster.raft_endpoint(i), Duration::from_secs(5), &id))
                .collect::<Result<_>>()?;
            let a = Arc::new(SimAgent::new(&id, 8192, 16384, z));
            sim_agents.push(a.clone());
            agent_tasks.push(tokio::spawn(simagent::run(a, raft, stop_agents.clone())));
        }
        // Let them register before the first RunTask.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Capacity samples while faults run: every node's own (stale) view, and with real
    // agents the containers under each agent's label.
    let samples: Arc<Mutex<Vec<String>>> = Arc::default();
    let monitor = {
        let samples = samples.clone();
        let endpoints = endpoints.clone();
        let cluster = cluster.clone();
        let stop = stop_workers.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (node, (ep, ch)) in cluster.ids.iter().zip(&endpoints) {
                    if let Ok((agents, rev)) = checks::list_agents(ch, true).await {
                        for a in agents {
                            if a.used_cpu > a.cpu || a.used_memory > a.memory {
                                let mut g = samples.lock().unwrap_or_else(|e| e.into_inner());
                                g.push(format!(
                                    "node {node} ({ep}) at revision {rev}: agent {} uses {}/{} CPU, {}/{} MiB",
                                    a.agent_id, a.used_cpu, a.cpu, a.used_memory, a.memory
                                ));
                            }
                        }
                    }
                }
                if n == 0 {
                    docker_capacity(&cluster, &endpoints, &samples).await;
                }
                // Docker is asked every third round (it is slower than a gRPC call).
                n = (n + 1) % 3;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let cfg = Arc::new(WorkloadConfig {
        workers: args.workers,
        family: family.clone(),
        started_by: started_by.clone(),
        seed,
        think_ms: think,
        live_target: if args.agents == AgentsMode::Real {
            24
        } else {
            60
        },
    });
    let known = Arc::new(Known::default());
    // The prober's own task (another startedBy, so the run's checks do not count it).
    let anchor = probe_anchor(
        &endpoints,
        &family,
        &format!("chaos-probe-{seed}-{}", std::process::id()),
    )
    .await?;
    let prober = tokio::spawn(workload::prober(
        endpoints.clone(),
        history.clone(),
        anchor,
        Duration::from_millis(50),
        stop_workers.clone(),
    ));
    let workload_start = history.now();
    let service_updates = Arc::new(services::Updates::default());
    let updater = tokio::spawn(services::run_updater(
        endpoints.clone(),
        service_updates.clone(),
        seed,
        stop_workers.clone(),
    ));
    let workers: Vec<_> = (0..cfg.workers)
        .map(|p| {
            tokio::spawn(workload::run_worker(
                p,
                cfg.clone(),
                endpoints.clone(),
                history.clone(),
                known.clone(),
                stop_workers.clone(),
            ))
        })
        .collect();

    let mut nemesis = Nemesis {
        cluster: cluster.clone(),
        history: history.clone(),
        sim_agents: sim_agents.clone(),
        snapshot_every: args.snapshot_every,
        keep_behind: args.keep_behind_snapshot,
        rng: StdRng::seed_from_u64(seed),
        stop: stop_workers.clone(),
        effective: None,
    };
    let _ = nemesis.keep_behind;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Faults after whose healing no write got through (the write path stayed wedged).
    let mut stuck: Vec<String> = Vec::new();
    // Set when the Docker engine stopped answering: the run ends there.
    let mut hung: Option<anyhow::Error> = None;
    let mode;
    if short {
        mode = "short".to_string();
        let plan: Vec<FaultKind> = faults::short_plan(seed, cluster.ids.len())
            .into_iter()
            .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
            .collect();
        log(&history, &format!("short run: {} faults", plan.len()));
        for k in plan {
            if let Err(e) = nemesis.inject(k).await {
                hung = Some(e);
                break;
            }
            liveness(&cfg, &endpoints, &history, &known, &mut stuck, k).await;
            let q = nemesis.rng.gen_range(quiet.0..=quiet.1);
            tokio::time::sleep(Duration::from_millis(q)).await;
        }
    } else {
        let d = duration.unwrap_or(Duration::from_secs(1800));
        mode = format!("long {}s", d.as_secs());
        let deadline = Instant::now() + d;
        let mut draw_rng = StdRng::seed_from_u64(seed.wrapping_add(1));
        let mut n = 0;
        while Instant::now() < deadline {
            let k: FaultKind = faults::draw(&mut draw_rng, cluster.ids.len());
            if !args.only.is_empty() && !args.only.iter().any(|o| o == k.name()) {
                continue;
            }
            if let Err(e) = nemesis.inject(k).await {
                hung = Some(e);
                break;
            }
            liveness(&cfg, &endpoints, &history, &known, &mut stuck, k).await;
            n += 1;
            let q = nemesis.rng.gen_range(quiet.0..=quiet.1.max(quiet.0)) * 2;
            tokio::time::sleep(
                Duration::from_millis(q).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        log(&history, &format!("long run: {n} faults injected"));
    }

    if let Some(e) = hung {
        // Nothing can be healed or checked through a hung engine, but what was measured
        // up to here is kept: the gap tables of the faults before the hang.
        let workload_end = history.now();
        stop_workers.store(true, Ordering::Relaxed);
        monitor.abort();
        for w in workers {
            let _ = w.await;
        }
        let probes = prober.await.unwrap_or_default();
        history.flush();
        let results = vec![CheckResult::new(
            "the run completed",
            vec![format!("{e:#}")],
            "the Docker engine stopped answering; the faults before it are measured, nothing was checked"
                .into(),
        )];
        let ops = history.ops();
        let faults = history.faults();
        let _ = write_report(
            &Measured {
                seed,
                mode,
                command: &args.command,
                nodes: cluster.ids.len(),
                agents: args.agents,
                wall,
                workload: (workload_start, workload_end),
                ops: &ops,
                probes: &probes,
                faults,
            },
            results,
            &out,
        )?;
        return Err(e);
    }

    // Heal, let the clients run a little on the healed cluster, then stop them.
    nemesis.heal_all().await;
    let _ = cluster.wait_healthy(&all, Duration::from_secs(60)).await;
    let healed_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The workload ends when the clients are told to stop (the last calls still finish).
    let workload_end = history.now();
    stop_workers.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let _ = monitor.await;
    let probes = prober.await.unwrap_or_default();
    history.flush();
    log(&history, "workload stopped; checking");

    // Let simulated agents act on the last stops so the state settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut results: Vec<CheckResult> = Vec::new();
    // Liveness after healing: a write through each node must be acknowledged (a node whose
    // write path is wedged fails here even though every safety check passes).
    let mut wedged = stuck;
    for (i, (ep, ch)) in endpoints.iter().enumerate() {
        let token = format!("{started_by}-probe-{}", i + 1);
        let ok = workload::probe(
            1000 + i as u32,
            &cfg,
            (ep.clone(), ch.clone()),
            &history,
            &known,
            token,
        )
        .await;
        if !ok {
            wedged.push(format!(
                "node {} ({ep}): no RunTask acknowledged in 4 tries of {} ms after healing",
                i + 1,
                args.request_timeout_ms
            ));
        }
    }
    results.push(checks::CheckResult::new(
        "writes are committed again after every fault heals, through every node at the end",
        wedged,
        format!(
            "a RunTask within {} s after each fault, one through each of {} nodes at the end",
            LIVENESS_WITHIN.as_secs(),
            endpoints.len()
        ),
    ));
    history.flush();
    let ops = history.ops();
    let faults_seen = history.faults();
    let final_tasks = checks::list_tasks(&endpoints, &started_by, "").await;
    match &final_tasks {
        Ok((tasks, _)) => results.push(checks::exactly_once(&ops, tasks)),
        Err(e) => results.push(CheckResult {
            name: "acknowledged RunTasks exist exactly once, one task set per token".into(),
            ok: Some(false),
            detail: format!("cannot list the cluster's tasks: {e:#}"),
            violations: vec![format!("{e:#}")],
        }),
    }
    let agent_ids: Vec<String> = if cluster.agents.is_empty() {
        sim_agents.iter().map(|a| a.id.clone()).collect()
    } else {
        let mut ids = Vec::new();
        for (container, id) in &cluster.agents {
            // An agent whose process is gone is not expected back; every running one is.
            if cluster.status(container).await.ok().as_deref() == Some("running") {
                ids.push(id.clone());
            }
        }
        ids
    };
    results.push(
        checks::agents_serve(
            &endpoints,
            &agent_ids,
            &family,
            &format!("chaos-agents-{seed}-{}", std::process::id()),
        )
        .await,
    );
    let mut per_node = Vec::new();
    for (&id, (_, ch)) in cluster.ids.iter().zip(&endpoints) {
        per_node.push((id, checks::list_agents(ch, true).await.map(|(a, _)| a)));
    }
    let (recount, recount_detail) = checks::recount(&endpoints).await;
    docker_capacity(&cluster, &endpoints, &samples).await;
    let sampled = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let recount_detail = if cluster.agents.is_empty() {
        recount_detail
    } else {
        format!("{recount_detail}; docker ps per agent label every 6 s and at the end")
    };
    results.push(checks::capacity(
        &sampled,
        &per_node,
        &recount,
        &[],
        &recount_detail,
    ));
    results.push(checks::forward_only(&ops));
    results.push(checks::linearizable(&ops));
    results.push(checks::converged(&cluster, Duration::from_secs(60)).await);
    let _ = updater.await;
    results.push(services::check(&endpoints, &service_updates).await);
    results.push(schedules::check(&endpoints, healed_at_ms).await);
    if let Some(l) = engine_launches {
        let launched = l.finish();
        let agents: Vec<String> = cluster.agents.iter().map(|(_, id)| id.clone()).collect();
        results.push(match checks::list_tasks(&endpoints, "", "").await {
            Ok((tasks, _)) => launches::check(&launched, &agents, &tasks),
            Err(e) => CheckResult::new(
                launches::CHECK_NAME,
                vec![format!("cannot list the cluster's tasks: {e:#}")],
                String::new(),
            ),
        });
    }
    stop_agents.store(true, Ordering::Relaxed);
    for t in agent_tasks {
        t.abort();
    }

    let ok = write_report(
        &Measured {
            seed,
            mode,
            command: &args.command,
            nodes: cluster.ids.len(),
            agents: args.agents,
            wall,
            workload: (workload_start, workload_end),
            ops: &ops,
            probes: &probes,
            faults: faults_seen,
        },
        results,
        &out,
    )?;
    Ok(ok)
}

/// What a run measured, for its report.
struct Measured<'a> {
    seed: u64,
    mode: String,
    command: &'a str,
    nodes: usize,
    agents: AgentsMode,
    wall: Instant,
    /// Start and end of the workload, history time (ns).
    workload: (u64, u64),
    ops: &'a [history::Op],
    probes: &'a [(u64, u64)],
    faults: Vec<history::FaultRecord>,
}

/// Adds the failover bar to `results`, prints the report and writes it (text, JSON and
/// the prober's writes) to `out`; whether no check failed.
fn write_report(
    m: &Measured,
    mut results: Vec<CheckResult>,
    out: &std::path::Path,
) -> Result<bool> {
    let (workload_start, workload_end) = m.workload;
    let probes = m.probes;
    let ops = m.ops;
    let faults_seen = m.faults.clone();
    let failover = report::outage(probes, &faults_seen);
    let recovery = report::failover(probes, &faults_seen);
    let client_stall = report::failover(&report::worker_writes(ops), &faults_seen);
    results.push(match failover.get("kill-leader") {
        Some(g) => checks::CheckResult::new(
            "failover bar: p99 write gap after leader SIGKILL ≤ 2 s",
            if g.p99_ms <= report::FAILOVER_BAR_MS {
                vec![]
            } else {
                vec![format!(
                    "p99 {:.0} ms over {} kills (gaps {:?} ms)",
                    g.p99_ms,
                    g.gaps_ms.len(),
                    g.gaps_ms.iter().map(|x| x.round()).collect::<Vec<_>>()
                )]
            },
            format!(
                "p99 {:.0} ms, max {:.0} ms over {} kills",
                g.p99_ms,
                g.max_ms,
                g.gaps_ms.len()
            ),
        ),
        None => CheckResult::skipped(
            "failover bar: p99 write gap after leader SIGKILL ≤ 2 s",
            "no leader was killed",
        ),
    });
    let violations = results.iter().filter(|c| c.ok == Some(false)).count();
    let mut fault_counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in &faults_seen {
        *fault_counts.entry(f.kind.clone()).or_default() += 1;
    }
    let report = report::Report {
        seed: m.seed,
        mode: m.mode.clone(),
        command: m.command.to_string(),
        nodes: m.nodes,
        agents: match m.agents {
            AgentsMode::Real => "real (compose-a/b/c)".into(),
            AgentsMode::Sim => "simulated (chaos-sim-a/b/c)".into(),
        },
        workload_seconds: (workload_end - workload_start) as f64 / 1e9,
        wall_seconds: m.wall.elapsed().as_secs_f64(),
        ops: report::counts(ops),
        failover,
        recovery,
        client_stall,
        unavailability: report::windows(
            &[probes, report::worker_writes(ops).as_slice()].concat(),
            &faults_seen,
            workload_start,
            workload_end,
        ),
        faults: faults_seen,
        fault_counts,
        checks: results,
        violations,
    };
    let text = report.text();
    print!("{text}");
    std::fs::write(out.join("report.txt"), &text)?;
    // The prober's acknowledged writes, (invoke, complete) in ns, for offline analysis.
    let probe_lines: String = probes.iter().map(|(i, c)| format!("[{i},{c}]\n")).collect();
    std::fs::write(out.join("probes.jsonl"), probe_lines)?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    eprintln!("history and report in {}", out.display());
    Ok(violations == 0)
}

/// Runs one task for the prober to stop again and again; its id.
async fn probe_anchor(
    endpoints: &[(String, Api)],
    family: &str,
    started_by: &str,
) -> Result<String> {
    use berth_proto::v1::tasks_client::TasksClient;
    use berth_proto::v1::RunTaskRequest;
    let mut last = anyhow!("no endpoint");
    for i in 0..(endpoints.len() * 5) {
        let req = RunTaskRequest {
            task_definition: family.to_string(),
            count: 1,
            client_token: format!("{started_by}-anchor"),
            started_by: started_by.to_string(),
            ..Default::default()
        };
        match TasksClient::new(endpoints[i % endpoints.len()].1.clone())
            .run(req)
            .await
        {
            Ok(r) => match r.into_inner().tasks.first() {
                Some(t) => return Ok(t.task_id.clone()),
                None => last = anyhow!("the probe's task could not be placed"),
            },
            Err(s) => last = anyhow!("running the probe's task: {}", s.message()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// How soon after a fault is healed (and a leader is known) a write must be acknowledged.
const LIVENESS_WITHIN: Duration = Duration::from_secs(15);

/// After a fault is healed: a write (a RunTask through the nodes in turn) must be
/// acknowledged within `LIVENESS_WITHIN`, or the fault is listed as having left the write
/// path wedged.
async fn liveness(
    cfg: &WorkloadConfig,
    endpoints: &[(String, Api)],
    history: &History,
    known: &Known,
    stuck: &mut Vec<String>,
    after: FaultKind,
) {
    let start = Instant::now();
    let mut attempt = 0usize;
    while start.elapsed() < LIVENESS_WITHIN {
        let (ep, ch) = &endpoints[attempt % endpoints.len()];
        let token = format!("{}-live-{}-{attempt}", cfg.started_by, history.now());
        let one = tokio::time::timeout(
            LIVENESS_WITHIN.saturating_sub(start.elapsed()),
            workload::probe(999, cfg, (ep.clone(), ch.clone()), history, known, token),
        )
        .await;
        if one == Ok(true) {
            return;
        }
        attempt += 1;
    }
    let msg = format!(
        "after {} (healed at {:.1} s): no write acknowledged within {} s",
        after.name(),
        history.now() as f64 / 1e9 - start.elapsed().as_secs_f64(),
        LIVENESS_WITHIN.as_secs()
    );
    eprintln!("[{:8.2}s] LIVENESS: {msg}", history.now() as f64 / 1e9);
    stuck.push(msg);
}

/// With real agents: the running containers under each agent's label must fit the
/// capacity the agent registered.
async fn docker_capacity(
    cluster: &Cluster,
    endpoints: &[(String, Api)],
    samples: &Mutex<Vec<String>>,
) {
    if cluster.agents.is_empty() {
        return;
    }
    let Ok((agents, _)) = checks::list_agents(&endpoints[0].1, true).await else {
        return;
    };
    for (_, id) in &cluster.agents {
        let Some(a) = agents.iter().find(|a| &a.agent_id == id) else {
            continue;
        };
        if let Ok((n, mem, _cpu)) = cluster.agent_containers(id).await {
            if mem > a.memory as u64 {
                let mut g = samples.lock().unwrap_or_else(|e| e.into_inner());
                g.push(format!(
                    "docker: agent {id} runs {n} task containers with {mem} MiB, capacity {} MiB",
                    a.memory
                ));
            }
        }
    }
}
