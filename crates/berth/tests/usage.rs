//! Usage end to end: a real task on a real agent, metered by three `berth control`
//! processes; the same figures from every node, across a leader kill and a full restart.

mod common;

use std::time::Duration;

use berth_proto::v1::usage_client::UsageClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;

async fn usage(api: Api, since: u64, until: u64, by: &str) -> GetUsageResponse {
    UsageClient::new(api)
        .get(GetUsageRequest {
            since_ms: Some(since),
            until_ms: Some(until),
            by: by.into(),
            stale: false,
        })
        .await
        .expect("usage")
        .into_inner()
}

/// The figures that must not change, without the revision the answer was read at.
fn figures(r: &GetUsageResponse) -> Vec<(String, u64, String, String, String)> {
    r.lines
        .iter()
        .map(|l| {
            (
                l.key.clone(),
                l.tasks,
                format!("{:.9}", l.vcpu_hours),
                format!("{:.9}", l.gib_hours),
                format!("{:.9}", l.cost),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_task_is_billed_a_minute_the_same_on_every_node_through_leader_kill_and_restart() {
    require_docker();
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let a = AgentProc::start(&c, "meter");
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("meter", &["sleep", "2"]))
        .await
        .expect("register");
    let ran = run(api.clone(), "meter", 1, "usage-1").await.expect("run");
    let id = ran.tasks[0].task_id.clone();
    let t = wait_for(api.clone(), &id, "STOPPED", Duration::from_secs(60), |t| {
        t.last_status == "STOPPED"
    })
    .await;
    let start = t.pull_started_at_ms.expect("pull start");
    let stopped = t.stopped_at_ms.expect("stopped");
    assert!(stopped - start < 60_000, "{t:?}");
    let until = stopped + 120_000;

    // Ran about 2 s, billed 60 s: a quarter vCPU and half a GiB for a minute.
    let r = usage(api.clone(), 0, until, "task").await;
    assert_eq!(r.lines.len(), 1, "{r:?}");
    let l = &r.lines[0];
    assert_eq!(l.key, id);
    assert!((l.vcpu_hours - 0.25 / 60.0).abs() < 1e-9, "{l:?}");
    assert!((l.gib_hours - 0.5 / 60.0).abs() < 1e-9, "{l:?}");
    let cost = 0.25 / 60.0 * 0.04048 + 0.5 / 60.0 * 0.004445;
    assert!((l.cost - cost).abs() < 1e-9, "{l:?} vs {cost}");
    // A period inside the billed minute is cut exactly: 30 s of it.
    let cut = usage(api.clone(), start + 10_000, start + 40_000, "family").await;
    assert!(
        (cut.lines[0].vcpu_hours - 0.25 * 30.0 / 3600.0).abs() < 1e-9,
        "{cut:?}"
    );

    // The same answer from every node.
    let expect = figures(&r);
    for n in 1..=3 {
        assert_eq!(
            figures(&usage(c.api(n), 0, until, "task").await),
            expect,
            "node {n}"
        );
    }

    // The leader SIGKILLed: the survivors answer the same.
    c.kill(leader);
    let leader2 = c.wait_leader(Duration::from_secs(30)).await;
    assert_eq!(
        figures(&usage(c.api(leader2), 0, until, "task").await),
        expect
    );
    c.spawn(leader);

    // A full restart: the same again.
    for n in 1..=3 {
        c.stop(n);
    }
    for n in 1..=3 {
        c.spawn(n);
    }
    let leader3 = c.wait_leader(Duration::from_secs(30)).await;
    for n in [leader3, c.follower_of(leader3)] {
        assert_eq!(
            figures(&usage(c.api(n), 0, until, "task").await),
            expect,
            "node {n} after a full restart"
        );
    }

    // The CLI's CSV export carries the line.
    let out = berth(
        &c.endpoint(),
        &[
            "-o",
            "csv",
            "usage",
            "--by",
            "task",
            "--since",
            "1970-01-01T00:00:00Z",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("TASK,TASKS,VCPU-HOURS,GIB-HOURS,COST"),
        "{text}"
    );
    assert!(text.contains(&format!("{id},1,")), "{text}");
    let bad = berth(&c.endpoint(), &["usage", "--by", "colour"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("task, family"));
}
