//! Services through the faults: two services are created before the first fault, and an
//! updater changes their desired counts every 8–15 s while faults run (seeded). After
//! healing, every service must reach its desired count with every task RUNNING and exactly
//! that many live tasks (no task doubled by a leader change), and its desired count must be
//! what the updates said: the last acknowledged one, or one sent after it whose answer was
//! lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use berth_proto::bearer::Api;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checks::CheckResult;

/// The services and the desired counts they start with.
const SERVICES: [(&str, i64); 2] = [("chaos-svc-a", 2), ("chaos-svc-b", 3)];
/// Desired counts the updater picks from.
const MAX_DESIRED: i64 = 4;
/// How long the final check waits for the services to settle after healing.
const SETTLE: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub const CHECK_NAME: &str = "services converge to their desired counts";

/// Every update sent, in order: the value, and whether it was acknowledged (`Some(true)`),
/// refused (`Some(false)`) or its outcome is unknown (`None`).
#[derive(Default)]
pub struct Updates(Mutex<BTreeMap<String, Vec<Sent>>>);

/// One update: the desired count sent, and its outcome.
type Sent = (i64, Option<bool>);

impl Updates {
    fn record(&self, name: &str, desired: i64, outcome: Option<bool>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .push((desired, outcome));
    }

    /// The desired counts the service may end with: the last acknowledged value (the
    /// initial one when none was), and every value whose outcome is unknown — a write that
    /// timed out may still be committed later, even after a later one was acknowledged.
    fn allowed(&self, name: &str, initial: i64) -> Vec<i64> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let sent = g.get(name).map(Vec::as_slice).unwrap_or_default();
        let last_ok = sent.iter().rev().find(|(_, o)| *o == Some(true));
        let mut allowed = vec![last_ok.map_or(initial, |(d, _)| *d)];
        allowed.extend(sent.iter().filter(|(_, o)| o.is_none()).map(|(d, _)| *d));
        allowed
    }
}

/// Creates the services (idempotently, by token, through any node).
pub async fn create(endpoints: &[(String, Api)], family: &str, seed: u64) -> Result<()> {
    for (name, desired) in SERVICES {
        let req = CreateServiceRequest {
            service_name: name.to_string(),
            task_definition: family.to_string(),
            desired_count: desired,
            client_token: format!("chaos-{seed}-{name}"),
            ..Default::default()
        };
        let mut last = anyhow!("no endpoint");
        let mut done = false;
        for i in 0..(endpoints.len() * 5) {
            let ch = endpoints[i % endpoints.len()].1.clone();
            match tokio::time::timeout(CALL_TIMEOUT, ServicesClient::new(ch).create(req.clone()))
                .await
            {
                Ok(Ok(_)) => {
                    done = true;
                    break;
                }
                Ok(Err(s)) => last = anyhow!("creating service {name}: {}", s.message()),
                Err(_) => last = anyhow!("creating service {name}: timed out"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !done {
            return Err(last);
        }
    }
    Ok(())
}

/// Changes a random service's desired count every 8–15 s until `stop`.
pub async fn run_updater(
    endpoints: Vec<(String, Api)>,
    updates: Arc<Updates>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e41_1ce5);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_millis(rng.gen_range(8_000..15_000));
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (name, _) = SERVICES[rng.gen_range(0..SERVICES.len())];
        let desired = rng.gen_range(0..=MAX_DESIRED);
        let ch = endpoints[i % endpoints.len()].1.clone();
        i += 1;
        let mut client = ServicesClient::new(ch);
        if i.is_multiple_of(3) {
            // A rolling deployment through the faults: every task replaced within the
            // bounds. Its outcome does not matter to the counts.
            let call = client.update(UpdateServiceRequest {
                service: name.to_string(),
                force_new_deployment: true,
                ..Default::default()
            });
            let _ = tokio::time::timeout(CALL_TIMEOUT, call).await;
            continue;
        }
        let call = client.update(UpdateServiceRequest {
            service: name.to_string(),
            desired_count: Some(desired),
            ..Default::default()
        });
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(s)) if definite(s.code()) => Some(false),
            _ => None,
        };
        updates.record(name, desired, outcome);
    }
}

/// A refusal that certainly changed nothing.
fn definite(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
    )
}

/// One service as seen at the end: its desired count, its live tasks' states, and its
/// deployments as `STATUS/ROLLOUT`.
struct Seen {
    desired: i64,
    status: String,
    live: Vec<String>,
    deployments: Vec<String>,
}

async fn look(ch: &Api, name: &str) -> Result<Seen> {
    let d = tokio::time::timeout(
        CALL_TIMEOUT,
        ServicesClient::new(ch.clone()).describe(DescribeServicesRequest {
            services: vec![name.to_string()],
            stale: false,
        }),
    )
    .await
    .map_err(|_| anyhow!("describe timed out"))??
    .into_inner();
    let svc = d
        .services
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("service {name} does not exist"))?;
    let tasks = tokio::time::timeout(
        CALL_TIMEOUT,
        TasksClient::new(ch.clone()).list(ListTasksRequest {
            group: format!("service:{name}"),
            desired_status: "RUNNING".into(),
            max_results: 1000,
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| anyhow!("list timed out"))??
    .into_inner();
    Ok(Seen {
        desired: i64::from(svc.desired_count),
        status: svc.status,
        live: tasks.tasks.into_iter().map(|t| t.last_status).collect(),
        deployments: svc
            .deployments
            .iter()
            .filter(|d| d.status != "INACTIVE")
            .map(|d| format!("{}/{}", d.status, d.rollout_state))
            .collect(),
    })
}

/// The final check: within `SETTLE`, every service ACTIVE at an allowed desired count, with
/// exactly that many live tasks, all RUNNING, and one deployment left: the PRIMARY, COMPLETED.
pub async fn check(endpoints: &[(String, Api)], updates: &Updates) -> CheckResult {
    let deadline = Instant::now() + SETTLE;
    let started = Instant::now();
    loop {
        let mut problems = Vec::new();
        let mut summary = Vec::new();
        for (k, (name, initial)) in SERVICES.iter().enumerate() {
            let ch = &endpoints[k % endpoints.len()].1;
            let allowed = updates.allowed(name, *initial);
            match look(ch, name).await {
                Err(e) => problems.push(format!("{name}: {e:#}")),
                Ok(s) => {
                    let running = s.live.iter().filter(|x| *x == "RUNNING").count() as i64;
                    summary.push(format!("{name} desired {} running {running}", s.desired));
                    if s.status != "ACTIVE" {
                        problems.push(format!("{name} is {}", s.status));
                    }
                    if !allowed.contains(&s.desired) {
                        problems.push(format!(
                            "{name} has desired count {}; the updates allow {allowed:?}",
                            s.desired
                        ));
                    }
                    if s.deployments != ["PRIMARY/COMPLETED"] {
                        problems.push(format!(
                            "{name}: deployments {:?}; want exactly one, PRIMARY and COMPLETED",
                            s.deployments
                        ));
                    }
                    if s.live.len() as i64 != s.desired || running != s.desired {
                        problems.push(format!(
                            "{name}: desired {}, {} live tasks ({:?})",
                            s.desired,
                            s.live.len(),
                            s.live
                        ));
                    }
                }
            }
        }
        let sent: usize = updates
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum();
        if problems.is_empty() {
            return CheckResult::new(
                CHECK_NAME,
                vec![],
                format!(
                    "{} after healing: {} ({sent} desired-count updates during the faults)",
                    humantime(started.elapsed()),
                    summary.join("; ")
                ),
            );
        }
        if Instant::now() > deadline {
            return CheckResult::new(
                CHECK_NAME,
                problems,
                format!("not settled {} after healing", humantime(SETTLE)),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn humantime(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_counts_are_the_last_acknowledged_and_later_unknown_ones() {
        let u = Updates::default();
        assert_eq!(u.allowed("s", 2), vec![2]);
        u.record("s", 3, Some(true));
        u.record("s", 1, None);
        u.record("s", 4, Some(false));
        assert_eq!(u.allowed("s", 2), vec![3, 1]);
        u.record("s", 0, Some(true));
        assert_eq!(u.allowed("s", 2), vec![0, 1]);
        // An unknown one before any acknowledgement may also have landed.
        let u = Updates::default();
        u.record("s", 4, None);
        assert_eq!(u.allowed("s", 2), vec![2, 4]);
    }
}
