//! Service tasks leave an agent that should not keep them — drained by an operator, or
//! with a container engine that stopped answering — replacement first: three `berth
//! control` processes, real agents on the real Docker engine.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::*;
use common::agent::*;
use common::service::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

async fn create(api: Api, name: &str, desired: i64) {
    ServicesClient::new(api)
        .create(CreateServiceRequest {
            service_name: name.into(),
            task_definition: "web".into(),
            desired_count: desired,
            ..Default::default()
        })
        .await
        .expect("create service");
}

async fn agent(api: Api, id: &str) -> Agent {
    AgentsClient::new(api)
        .describe(DescribeAgentRequest {
            agent_id: id.into(),
            stale: false,
        })
        .await
        .expect("describe agent")
        .into_inner()
        .agent
        .expect("agent")
}

/// Samples the service every 100 ms until stopped: the fewest RUNNING live tasks seen.
fn sample_running(api: Api, name: &'static str, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let least = Arc::new(AtomicUsize::new(usize::MAX));
    let out = least.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(tasks) =
                tokio::time::timeout(Duration::from_secs(1), live(api.clone(), name)).await
            {
                let running = tasks.iter().filter(|t| t.last_status == "RUNNING").count();
                least.fetch_min(running, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_an_agent_moves_its_service_tasks_replacement_first() {
    require_docker();
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(1);
    let a = AgentProc::start_in(&c, "drain-a", "a");
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register");
    create(api.clone(), "drained", 2).await;
    let before = wait_running(api.clone(), "drained", 2, 2, Duration::from_secs(60)).await;
    assert!(before.iter().all(|t| t.agent_id == a.id));
    let b = AgentProc::start_in(&c, "drain-b", "b");
    wait_agent(api.clone(), &b.id, "READY", Duration::from_secs(20)).await;
    // Past the minimum healthy time (5 s) the old tasks count as healthy: each may stop
    // only once its replacement has stayed up as long.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let least = sample_running(api.clone(), "drained", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    AgentsClient::new(api.clone())
        .drain(DrainAgentRequest {
            agent_id: a.id.clone(),
            drain: true,
        })
        .await
        .expect("drain");
    let after = wait_running_on(
        api.clone(),
        "drained",
        2,
        4,
        Some(&b.id),
        Duration::from_secs(60),
    )
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let least = least.load(Ordering::Relaxed);
    eprintln!("drain: 2 service tasks moved in {took:?}; RUNNING never under {least}");
    assert!(least >= 2, "RUNNING dropped to {least} while draining");
    assert!(after
        .iter()
        .all(|t| before.iter().all(|o| o.task_id != t.task_id)));
    for old in &before {
        let t = wait_for(
            api.clone(),
            &old.task_id,
            "STOPPED",
            Duration::from_secs(30),
            |t| t.last_status == "STOPPED",
        )
        .await;
        assert!(t.stopped_reason.contains("draining"), "{t:?}");
    }
    eprintln!(
        "drain: old tasks stopped by {:?} after the drain",
        started.elapsed()
    );
}

/// A unix socket in front of the engine's that can stop passing bytes either way: the
/// engine, as the agent sees it, stops answering without closing anything.
struct FreezableEngine {
    path: PathBuf,
    frozen: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl FreezableEngine {
    fn start() -> FreezableEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).expect("bind the engine proxy");
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock").await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (er, ew) = engine.into_split();
                tokio::spawn(pump(cr, ew, f.clone()));
                tokio::spawn(pump(er, cw, f.clone()));
            }
        });
        FreezableEngine {
            path,
            frozen,
            _dir: dir,
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

async fn pump(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_whose_engine_stops_answering_has_its_service_tasks_replaced() {
    require_docker();
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(2);
    let engine = FreezableEngine::start();
    let host = engine.docker_host();
    let x = AgentProc::start_with(
        &c,
        "hung",
        "a",
        &[("DOCKER_HOST", &host)],
        &["--engine-timeout-ms", "1000"],
    );
    wait_agent(api.clone(), &x.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register");
    create(api.clone(), "held", 1).await;
    let before = wait_running(api.clone(), "held", 1, 1, Duration::from_secs(60)).await;
    assert_eq!(before[0].agent_id, x.id);
    let y = AgentProc::start_in(&c, "fine", "b");
    wait_agent(api.clone(), &y.id, "READY", Duration::from_secs(20)).await;

    let froze = Instant::now();
    engine.frozen.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = agent(api.clone(), &x.id).await;
        if !a.engine_error.is_empty() {
            eprintln!(
                "engine frozen → agent reports it in {:?}: {}",
                froze.elapsed(),
                a.engine_error
            );
            assert_eq!(a.status, "READY", "it still heartbeats: {a:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never reported its engine: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = wait_running_on(
        api.clone(),
        "held",
        1,
        2,
        Some(&y.id),
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "engine frozen → service task RUNNING elsewhere in {:?}",
        froze.elapsed()
    );
    assert_ne!(moved[0].task_id, before[0].task_id);

    // The engine answers again: the agent says so, and the old task finally stops.
    engine.frozen.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = agent(api.clone(), &x.id).await;
        if a.engine_error.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine error never cleared: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(
        api.clone(),
        &before[0].task_id,
        "STOPPED",
        Duration::from_secs(30),
        |t| t.last_status == "STOPPED",
    )
    .await;
    drop(x);
}
