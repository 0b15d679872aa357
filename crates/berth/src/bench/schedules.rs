//! `berth bench schedules`: how closely schedules fire. Many schedules are created on a
//! three-node cluster of real processes with simulated agents to place their runs on, all
//! starting at the same instant after the last one exists; they fire for a while; then
//! every schedule's records are read back and, for every run, the commit lag is taken:
//! the leader's clock in the Raft entry that recorded the run (`recorded_at`) minus the
//! scheduled time. Beside it, the time a watcher of the leader saw the run's task, which is
//! after the entry committed and applied. The records are also checked for the exactly-once
//! promise: every scheduled time of the window once, none twice, none missing, none early.
//! Every figure is measured in the run that prints it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::schedules_client::SchedulesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use tokio_stream::StreamExt;

use super::scale::{process_figures, start_fleet, Fleet, NodeFigures};
use super::LocalCluster;

/// The runs' task definition (`bench:1`, 0.25 vCPU / 512 MiB) and its size.
const FAMILY: &str = "bench";
const TASK: (u32, u32) = (256, 512);
/// Times scheduled this long after the last creation at the earliest, so the firing is
/// measured on a cluster that is no longer taking creations.
const LEAD_MS: u64 = 5_000;
/// How long after the window's end every schedule may take to record its last time
/// before the bench reads the records anyway (and a missing time is an error).
const SETTLE: Duration = Duration::from_secs(120);
/// Concurrent readers of the records.
const READERS: usize = 64;

#[derive(clap::Args)]
pub struct SchedulesArgs {
    /// Schedules created.
    #[arg(long, default_value_t = 1000)]
    pub schedules: usize,
    /// Every schedule's expression: `rate(N seconds|minutes|hours)`, or every minute
    /// (`cron(* * * * ? *)` or `* * * * *`), whose period the exactly-once check knows.
    #[arg(long, default_value = "rate(10 seconds)")]
    pub expression: String,
    /// The window fired and measured: scheduled times from the common start to this many
    /// seconds after it (each schedule's end time).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Simulated agents the runs' tasks are placed on; each is sized to hold its share of
    /// every task the window starts, with room to spare (the tasks stay RUNNING: a
    /// simulated agent's task runs until it is stopped).
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// CreateSchedule calls in flight while creating.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// rate() only: start schedule i at i/N of a period after the common start, so the
    /// runs are spread evenly rather than all due at the same instant.
    #[arg(long)]
    pub spread: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Every figure the run prints, for `--report`.
#[derive(Debug, Default, serde::Serialize)]
pub struct SchedulesReport {
    pub schedules: usize,
    pub expression: String,
    pub period_ms: u64,
    pub spread: bool,
    pub agents: usize,
    pub agents_ready_secs: f64,
    pub create_secs: f64,
    pub creates_per_sec: f64,
    pub create_errors: u64,
    /// The common start time (epoch ms) and the end time every schedule was given.
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// Scheduled times in the window over every schedule: each should be recorded once.
    pub expected_times: u64,
    /// Records that are runs (not SKIPPED), by status.
    pub runs: u64,
    pub run_statuses: BTreeMap<String, u64>,
    /// Runs whose first attempt started no task (the reason is the attempt's failure).
    pub runs_without_task: u64,
    pub first_failure: Option<String>,
    /// Scheduled time → run recorded (the leader's clock in the entry), over every run.
    pub commit_lag_p50_ms: u64,
    pub commit_lag_p90_ms: u64,
    pub commit_lag_p99_ms: u64,
    pub commit_lag_max_ms: u64,
    /// Scheduled time → the run's task seen by a watcher of the leader (committed, applied
    /// and sent), over the runs whose task it saw.
    pub visible_runs: u64,
    pub visible_lag_p50_ms: u64,
    pub visible_lag_p90_ms: u64,
    pub visible_lag_p99_ms: u64,
    pub visible_lag_max_ms: u64,
    /// Times the watch was sent its opening picture again (it fell behind).
    pub watch_resends: u64,
    /// Per scheduled instant when the schedules share instants (at most 20 listed).
    pub instants: Vec<InstantFigures>,
    /// Scheduled times recorded SKIPPED, and why.
    pub skipped: u64,
    pub skipped_reasons: BTreeMap<String, u64>,
    /// Breaches of exactly-once found in the records (the first 100 listed).
    pub violations: u64,
    pub violation_list: Vec<String>,
    pub leader: u64,
    pub elections: usize,
    /// Each node over the window: CPU cores used and peak resident memory.
    pub window_secs: f64,
    pub nodes: Vec<NodeFigures>,
    /// Each node's busiest second of the window, in cores (the figures above average the
    /// bursts with the idle time between them).
    pub peak_cpu_cores: Vec<f64>,
    /// The same for this process: the simulated agents, the watch and the readers.
    pub bench_process_cpu_cores: f64,
    pub bench_process_peak_cpu_cores: f64,
    /// The load average (1 min) when the window started and ended: the machine is shared.
    pub loadavg_start: f64,
    pub loadavg_end: f64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct InstantFigures {
    pub scheduled_ms: u64,
    pub runs: u64,
    /// Raft entries the instant's runs were recorded in (distinct `recorded_at`): the
    /// leader proposes one batch at a time, so the last entry's lag is their sum.
    pub entries: u64,
    /// The first entry's lag, and the mean time from one entry's stamp to the next's.
    pub first_entry_ms: u64,
    pub entry_gap_ms: f64,
    pub commit_lag_p50_ms: u64,
    pub commit_lag_p99_ms: u64,
    pub commit_lag_max_ms: u64,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The period of the expressions the check knows: rate(), and cron every minute.
fn period_ms(expression: &str) -> Result<u64> {
    let e = expression.trim();
    if let Some(inner) = e.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let mut it = inner.split_whitespace();
        let n: u64 = it
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("{expression}: rate(N unit) with N a whole number"))?;
        let unit = match it.next().unwrap_or("") {
            "second" | "seconds" => 1_000,
            "minute" | "minutes" => 60_000,
            "hour" | "hours" => 3_600_000,
            "day" | "days" => 86_400_000,
            other => bail!("{expression}: unit {other:?} is not seconds, minutes, hours or days"),
        };
        if n == 0 || it.next().is_some() {
            bail!("{expression}: rate(N unit) with N above 0");
        }
        return Ok(n * unit);
    }
    let fields: Vec<&str> = match e.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
        Some(inner) => inner.split_whitespace().collect(),
        None => e.split_whitespace().collect(),
    };
    let every_minute = match fields.as_slice() {
        [m, h, dom, mon, dow, y] => {
            *m == "*"
                && *h == "*"
                && *mon == "*"
                && *y == "*"
                && ((*dom == "*" && *dow == "?") || (*dom == "?" && *dow == "*"))
        }
        [m, h, dom, mon, dow] => [*m, *h, *dom, *mon, *dow].iter().all(|f| *f == "*"),
        _ => false,
    };
    if every_minute {
        return Ok(60_000);
    }
    bail!(
        "--expression {expression}: the bench checks rate(N unit) and every-minute cron \
         (cron(* * * * ? *), * * * * *) only"
    )
}

/// The scheduled times of schedule `i` in the window, oldest first.
fn expected_times(
    rate: bool,
    period: u64,
    start: u64,
    end: u64,
    spread: Option<u64>,
    i: usize,
) -> Vec<u64> {
    let first = if rate {
        start + spread.map_or(0, |n| period * i as u64 / n.max(1))
    } else {
        // Every minute: the first minute boundary at or after the start.
        start.div_ceil(period) * period
    };
    (0..)
        .map(|k| first + k * period)
        .take_while(|t| *t <= end)
        .collect()
}

fn name(i: usize) -> String {
    format!("sb-{i:05}")
}

/// Creates the schedules with `concurrency` calls in flight; returns the errors that
/// remained after retries.
async fn create_all(api: Api, a: &SchedulesArgs, start: u64, end: u64, period: u64) -> Result<u64> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (api, next, failed) = (api.clone(), next.clone(), failed.clone());
        let (n, spread, expression) = (a.schedules, a.spread, a.expression.clone());
        workers.spawn(async move {
            let mut client = SchedulesClient::new(api);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let start_at = if spread {
                    start + period * i as u64 / n as u64
                } else {
                    start
                };
                let req = CreateScheduleRequest {
                    name: name(i),
                    task_definition: FAMILY.into(),
                    expression: expression.clone(),
                    start_at_ms: start_at,
                    end_at_ms: end,
                    overlap: "allow".into(),
                    // Idempotent: a call retried after an unanswered one gets the same schedule.
                    client_token: name(i),
                    ..Default::default()
                };
                let mut last = None;
                for attempt in 0..10 {
                    match client.create(req.clone()).await {
                        Ok(_) => {
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e.message().to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
                }
                if let Some(e) = last {
                    if let Ok(mut f) = failed.lock() {
                        f.push(format!("{}: {e}", name(i)));
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let failed = failed.lock().map(|f| f.clone()).unwrap_or_default();
    if let Some(first) = failed.first() {
        println!("  {} creations failed; the first: {first}", failed.len());
    }
    Ok(failed.len() as u64)
}

/// Every schedule's state and last fired time, page by page.
async fn list_all(api: Api) -> Result<Vec<Schedule>> {
    let mut client = SchedulesClient::new(api);
    let mut out = Vec::new();
    let mut next = String::new();
    loop {
        let page = client
            .list(ListSchedulesRequest {
                max_results: 1000,
                next_token: next,
            })
            .await?
            .into_inner();
        out.extend(page.schedules);
        if page.next_token.is_empty() {
            return Ok(out);
        }
        next = page.next_token;
    }
}

/// Every schedule's records, oldest first, read with `READERS` calls in flight.
async fn read_runs(api: Api, n: usize) -> Result<Vec<Vec<ScheduleRun>>> {
    let next = Arc::new(AtomicUsize::new(0));
    let out: Arc<Mutex<Vec<Vec<ScheduleRun>>>> = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (api, next, out) = (api.clone(), next.clone(), out.clone());
        workers.spawn(async move {
            let mut client = SchedulesClient::new(api);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut runs = Vec::new();
                for attempt in 0..5 {
                    match client.runs(ScheduleRunsRequest { name: name(i) }).await {
                        Ok(r) => {
                            runs = r.into_inner().runs;
                            break;
                        }
                        Err(e) if attempt == 4 => {
                            bail!("reading {}'s runs: {}", name(i), e.message())
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                runs.reverse();
                if let Ok(mut o) = out.lock() {
                    o[i] = runs;
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let out = out.lock().map_err(|_| anyhow!("a reader panicked"))?;
    Ok(out.clone())
}

/// When each of the family's tasks was first seen on a watch of the leader (this
/// machine's clock, which the leader shares), and how often the watch was re-sent its
/// opening picture.
#[derive(Default)]
struct Seen {
    at: HashMap<String, u64>,
    pictures: u64,
}

fn watch_tasks(api: Api) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Seen>>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen2 = seen.clone();
    let h = tokio::spawn(async move {
        let Ok(r) = TasksClient::new(api)
            .watch(WatchTasksRequest {
                family: FAMILY.into(),
                ..Default::default()
            })
            .await
        else {
            return;
        };
        let mut stream = r.into_inner();
        let mut in_picture = false;
        while let Some(Ok(ev)) = stream.next().await {
            let at = now_ms();
            let Some(t) = ev.task else { continue };
            if let Ok(mut s) = seen2.lock() {
                if ev.initial && !in_picture {
                    s.pictures += 1;
                }
                in_picture = ev.initial;
                s.at.entry(t.task_id).or_insert(at);
            }
        }
    });
    (h, seen)
}

pub async fn schedules(c: &mut LocalCluster, a: SchedulesArgs) -> Result<()> {
    if a.schedules == 0 || a.seconds == 0 || a.agents == 0 || a.concurrency == 0 {
        bail!("--schedules, --seconds, --agents and --concurrency must be above 0");
    }
    let period = period_ms(&a.expression)?;
    let rate = a.expression.trim().starts_with("rate(");
    if a.spread && !rate {
        bail!("--spread is for rate() expressions");
    }
    let (leader, term0) = c.leader(Duration::from_secs(30)).await?;
    c.register_bench_definition(leader).await?;

    // Room for every task the window starts (each run's task stays RUNNING), with a third
    // to spare, spread over the agents.
    let per_schedule = a.seconds * 1000 / period + 2;
    let tasks = a.schedules as u64 * per_schedule;
    let per_agent = (tasks * 4 / 3).div_ceil(a.agents as u64) + 1;
    let per_agent = u32::try_from(per_agent).context("too many tasks per agent")?;
    let size = (
        TASK.0.saturating_mul(per_agent),
        TASK.1.saturating_mul(per_agent),
    );
    let Fleet {
        handles,
        stop,
        ready_secs,
        ..
    } = start_fleet(c, leader, a.agents, size, "leader").await?;
    println!(
        "agents: {} simulated agents READY in {ready_secs:.1} s, each with room for {per_agent} of the runs' tasks ({} vCPU / {} MiB)",
        a.agents,
        size.0 / 1024,
        size.1
    );

    // Create: the common start is placed after the last creation could have finished at
    // a modest rate; if creation takes longer, the start moves past it (see below).
    let api = c.api(leader)?;
    let created_from = now_ms();
    let guess = LEAD_MS + 10_000 + a.schedules as u64 * 5;
    let start = if rate {
        created_from + guess
    } else {
        // The minute boundary a whole lead after the guess: cron fires on boundaries.
        (created_from + guess).div_ceil(60_000) * 60_000
    };
    let end = start + a.seconds * 1000;
    let t0 = Instant::now();
    let create_errors = create_all(api.clone(), &a, start, end, period).await?;
    let create_secs = t0.elapsed().as_secs_f64();
    let created = now_ms();
    println!(
        "create: {} schedules ({}, overlap allow, start {}, end {}) in {create_secs:.1} s ({:.0}/s, {} in flight), {create_errors} failed",
        a.schedules,
        a.expression,
        start,
        end,
        a.schedules as f64 / create_secs,
        a.concurrency
    );
    if create_errors > 0 {
        bail!("{create_errors} schedules could not be created");
    }
    if created + LEAD_MS > start {
        bail!(
            "creating took {create_secs:.1} s, past the common start set before it ({} ms after the first creation); \
             the first times would fire during creation",
            start - created_from
        );
    }

    // Watch the leader for the runs' tasks, from before the first time.
    let (watcher, seen) = watch_tasks(api.clone());
    let pids: Vec<(u64, u32)> = c
        .nodes
        .iter()
        .filter_map(|n| n.child.as_ref().map(|ch| (n.id, ch.id())))
        .collect();
    // The nodes, then this process (the simulated agents, the watch and the readers), which
    // shares the machine's cores with them.
    let mut watched = pids.clone();
    watched.push((0, std::process::id()));
    // Measure from a second before the first time to the last time's settling.
    let wait = start.saturating_sub(now_ms() + 1000);
    println!(
        "waiting {:.1} s for the first scheduled time",
        wait as f64 / 1000.0
    );
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let loadavg_start = loadavg();
    let cpu0: Vec<f64> = watched
        .iter()
        .map(|(_, pid)| process_figures(*pid).map(|f| f.0).unwrap_or(0.0))
        .collect();
    let w0 = Instant::now();
    let mut rss_max = vec![0u64; watched.len()];
    let mut cpu_peak = vec![0f64; watched.len()];
    let mut last = (Instant::now(), cpu0.clone());
    let mut terms = vec![term0];
    let mut leaders = vec![leader];
    while now_ms() < end + 1000 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dt = last.0.elapsed().as_secs_f64();
        last.0 = Instant::now();
        for (k, (_, pid)) in watched.iter().enumerate() {
            if let Some((cpu, rss)) = process_figures(*pid) {
                rss_max[k] = rss_max[k].max(rss);
                cpu_peak[k] = cpu_peak[k].max((cpu - last.1[k]) / dt);
                last.1[k] = cpu;
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
    // Until every schedule has dealt with its last time (its end makes it COMPLETED).
    let settle_from = Instant::now();
    let now_leader = leaders[leaders.len() - 1];
    let mut unsettled;
    loop {
        let all = list_all(c.api(now_leader)?).await?;
        unsettled = all.iter().filter(|s| s.state != "COMPLETED").count();
        if unsettled == 0 || settle_from.elapsed() > SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let window_secs = w0.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = watched
        .iter()
        .map(|(_, pid)| process_figures(*pid).map(|f| f.0).unwrap_or(0.0))
        .collect();
    let loadavg_end = loadavg();
    if unsettled > 0 {
        println!(
            "  {unsettled} schedules had not recorded their last time {} s after the end",
            SETTLE.as_secs()
        );
    }
    // Let the watcher take the last entries' events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = read_runs(c.api(now_leader)?, a.schedules).await?;
    watcher.abort();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    let seen = seen
        .lock()
        .map(|s| (s.at.clone(), s.pictures))
        .map_err(|_| anyhow!("the watcher panicked"))?;
    let (seen_at, pictures) = seen;

    // The records: every time once, at the period, none early; the lags of the runs.
    let mut report = SchedulesReport {
        schedules: a.schedules,
        expression: a.expression.clone(),
        period_ms: period,
        spread: a.spread,
        agents: a.agents,
        agents_ready_secs: ready_secs,
        create_secs,
        creates_per_sec: a.schedules as f64 / create_secs,
        create_errors,
        window_start_ms: start,
        window_end_ms: end,
        leader,
        elections: terms.len() - 1,
        window_secs,
        loadavg_start,
        loadavg_end,
        // The opening picture is the first one sent, not a re-send.
        watch_resends: pictures.saturating_sub(1),
        ..Default::default()
    };
    let mut violations: Vec<String> = Vec::new();
    let mut lags = Vec::new();
    let mut visible = Vec::new();
    // Per scheduled instant: each run's lag and its entry's stamp.
    let mut by_instant: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (i, runs) in records.iter().enumerate() {
        let want = expected_times(
            rate,
            period,
            start,
            end,
            a.spread.then_some(a.schedules as u64),
            i,
        );
        report.expected_times += want.len() as u64;
        let mut times: BTreeMap<u64, usize> = BTreeMap::new();
        for r in runs {
            let count = r.count.max(1);
            if r.status == "SKIPPED" {
                report.skipped += count;
                *report.skipped_reasons.entry(r.reason.clone()).or_default() += count;
                if count > 1 && r.last_time_ms != r.scheduled_time_ms + (count - 1) * period {
                    violations.push(format!(
                        "{}: SKIPPED range from {} says {} times ending at {}, not at the period",
                        name(i),
                        r.scheduled_time_ms,
                        count,
                        r.last_time_ms
                    ));
                }
            } else {
                report.runs += 1;
                *report.run_statuses.entry(r.status.clone()).or_default() += 1;
                if r.recorded_at_ms < r.scheduled_time_ms {
                    violations.push(format!(
                        "{}: run {} recorded at {}, before its time",
                        name(i),
                        r.run_id,
                        r.recorded_at_ms
                    ));
                }
                let lag = r.recorded_at_ms.saturating_sub(r.scheduled_time_ms);
                lags.push(lag);
                by_instant
                    .entry(r.scheduled_time_ms)
                    .or_default()
                    .push((lag, r.recorded_at_ms));
                match r.attempts.first() {
                    Some(at) if !at.task_id.is_empty() => {
                        if let Some(s) = seen_at.get(&at.task_id) {
                            visible.push(s.saturating_sub(r.scheduled_time_ms));
                        }
                    }
                    other => {
                        report.runs_without_task += 1;
                        if report.first_failure.is_none() {
                            report.first_failure = Some(format!(
                                "{}: {}",
                                r.run_id,
                                other.map(|a| a.failure.clone()).unwrap_or_default()
                            ));
                        }
                    }
                }
            }
            for k in 0..count {
                *times.entry(r.scheduled_time_ms + k * period).or_default() += 1;
            }
        }
        for (t, n) in &times {
            if *n > 1 {
                violations.push(format!("{}: time {t} recorded {n} times", name(i)));
            }
        }
        let got: Vec<u64> = times.keys().copied().collect();
        for w in got.windows(2) {
            if w[1] - w[0] != period {
                violations.push(format!(
                    "{}: times {} and {} are {} ms apart, not the period {period} ms",
                    name(i),
                    w[0],
                    w[1],
                    w[1] - w[0]
                ));
            }
        }
        if got != want {
            let missing = want.iter().filter(|t| !times.contains_key(t)).count();
            let extra = got.iter().filter(|t| !want.contains(t)).count();
            violations.push(format!(
                "{}: {missing} of its {} times in the window missing, {extra} outside it (recorded {:?}, due {:?})",
                name(i),
                want.len(),
                got.first().zip(got.last()),
                want.first().zip(want.last())
            ));
        }
    }
    lags.sort_unstable();
    visible.sort_unstable();
    report.commit_lag_p50_ms = pct(&lags, 0.5);
    report.commit_lag_p90_ms = pct(&lags, 0.9);
    report.commit_lag_p99_ms = pct(&lags, 0.99);
    report.commit_lag_max_ms = lags.last().copied().unwrap_or(0);
    report.visible_runs = visible.len() as u64;
    report.visible_lag_p50_ms = pct(&visible, 0.5);
    report.visible_lag_p90_ms = pct(&visible, 0.9);
    report.visible_lag_p99_ms = pct(&visible, 0.99);
    report.visible_lag_max_ms = visible.last().copied().unwrap_or(0);
    if by_instant.len() <= 20 {
        for (t, runs) in by_instant {
            let mut l: Vec<u64> = runs.iter().map(|r| r.0).collect();
            l.sort_unstable();
            let mut stamps: Vec<u64> = runs.iter().map(|r| r.1).collect();
            stamps.sort_unstable();
            stamps.dedup();
            let span = stamps.last().copied().unwrap_or(0) - stamps.first().copied().unwrap_or(0);
            report.instants.push(InstantFigures {
                scheduled_ms: t,
                runs: l.len() as u64,
                entries: stamps.len() as u64,
                first_entry_ms: l.first().copied().unwrap_or(0),
                entry_gap_ms: span as f64 / (stamps.len().max(2) - 1) as f64,
                commit_lag_p50_ms: pct(&l, 0.5),
                commit_lag_p99_ms: pct(&l, 0.99),
                commit_lag_max_ms: l.last().copied().unwrap_or(0),
            });
        }
    }
    report.violations = violations.len() as u64;
    report.violation_list = violations.iter().take(100).cloned().collect();

    println!(
        "fire: {} schedules, {}{}, window {} s ({} scheduled times due), leader node {leader}, {} elections (terms {terms:?}, leaders {leaders:?})",
        a.schedules,
        a.expression,
        if a.spread { " spread over the period" } else { ", all from the same start" },
        a.seconds,
        report.expected_times,
        report.elections
    );
    println!(
        "  runs recorded: {} {:?}; without a task: {}{}",
        report.runs,
        report.run_statuses,
        report.runs_without_task,
        report
            .first_failure
            .as_ref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    println!(
        "  scheduled time → run recorded (recorded_at, the leader's clock in its entry): p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
        report.commit_lag_p50_ms,
        report.commit_lag_p90_ms,
        report.commit_lag_p99_ms,
        report.commit_lag_max_ms
    );
    println!(
        "  scheduled time → run's task seen on a watch of the leader: p50 {} ms  p90 {} ms  p99 {} ms  max {} ms ({} of {} runs seen, {} picture re-sends)",
        report.visible_lag_p50_ms,
        report.visible_lag_p90_ms,
        report.visible_lag_p99_ms,
        report.visible_lag_max_ms,
        report.visible_runs,
        report.runs,
        report.watch_resends
    );
    for f in &report.instants {
        println!(
            "  time start+{} s: {} runs in {} entries (the first {} ms after the time, then one every {:.0} ms), recorded p50 {} ms  p99 {} ms  max {} ms",
            f.scheduled_ms.saturating_sub(start) / 1000,
            f.runs,
            f.entries,
            f.first_entry_ms,
            f.entry_gap_ms,
            f.commit_lag_p50_ms,
            f.commit_lag_p99_ms,
            f.commit_lag_max_ms
        );
    }
    println!("  SKIPPED: {}", report.skipped);
    for (why, n) in &report.skipped_reasons {
        println!("    {n} × {why}");
    }
    for (k, (id, _)) in pids.iter().enumerate() {
        let n = NodeFigures::of(
            &c.dir,
            *id,
            leader,
            (cpu1[k] - cpu0[k]) / window_secs,
            rss_max[k],
        );
        println!(
            "  node {id}{}: CPU {:.2} cores over the {window_secs:.0} s window, {:.2} in its busiest second, max RSS {} MiB, snapshots built {}{}",
            if n.leader_at_start { " (leader)" } else { "" },
            n.cpu_cores,
            cpu_peak[k],
            n.max_rss_bytes / (1024 * 1024),
            n.snapshots_built,
            if n.snapshots_built > 0 {
                format!(
                    " (last {} MB, build up to {} ms)",
                    n.last_snapshot_bytes / 1_000_000,
                    n.snapshot_build_ms_max
                )
            } else {
                String::new()
            }
        );
        report.nodes.push(n);
        report.peak_cpu_cores.push(cpu_peak[k]);
    }
    let me = pids.len();
    report.bench_process_cpu_cores = (cpu1[me] - cpu0[me]) / window_secs;
    report.bench_process_peak_cpu_cores = cpu_peak[me];
    println!(
        "  this process (simulated agents, watch): CPU {:.2} cores over the window, {:.2} in its busiest second",
        report.bench_process_cpu_cores, report.bench_process_peak_cpu_cores
    );
    println!(
        "  load average (1 min): {loadavg_start:.2} at the start, {loadavg_end:.2} at the end"
    );
    println!(
        "  exactly once: {} scheduled times checked, {} violations",
        report.expected_times, report.violations
    );
    for v in violations.iter().take(10) {
        println!("    {v}");
    }
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.violations > 0 {
        bail!(
            "{} breaches of exactly-once in the records (listed above)",
            report.violations
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_the_expressions_the_check_knows() {
        assert_eq!(period_ms("rate(10 seconds)").unwrap(), 10_000);
        assert_eq!(period_ms("rate(1 minute)").unwrap(), 60_000);
        assert_eq!(period_ms("cron(* * * * ? *)").unwrap(), 60_000);
        assert_eq!(period_ms("* * * * *").unwrap(), 60_000);
        assert!(period_ms("cron(0 * * * ? *)").is_err());
        assert!(period_ms("rate(0 seconds)").is_err());
    }

    #[test]
    fn expected_times_start_on_the_start_or_the_next_minute() {
        assert_eq!(
            expected_times(true, 10_000, 5_000, 35_000, None, 3),
            vec![5_000, 15_000, 25_000, 35_000]
        );
        // Spread: schedule 1 of 4 starts a quarter period later.
        assert_eq!(
            expected_times(true, 10_000, 0, 30_000, Some(4), 1),
            vec![2_500, 12_500, 22_500]
        );
        assert_eq!(
            expected_times(false, 60_000, 61_000, 200_000, None, 0),
            vec![120_000, 180_000]
        );
    }
}
