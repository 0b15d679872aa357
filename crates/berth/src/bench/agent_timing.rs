//! Timing benches on a real agent and the local Docker engine: how close to its maximum
//! run time a task gets SIGTERM (`bench timeouts`), and how long after its scheduled time
//! a scheduled run's task is RUNNING (`bench schedule-start`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::schedules_client::SchedulesClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use clap::Args;

use super::schedules::{loadavg, now_ms, pct};
use super::{LocalAgent, LocalCluster};

#[derive(Args)]
pub struct TimeoutsArgs {
    /// Tasks run in all, each with the same maximum run time.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Tasks started together; the next wave starts once these have stopped.
    #[arg(long, default_value_t = 100)]
    pub wave: usize,
    /// Each task's maximum run time, in seconds.
    #[arg(long, default_value_t = 3)]
    pub max_runtime: u32,
    #[arg(long, default_value = "berth/workload")]
    pub image: String,
}

#[derive(Args)]
pub struct ScheduleStartArgs {
    /// Schedules created, each `rate(PERIOD seconds)` running a one-second task.
    #[arg(long, default_value_t = 10)]
    pub schedules: usize,
    /// Every schedule's period, in seconds.
    #[arg(long, default_value_t = 10)]
    pub period: u64,
    /// The window: scheduled times from the common start to this many seconds after it.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Start schedule i at i/N of a period after the common start, rather than all due at
    /// the same instant.
    #[arg(long)]
    pub spread: bool,
    #[arg(long, default_value = "berth/workload")]
    pub image: String,
}

async fn register(api: &Api, family: &str, image: &str, command: &[&str]) -> Result<()> {
    TaskDefinitionsClient::new(api.clone())
        .register(RegisterTaskDefinitionRequest {
            task_definition: Some(TaskDefinitionSpec {
                family: family.into(),
                cpu: Some(256),
                memory: Some(512),
                // No network: the figures are about the agent's clocks, not the engine's
                // network setup.
                network_mode: Some("none".into()),
                container_definitions: vec![ContainerDefinition {
                    name: "app".into(),
                    image: image.into(),
                    command: command.iter().map(|s| s.to_string()).collect(),
                    stop_timeout: Some(2),
                    ..Default::default()
                }],
                timeouts: None,
            }),
        })
        .await
        .map_err(|e| anyhow!("registering {family}: {}", e.message()))?;
    Ok(())
}

/// The tasks `ids` as the control plane has them, 100 per call.
async fn describe(api: &Api, ids: &[String]) -> Result<Vec<Task>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(berth_core::limits::MAX_DESCRIBE) {
        let r = TasksClient::new(api.clone())
            .describe(DescribeTasksRequest {
                task_ids: chunk.to_vec(),
                stale: false,
            })
            .await
            .map_err(|e| anyhow!("describing tasks: {}", e.message()))?;
        out.extend(r.into_inner().tasks);
    }
    Ok(out)
}

/// One container's start and first SIGTERM, from the engine's event log.
#[derive(Default, Clone, Copy)]
struct Engine {
    start_ns: Option<u64>,
    term_ns: Option<u64>,
}

/// The engine's start and kill events for the agent's containers, read as they happen: the
/// engine keeps only its last few hundred events, too few to ask for afterwards.
struct EventLog {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EventLog {
    fn start(agent: &str) -> Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                &format!("label=berth.agent={agent}"),
                "--filter",
                "event=start",
                "--filter",
                "event=kill",
                "--format",
                "{{json .}}",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("running `docker events`")?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("`docker events` has no output"))?;
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        Ok(EventLog {
            child,
            lines,
            reader: Some(reader),
        })
    }

    /// Stops reading; each task's first start and first SIGTERM.
    fn finish(mut self) -> Result<HashMap<String, Engine>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self
            .lines
            .lock()
            .map_err(|_| anyhow!("the event reader panicked"))?;
        let mut by_task: HashMap<String, Engine> = HashMap::new();
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            let ev: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("an engine event: {line}"))?;
            let attrs = &ev["Actor"]["Attributes"];
            let Some(task) = attrs["berth.task"].as_str() else {
                continue;
            };
            let at = ev["timeNano"].as_u64().unwrap_or(0);
            let e = by_task.entry(task.to_string()).or_default();
            match ev["Action"].as_str() {
                Some("start") => {
                    e.start_ns.get_or_insert(at);
                }
                Some("kill") if attrs["signal"].as_str() == Some("15") => {
                    e.term_ns.get_or_insert(at);
                }
                _ => {}
            }
        }
        Ok(by_task)
    }
}

pub async fn timeouts(c: &LocalCluster, dir: &Path, a: TimeoutsArgs) -> Result<()> {
    if a.tasks == 0 || a.wave == 0 || a.max_runtime == 0 {
        bail!("--tasks, --wave and --max-runtime must be above 0");
    }
    let (agent, api) = LocalAgent::start(c, dir, &a.image).await?;
    let result = run_timeouts(&api, &agent.id, &a).await;
    agent.stop();
    result
}

async fn run_timeouts(api: &Api, agent: &str, a: &TimeoutsArgs) -> Result<()> {
    // A shell as PID 1 ignores SIGTERM unless it traps it; this one exits on it at once.
    register(
        api,
        "bounded",
        &a.image,
        &["sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait"],
    )
    .await?;
    let events = EventLog::start(agent)?;
    // `docker events` is subscribed before the first container starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let load0 = loadavg();
    let mut ids: Vec<String> = Vec::with_capacity(a.tasks);
    let mut wave_no = 0;
    while ids.len() < a.tasks {
        let n = a.wave.min(a.tasks - ids.len());
        let mut wave = Vec::with_capacity(n);
        while wave.len() < n {
            let count = (n - wave.len()).min(10) as u32;
            let r = TasksClient::new(api.clone())
                .run(RunTaskRequest {
                    task_definition: "bounded".into(),
                    count,
                    client_token: format!("bounded-{wave_no}-{}", wave.len()),
                    timeouts: Some(Timeouts {
                        start_timeout: None,
                        max_runtime: Some(a.max_runtime),
                    }),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("RunTask: {}", e.message()))?
                .into_inner();
            if let Some(f) = r.failures.first() {
                bail!("a task was not placed: {} {}", f.reason, f.detail);
            }
            wave.extend(r.tasks.into_iter().map(|t| t.task_id));
        }
        // Every task of the wave stops on its own, at its limit.
        let deadline = Instant::now() + Duration::from_secs(120 + u64::from(a.max_runtime));
        loop {
            let live = describe(api, &wave)
                .await?
                .iter()
                .filter(|t| t.last_status != "STOPPED")
                .count();
            if live == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{live} tasks of wave {wave_no} still not STOPPED after 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ids.extend(wave);
        wave_no += 1;
    }
    let took = t0.elapsed();
    // The last events reach the reader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let engine = events.finish()?;
    let tasks = describe(api, &ids).await?;
    let limit_ns = u64::from(a.max_runtime) * 1_000_000_000;
    let mut lags: Vec<i64> = Vec::with_capacity(ids.len());
    // How late the agent learned of each start: its RUNNING report's time against the
    // engine's start event (the same clock).
    let mut learned: Vec<i64> = Vec::with_capacity(ids.len());
    let mut other_reason = Vec::new();
    let mut no_term = 0;
    for t in &tasks {
        if !t.stopped_reason.starts_with("Timeout") {
            other_reason.push(format!("{}: {}", t.task_id, t.stopped_reason));
        }
        let e = engine.get(&t.task_id).copied().unwrap_or_default();
        if let (Some(s), Some(running)) = (e.start_ns, t.started_at_ms) {
            learned.push(running as i64 - (s / 1_000_000) as i64);
        }
        match e {
            Engine {
                start_ns: Some(s),
                term_ns: Some(k),
            } => lags.push((k as i64 - (s + limit_ns) as i64) / 1_000_000),
            _ => no_term += 1,
        }
    }
    lags.sort_unstable();
    learned.sort_unstable();
    let over = lags.iter().filter(|l| **l > 1000).count();
    let p99 = pct(&lags, 0.99);
    println!(
        "timeouts: {} tasks with maxRuntime {} s, {} at a time, one real agent on the local engine ({:.0} s, load {load0:.2} → {:.2})",
        ids.len(),
        a.max_runtime,
        a.wave,
        took.as_secs_f64(),
        loadavg()
    );
    println!(
        "  engine's container start + limit → engine's SIGTERM (kill event, signal 15), in ms:"
    );
    println!(
        "    min {}  p50 {}  p90 {}  p99 {}  max {}   over 1 s: {over}",
        lags.first().copied().unwrap_or_default(),
        pct(&lags, 0.5),
        pct(&lags, 0.9),
        p99,
        lags.last().copied().unwrap_or_default(),
    );
    println!(
        "  engine's start event → the agent's RUNNING report, in ms: p50 {}  p99 {}  max {}",
        pct(&learned, 0.5),
        pct(&learned, 0.99),
        learned.last().copied().unwrap_or_default()
    );
    println!(
        "  bar: SIGTERM within 1 s of the limit at p99: {}",
        if p99 <= 1000 && no_term == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    if no_term > 0 {
        println!("  {no_term} tasks have no start and SIGTERM in the engine's events");
    }
    if let Some(first) = other_reason.first() {
        println!(
            "  {} tasks stopped for another reason; the first: {first}",
            other_reason.len()
        );
    }
    Ok(())
}

pub async fn schedule_start(c: &LocalCluster, dir: &Path, a: ScheduleStartArgs) -> Result<()> {
    if a.schedules == 0 || a.period == 0 || a.seconds < a.period {
        bail!("--schedules and --period must be above 0, and --seconds at least one period");
    }
    let (agent, api) = LocalAgent::start(c, dir, &a.image).await?;
    let result = run_schedule_start(&api, &a).await;
    agent.stop();
    result
}

async fn run_schedule_start(api: &Api, a: &ScheduleStartArgs) -> Result<()> {
    register(api, "scheduled", &a.image, &["sleep", "1"]).await?;
    let period = a.period * 1000;
    // Far enough ahead that every schedule exists before its first time.
    let start = now_ms() + 3_000;
    let end = start + a.seconds * 1000;
    let name = |i: usize| format!("ss-{i:03}");
    for i in 0..a.schedules {
        let start_at = if a.spread {
            start + period * i as u64 / a.schedules as u64
        } else {
            start
        };
        SchedulesClient::new(api.clone())
            .create(CreateScheduleRequest {
                name: name(i),
                task_definition: "scheduled".into(),
                expression: format!("rate({} seconds)", a.period),
                start_at_ms: start_at,
                end_at_ms: end,
                client_token: name(i),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating {}: {}", name(i), e.message()))?;
    }
    let load0 = loadavg();
    // The window, then time for the last runs' tasks to start and stop.
    let wait = Duration::from_millis(end.saturating_sub(now_ms())) + Duration::from_secs(15);
    tokio::time::sleep(wait).await;

    let mut runs = Vec::new();
    for i in 0..a.schedules {
        let r = SchedulesClient::new(api.clone())
            .runs(ScheduleRunsRequest { name: name(i) })
            .await
            .map_err(|e| anyhow!("reading {}'s runs: {}", name(i), e.message()))?;
        runs.extend(r.into_inner().runs);
    }
    let mut skipped = 0;
    let mut by_task: HashMap<String, u64> = HashMap::new();
    for r in &runs {
        if r.status == "SKIPPED" {
            skipped += r.count.max(1);
            continue;
        }
        if let Some(at) = r.attempts.first().filter(|at| !at.task_id.is_empty()) {
            by_task.insert(at.task_id.clone(), r.scheduled_time_ms);
        }
    }
    let ids: Vec<String> = by_task.keys().cloned().collect();
    let tasks = describe(api, &ids).await?;
    let mut lags: Vec<u64> = Vec::with_capacity(tasks.len());
    let mut never = Vec::new();
    for t in &tasks {
        let scheduled = by_task.get(&t.task_id).copied().unwrap_or_default();
        match t.started_at_ms {
            Some(at) => lags.push(at.saturating_sub(scheduled)),
            None => never.push(format!("{}: {}", t.task_id, t.stopped_reason)),
        }
    }
    lags.sort_unstable();
    let p99 = pct(&lags, 0.99);
    println!(
        "schedule-start: {} schedules at rate({} seconds){} over {} s, a one-second task each, one real agent on the local engine, image present (load {load0:.2} → {:.2})",
        a.schedules,
        a.period,
        if a.spread { ", spread over the period" } else { ", all due at the same instants" },
        a.seconds,
        loadavg()
    );
    println!(
        "  {} runs, {skipped} scheduled times SKIPPED; scheduled time → RUNNING (the agent's report), in ms:",
        runs.len() - runs.iter().filter(|r| r.status == "SKIPPED").count()
    );
    println!(
        "    p50 {}  p90 {}  p99 {}  max {}",
        pct(&lags, 0.5),
        pct(&lags, 0.9),
        p99,
        lags.last().copied().unwrap_or_default()
    );
    println!(
        "  bar: p99 ≤ 3 s: {}",
        if p99 <= 3000 && never.is_empty() && !lags.is_empty() {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(first) = never.first() {
        println!(
            "  {} runs' tasks never ran; the first: {first}",
            never.len()
        );
    }
    Ok(())
}
