//! `berth bench scale`: thousands of simulated agents (the real agent protocol over mutual
//! TLS, each on its own certificate, heartbeating every second) and tens of thousands of
//! live tasks on a three-node cluster of real processes, then a steady RunTask/StopTask
//! load while the control plane is watched: false DOWNs, elections, each node's CPU and
//! resident memory, RunTask latency, and what snapshots cost. Every figure is measured in
//! the run that prints it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use berth_simagent::SimAgent;
use berth_tls::grpc::Credentials;
use berth_tls::Identity;
use tonic::transport::{Channel, Endpoint};

use super::{millis, ms, percentile, Errors, LocalCluster};

/// What each simulated agent offers per vCPU of `--agent-vcpus`: room for 4 of the
/// benchmark's 0.25 vCPU / 512 MiB tasks. With the default 4 vCPU, `--tasks` = 10 ×
/// `--agents` fills them to 62 %.
const CPU_PER_VCPU: u32 = 1024;
const MEMORY_PER_VCPU: u32 = 2048;
/// Agents started per second: registrations and TLS handshakes arrive as a fleet that is
/// being brought up, not all in the same instant.
const START_RATE: usize = 1000;
/// Concurrent RunTask callers while filling.
const FILL_CALLERS: usize = 32;
/// Times a fill call is sent before its tasks are given up.
const FILL_ATTEMPTS: u32 = 3;
/// Linux's USER_HZ, the unit of /proc/PID/stat's CPU times, on every architecture Berth
/// builds for.
const TICKS_PER_SECOND: f64 = 100.0;

pub struct ScaleArgs {
    pub agents: usize,
    pub tasks: u64,
    pub seconds: u64,
    pub rate: u64,
    pub heartbeats_via: String,
    /// Each agent's size: vCPUs, with 2 GiB of memory each.
    pub agent_vcpus: u32,
    /// Where to write the figures as JSON (the suite's scaled-down test reads them).
    pub report: Option<std::path::PathBuf>,
}

/// Every figure the run prints, for `--report`.
#[derive(Debug, Default, serde::Serialize)]
pub struct ScaleReport {
    pub agents: usize,
    pub live_tasks: u64,
    pub ready_secs: f64,
    pub fill_secs: f64,
    /// Fill calls that failed and were sent again under their token.
    pub fill_retries: u64,
    pub steady_secs: f64,
    pub runtask_answered: usize,
    pub runtask_errors: u64,
    pub runtask_first_error: Option<String>,
    pub runtask_p50_ms: f64,
    pub runtask_p99_ms: f64,
    pub heartbeats_per_sec: f64,
    pub agents_marked_down: usize,
    pub agents_not_ready: usize,
    pub reregistrations: u64,
    pub elections: usize,
    /// The leader's applied log index when the steady load ended.
    pub applied_index: u64,
    pub nodes: Vec<NodeFigures>,
    /// A follower's data wiped and the node restarted: until it has applied what the
    /// leader had applied when it came back.
    pub catch_up_ms: u64,
    /// Whether that follower installed a snapshot (rather than replaying the whole log).
    pub catch_up_by_snapshot: bool,
    /// Every node SIGKILLed and started again: until a RunTask is answered.
    pub restart_to_serving_ms: u64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct NodeFigures {
    pub id: u64,
    pub leader_at_start: bool,
    pub cpu_cores: f64,
    pub max_rss_bytes: u64,
    pub snapshots_built: usize,
    pub last_snapshot_bytes: u64,
    pub snapshot_held_us_max: u64,
    pub snapshot_build_ms_max: u64,
}

impl NodeFigures {
    /// A node's figures: CPU and memory as measured, snapshots as its log in `dir` tells.
    pub(super) fn of(
        dir: &std::path::Path,
        id: u64,
        leader: u64,
        cpu_cores: f64,
        max_rss_bytes: u64,
    ) -> Self {
        let log = std::fs::read_to_string(dir.join(format!("node-{id}.log"))).unwrap_or_default();
        let snaps = snapshots_logged(&log);
        NodeFigures {
            id,
            leader_at_start: id == leader,
            cpu_cores,
            max_rss_bytes,
            snapshots_built: snaps.len(),
            last_snapshot_bytes: snaps.last().map(|s| s.0).unwrap_or(0),
            snapshot_held_us_max: snaps.iter().map(|s| s.1).max().unwrap_or(0),
            snapshot_build_ms_max: snaps.iter().map(|s| s.2).max().unwrap_or(0),
        }
    }
}

/// Raises this process's open-file limit to at least `wanted` (up to the hard limit), before
/// the nodes are started so they inherit it: each simulated agent holds a connection to
/// every node it talks to, and the leader one per agent.
pub fn raise_open_files(wanted: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "reading the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= wanted {
        return Ok(());
    }
    if lim.rlim_max < wanted {
        bail!(
            "this many agents needs about {wanted} open files, above the hard limit of {}; raise it (`ulimit -Hn {wanted}` as root) first",
            lim.rlim_max
        );
    }
    lim.rlim_cur = wanted;
    // SAFETY: setrlimit only reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!(
            "raising the open-file limit to {wanted}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// One node process's CPU time (seconds) and resident memory (bytes), from /proc.
pub(super) fn process_figures(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks as f64 / TICKS_PER_SECOND, rss_kib * 1024))
}

/// A raft-port channel as `agent`, with its credentials loaded once for every node.
fn agent_channels(c: &LocalCluster, agent: &str, nodes: &[u64]) -> Result<Vec<Channel>> {
    let dir = c
        .tls
        .as_deref()
        .ok_or_else(|| anyhow!("bench scale runs with TLS, as a cluster does by default"))?;
    let creds = Credentials::load(dir, &Identity::agent(agent)?)
        .map_err(|e| anyhow!(berth_tls::error_chain(&e)))?;
    nodes
        .iter()
        .map(|id| {
            let n = c
                .nodes
                .iter()
                .find(|n| n.id == *id)
                .ok_or_else(|| anyhow!("no node {id}"))?;
            let ep = Endpoint::from_shared(berth_tls::grpc::uri(&n.raft.to_string(), true))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true);
            Ok(creds.secure(ep)?.connect_lazy())
        })
        .collect()
}

/// Every agent's status and whether it was ever marked DOWN, page by page.
async fn agent_statuses(api: Api) -> Result<Vec<(String, String, bool)>> {
    let mut client = AgentsClient::new(api);
    let mut out = Vec::new();
    let mut next = String::new();
    loop {
        let page = client
            .list(ListAgentsRequest {
                stale: true,
                max_results: 1000,
                next_token: next,
            })
            .await?
            .into_inner();
        out.extend(
            page.agents
                .into_iter()
                .map(|a| (a.agent_id, a.status, a.down_at_ms.is_some())),
        );
        if page.next_token.is_empty() {
            return Ok(out);
        }
        next = page.next_token;
    }
}

/// One counter summed over every simulated agent.
fn total(sims: &[Arc<SimAgent>], counter: impl Fn(&SimAgent) -> &AtomicU64) -> u64 {
    sims.iter()
        .map(|s| counter(s).load(Ordering::Relaxed))
        .sum()
}

/// Snapshot lines of a node's log: (bytes, µs the state was held for the copy, ms in all).
fn snapshots_logged(log: &str) -> Vec<(u64, u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(&format!("{name}="))
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    log.lines()
        .filter(|l| l.contains("snapshot built"))
        .filter_map(|l| {
            Some((
                field(l, "bytes")?,
                field(l, "held_us")?,
                field(l, "took_ms")?,
            ))
        })
        .collect()
}

/// A running fleet of simulated agents.
pub(super) struct Fleet {
    pub sims: Vec<Arc<SimAgent>>,
    pub handles: Vec<tokio::task::JoinHandle<()>>,
    /// Set to stop every agent's loop.
    pub stop: Arc<AtomicBool>,
    /// From the first agent started to every agent READY.
    pub ready_secs: f64,
}

/// Issues a certificate per agent (as each real agent has its own), starts `count`
/// simulated agents of `size` (CPU units, MiB) in zones a, b, c in turn, and waits until
/// every one is READY. `via` is `leader` or `any`.
pub(super) async fn start_fleet(
    c: &LocalCluster,
    leader: u64,
    count: usize,
    size: (u32, u32),
    via: &str,
) -> Result<Fleet> {
    let ids: Vec<String> = (0..count).map(|i| format!("sim-{i:05}")).collect();
    let t0 = Instant::now();
    let who: Vec<Identity> = ids
        .iter()
        .map(|id| Identity::agent(id))
        .collect::<Result<_, _>>()?;
    let dir = c
        .tls
        .clone()
        .context("the simulated agents need TLS, as a cluster runs by default")?;
    berth_tls::files::ensure(&dir, &who, berth_tls::CERT_VALIDITY)
        .map_err(|e| anyhow!(berth_tls::error_chain(&e)))?;
    println!(
        "agents: {count} certificates issued in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let all: Vec<u64> = c.running();
    let stop = Arc::new(AtomicBool::new(false));
    let mut sims = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    let t0 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        // Via the leader: every heartbeat lands where it is kept. Via any: each agent
        // starts on one node in turn and followers forward its heartbeats.
        let nodes: Vec<u64> = match via {
            "leader" => vec![leader],
            "any" => (0..all.len()).map(|k| all[(i + k) % all.len()]).collect(),
            other => bail!("--heartbeats-via {other}: use leader or any"),
        };
        let chans = agent_channels(c, id, &nodes)?;
        let zone = ["a", "b", "c"][i % 3];
        let mut sim = SimAgent::new(id, size.0, size.1, zone);
        sim.reopen_after = None;
        let sim = Arc::new(sim);
        sims.push(sim.clone());
        handles.push(tokio::spawn(berth_simagent::run(sim, chans, stop.clone())));
        if (i + 1) % START_RATE == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let api = c.api(leader)?;
    let deadline = Instant::now() + Duration::from_secs(60 + count as u64 / 100);
    loop {
        let ready = agent_statuses(api.clone())
            .await?
            .iter()
            .filter(|(_, s, _)| s == "READY")
            .count();
        if ready >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} agents READY");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(Fleet {
        sims,
        handles,
        stop,
        ready_secs: t0.elapsed().as_secs_f64(),
    })
}

pub async fn scale(c: &mut LocalCluster, a: ScaleArgs) -> Result<()> {
    if a.agents == 0 || a.tasks == 0 || a.rate == 0 {
        bail!("--agents, --tasks and --rate must be above 0");
    }
    if a.agent_vcpus == 0 || a.agent_vcpus > 1024 {
        bail!("--agent-vcpus must be 1 to 1024");
    }
    let size = (
        a.agent_vcpus * CPU_PER_VCPU,
        a.agent_vcpus * MEMORY_PER_VCPU,
    );
    let room = a.agents as u64 * (size.0 / 256) as u64;
    if a.tasks > room {
        bail!(
            "--tasks {} does not fit on {} agents (at most {room})",
            a.tasks,
            a.agents
        );
    }
    let (leader, _) = c.leader(Duration::from_secs(30)).await?;
    c.register_bench_definition(leader).await?;

    let Fleet {
        sims,
        handles,
        stop,
        ready_secs,
    } = start_fleet(c, leader, a.agents, size, &a.heartbeats_via).await?;
    let all: Vec<u64> = c.running();
    let mut report = ScaleReport {
        agents: a.agents,
        ready_secs,
        ..Default::default()
    };
    println!(
        "agents: {} READY {:.1} s after the first started ({START_RATE}/s started), heartbeats every second via {}",
        a.agents, report.ready_secs, a.heartbeats_via
    );

    // Fill: RunTask count 10 from many callers, through every node.
    let t0 = Instant::now();
    let placed = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let asked = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let mut fill = Vec::new();
    for w in 0..FILL_CALLERS {
        let ch = c.api(all[w % all.len()])?;
        let (placed, calls, asked, retried, target) = (
            placed.clone(),
            calls.clone(),
            asked.clone(),
            retried.clone(),
            a.tasks,
        );
        fill.push(tokio::spawn(async move {
            let mut client = TasksClient::new(ch);
            let mut n = 0u64;
            loop {
                // Claim the tasks before asking, so the callers together stop at the target.
                let claimed = asked.fetch_add(10, Ordering::Relaxed);
                if claimed >= target {
                    break;
                }
                let count = (target - claimed).min(10) as u32;
                n += 1;
                // As a client of RunTask does: a call that failed goes again under the
                // same token, which places its tasks once however often it is sent.
                for attempt in 0..FILL_ATTEMPTS {
                    match client
                        .run(super::run_req(count, format!("fill{w}-{n}")))
                        .await
                    {
                        Ok(r) => {
                            placed.fetch_add(r.into_inner().tasks.len() as u64, Ordering::Relaxed);
                            calls.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) if attempt + 1 < FILL_ATTEMPTS => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(_) => {}
                    }
                }
            }
        }));
    }
    for h in fill {
        let _ = h.await;
    }
    let fill_secs = t0.elapsed().as_secs_f64();
    let live = placed.load(Ordering::Relaxed);
    report.fill_secs = fill_secs;
    report.live_tasks = live;
    report.fill_retries = retried.load(Ordering::Relaxed);
    println!(
        "fill: {live} tasks placed by {} RunTask calls in {fill_secs:.1} s ({:.0} tasks/s) while {} agents heartbeat; {} calls sent again after an error",
        calls.load(Ordering::Relaxed),
        live as f64 / fill_secs,
        a.agents,
        report.fill_retries
    );
    // Let the agents' RUNNING reports land before measuring.
    tokio::time::sleep(Duration::from_secs(10)).await;

    // Steady: RunTask count 1 at the rate (latency recorded), each followed by a StopTask of
    // an earlier one, so the live count stays level; sampled every second.
    let registrations_before = total(&sims, |s| &s.registrations);
    let heartbeats_before = total(&sims, |s| &s.heartbeats);
    let (_, term0) = c.leader(Duration::from_secs(10)).await?;
    let pids: Vec<(u64, u32)> = c
        .nodes
        .iter()
        .filter_map(|n| n.child.as_ref().map(|ch| (n.id, ch.id())))
        .collect();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| process_figures(*pid).map(|f| f.0).unwrap_or(0.0))
        .collect();
    let mut rss_max = vec![0u64; pids.len()];
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let errors = Arc::new(Errors::default());
    let churn_stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<Api> = all.iter().map(|id| c.api(*id)).collect::<Result<_>>()?;
    let churn = {
        let (latencies, errors, stop) = (latencies.clone(), errors.clone(), churn_stop.clone());
        let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
        tokio::spawn(async move {
            let started: Arc<Mutex<VecDeque<String>>> = Arc::default();
            let mut next = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                next += interval;
                tokio::time::sleep_until(next.into()).await;
                i += 1;
                let ch = targets[(i as usize) % targets.len()].clone();
                let (latencies, errors, started) =
                    (latencies.clone(), errors.clone(), started.clone());
                // Open loop: a slow answer cannot delay the calls behind it.
                tokio::spawn(async move {
                    let mut tasks = TasksClient::new(ch);
                    let t0 = Instant::now();
                    match tasks.run(super::run_req(1, format!("churn{i}"))).await {
                        Ok(r) => {
                            if let Ok(mut l) = latencies.lock() {
                                l.push(t0.elapsed());
                            }
                            let ids = r.into_inner().tasks.into_iter().map(|t| t.task_id);
                            let old = started.lock().ok().and_then(|mut s| {
                                s.extend(ids);
                                (s.len() > 1).then(|| s.pop_front()).flatten()
                            });
                            if let Some(old) = old {
                                let _ = tasks
                                    .stop(StopTaskRequest {
                                        task_id: old,
                                        reason: "bench churn".into(),
                                    })
                                    .await;
                            }
                        }
                        Err(e) => errors.record(&e),
                    }
                });
            }
        })
    };
    let t0 = Instant::now();
    let mut terms = vec![term0];
    let mut leaders = vec![leader];
    while t0.elapsed() < Duration::from_secs(a.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (k, (_, pid)) in pids.iter().enumerate() {
            if let Some((_, rss)) = process_figures(*pid) {
                rss_max[k] = rss_max[k].max(rss);
            }
        }
        if let Ok((l, t)) = c.leader(Duration::from_secs(5)).await {
            if terms.last() != Some(&t) {
                terms.push(t);
            }
            if leaders.last() != Some(&l) {
                leaders.push(l);
            }
        }
    }
    let steady_secs = t0.elapsed().as_secs_f64();
    churn_stop.store(true, Ordering::Relaxed);
    let _ = churn.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu1: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| process_figures(*pid).map(|f| f.0).unwrap_or(0.0))
        .collect();
    let registrations_after = total(&sims, |s| &s.registrations);
    let heartbeats_after = total(&sims, |s| &s.heartbeats);
    let statuses = agent_statuses(c.api(leaders[leaders.len() - 1])?).await?;
    let not_ready = statuses.iter().filter(|(_, s, _)| s != "READY").count();
    let marked_down = statuses.iter().filter(|(_, _, down)| *down).count();
    stop.store(true, Ordering::Relaxed);

    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    report.steady_secs = steady_secs;
    report.runtask_answered = lat.len();
    report.runtask_errors = errors.count();
    report.runtask_first_error = errors.first();
    report.runtask_p50_ms = millis(percentile(&lat, 0.5));
    report.runtask_p99_ms = millis(percentile(&lat, 0.99));
    report.heartbeats_per_sec = (heartbeats_after - heartbeats_before) as f64 / steady_secs;
    report.agents_marked_down = marked_down;
    report.agents_not_ready = not_ready;
    report.reregistrations = registrations_after - registrations_before;
    report.elections = terms.len() - 1;
    report.applied_index = c.applied(leaders[leaders.len() - 1]).await.unwrap_or(0);
    println!(
        "steady: {steady_secs:.0} s, RunTask count 1 at {} calls/s each followed by a StopTask, {} live tasks on {} agents",
        a.rate, live, a.agents
    );
    println!(
        "  RunTask p50 {}  p99 {}  max {} ({} answered, {} errors)",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        lat.len(),
        report.runtask_errors
    );
    if let Some(e) = &report.runtask_first_error {
        println!("  first RunTask error: {e}");
    }
    println!(
        "  heartbeats answered: {:.0}/s of {} expected; agents ever marked DOWN: {marked_down}; re-registrations during the load: {}; agents not READY at the end: {not_ready}",
        report.heartbeats_per_sec, a.agents, report.reregistrations
    );
    println!(
        "  elections: {} (terms {:?}), leaders {:?}; log entries applied: {}",
        report.elections, terms, leaders, report.applied_index
    );
    for (k, (id, _)) in pids.iter().enumerate() {
        let n = NodeFigures::of(
            &c.dir,
            *id,
            leader,
            (cpu1[k] - cpu0[k]) / steady_secs,
            rss_max[k],
        );
        println!(
            "  node {id}{}: CPU {:.2} cores, max RSS {} MiB",
            if n.leader_at_start {
                " (leader at start)"
            } else {
                ""
            },
            n.cpu_cores,
            n.max_rss_bytes / (1024 * 1024)
        );
        if n.snapshots_built > 0 {
            println!(
                "  node {id} snapshots: {} built, last {} MB ({:.0} bytes per live task), state held for the copy up to {} µs, build up to {} ms",
                n.snapshots_built,
                n.last_snapshot_bytes / 1_000_000,
                n.last_snapshot_bytes as f64 / live.max(1) as f64,
                n.snapshot_held_us_max,
                n.snapshot_build_ms_max
            );
        }
        report.nodes.push(n);
    }

    // The agents keep heartbeating through both: what a fleet sees while its control plane
    // recovers.
    let (caught_up, by_snapshot) = catch_up(c).await?;
    report.catch_up_ms = caught_up.as_millis() as u64;
    report.catch_up_by_snapshot = by_snapshot;
    println!(
        "catch-up: a follower's data wiped and the node restarted, level with the leader's applied index {} s later ({})",
        fmt_secs(caught_up),
        if by_snapshot {
            "by snapshot"
        } else {
            "from the log: no snapshot was needed"
        }
    );
    let serving = full_restart(c).await?;
    report.restart_to_serving_ms = serving.as_millis() as u64;
    println!(
        "restart: every node SIGKILLed and started again, a RunTask answered {} s later",
        fmt_secs(serving)
    );
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for h in handles {
        h.abort();
    }
    Ok(())
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// Wipes a follower's data and restarts it: how long until it has applied what the leader
/// had when it came back, and whether it got there by installing a snapshot.
async fn catch_up(c: &mut LocalCluster) -> Result<(Duration, bool)> {
    let (leader, _) = c.leader(Duration::from_secs(10)).await?;
    let follower = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .ok_or_else(|| anyhow!("no follower to wipe"))?;
    c.kill(follower)?;
    let data = c.dir.join(format!("node-{follower}"));
    std::fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))?;
    let mut target = None;
    let asked = Instant::now();
    while target.is_none() && asked.elapsed() < Duration::from_secs(30) {
        target = c.applied(leader).await;
        if target.is_none() {
            // A refused connection answers at once: do not spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let target =
        target.ok_or_else(|| anyhow!("the leader (node {leader}) did not answer Info in 30 s"))?;
    let log_path = c.dir.join(format!("node-{follower}.log"));
    let earlier = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
    let t0 = Instant::now();
    c.spawn(follower)?;
    loop {
        if c.applied(follower).await.is_some_and(|a| a >= target) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("node {follower} had not caught up to {target} after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    let log = std::fs::read(&log_path).unwrap_or_default();
    let since = String::from_utf8_lossy(log.get(earlier..).unwrap_or_default());
    Ok((took, since.contains("snapshot installed")))
}

/// SIGKILLs every node, starts them all again, and times until a RunTask is answered.
async fn full_restart(c: &mut LocalCluster) -> Result<Duration> {
    let ids = c.running();
    for id in &ids {
        c.kill(*id)?;
    }
    let t0 = Instant::now();
    for id in &ids {
        c.spawn(*id)?;
    }
    let apis: Vec<Api> = ids.iter().map(|id| c.api(*id)).collect::<Result<_>>()?;
    let mut n = 0u64;
    loop {
        for api in &apis {
            n += 1;
            let mut tasks = TasksClient::new(api.clone());
            let call = tasks.run(super::run_req(1, format!("restart{n}")));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                return Ok(t0.elapsed());
            }
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("no RunTask answered within 300 s of the restart");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lines_are_read_from_a_nodes_log() {
        let log = "2026-12-01T02:00:00Z  INFO berth_raft::store: snapshot built snapshot=3-20001 bytes=123456 held_us=41 took_ms=900\nother line\n";
        assert_eq!(snapshots_logged(log), vec![(123456, 41, 900)]);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let (cpu, rss) = process_figures(std::process::id()).expect("figures from /proc");
        assert!(cpu >= 0.0);
        assert!(
            rss > 1024 * 1024,
            "a test process holds more than 1 MiB: {rss}"
        );
    }
}
