//! Target-tracking autoscaling end to end: tasks that burn their CPU for a while make the
//! service scale out (in steps held apart by the cooldown), and once the burning stops it
//! scales back in to its minimum — real agents measuring real containers, decisions by the
//! leader through Raft. Bad policies are refused by name.

mod common;

use std::time::{Duration, Instant};

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::*;
use common::agent::*;
use common::service::*;
use common::*;
use tonic::Code;

/// Busy for 12 s after it starts, then idle.
const BURST: &str =
    "end=$(( $(date +%s) + 12 )); while [ $(date +%s) -lt $end ]; do :; done; exec sleep 3600";

async fn wait_desired(
    api: common::Api,
    name: &str,
    ok: impl Fn(u32) -> bool,
    within: Duration,
) -> Service {
    let deadline = Instant::now() + within;
    loop {
        let svc = describe(api.clone(), name).await;
        if ok(svc.desired_count) {
            return svc;
        }
        assert!(
            Instant::now() < deadline,
            "desired count stayed {}: {:#?}",
            svc.desired_count,
            svc.events.iter().map(|e| &e.message).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_service_scales_out_within_its_cooldown_and_back_in_when_the_load_stops() {
    // Held to the end: dropping it stops the agent.
    let (c, _agent) = cluster_with_fast_meter("scale").await;
    let api = c.api(1);
    register(api.clone(), quiet_spec("burst", &["sh", "-c", BURST]))
        .await
        .expect("register");
    let endpoint = c.endpoint();
    let o = berth(
        &endpoint,
        &[
            "service",
            "create",
            "burst",
            "--taskdef",
            "burst",
            "--desired",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Bad policies first: refused by name, nothing set.
    let mut svc = ServicesClient::new(api.clone());
    let policy = |target: u32, min: u32, max: u32| ScalingPolicy {
        metric: "CPU".into(),
        target_percent: target,
        min_count: min,
        max_count: max,
        ..Default::default()
    };
    for (p, field) in [
        (policy(0, 1, 4), "targetPercent"),
        (policy(50, 5, 4), "minCount"),
        (policy(50, 1, 1001), "maxCount"),
        (
            ScalingPolicy {
                metric: "DISK".into(),
                ..policy(50, 1, 4)
            },
            "metric",
        ),
    ] {
        let e = svc
            .put_scaling_policy(PutScalingPolicyRequest {
                service_name: "burst".into(),
                policy: Some(p),
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    let e = svc
        .put_scaling_policy(PutScalingPolicyRequest {
            service_name: "nope".into(),
            policy: Some(policy(50, 1, 4)),
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(describe(api.clone(), "burst")
        .await
        .scaling_policy
        .is_none());

    let started = Instant::now();
    let o = berth(
        &endpoint,
        &[
            "service",
            "autoscale",
            "burst",
            "--cpu-target",
            "50",
            "--min",
            "1",
            "--max",
            "4",
            "--scale-out-cooldown",
            "3s",
            "--scale-in-cooldown",
            "3s",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = wait_desired(api.clone(), "burst", |d| d >= 2, Duration::from_secs(60)).await;
    eprintln!("scaled out after {:?}", started.elapsed());
    let top = wait_desired(api.clone(), "burst", |d| d == 4, Duration::from_secs(60)).await;
    eprintln!("at the maximum (4) after {:?}", started.elapsed());
    // Every decision is an event with the figures behind it, scale-outs a cooldown apart.
    let outs: Vec<&ServiceEvent> = top
        .events
        .iter()
        .filter(|e| e.message.contains("autoscaling scaled out"))
        .collect();
    assert!(!outs.is_empty(), "{:#?}", top.events);
    assert!(
        outs.iter()
            .all(|e| e.message.contains("average CPU") && e.message.contains("target 50 %")),
        "{outs:#?}"
    );
    for pair in outs.windows(2) {
        // Newest first.
        assert!(pair[0].at_ms >= pair[1].at_ms + 3_000, "{outs:#?}");
    }
    assert!(out.desired_count <= 4);

    // The burning stops 12 s after each task started: back in to the minimum.
    let back = wait_desired(api.clone(), "burst", |d| d == 1, Duration::from_secs(90)).await;
    eprintln!("back to 1 after {:?}", started.elapsed());
    // As each task goes idle the average falls: in, one cooldown apart, down to the minimum.
    let ins: Vec<&ServiceEvent> = back
        .events
        .iter()
        .filter(|e| e.message.contains("autoscaling scaled in"))
        .collect();
    assert!(
        ins.first().is_some_and(|e| e.message.contains("to 1:")),
        "{:#?}",
        back.events
    );
    for pair in ins.windows(2) {
        assert!(pair[0].at_ms >= pair[1].at_ms + 3_000, "{ins:#?}");
    }
    wait_running(api.clone(), "burst", 1, 1, Duration::from_secs(30)).await;

    // `berth top` shows it all on one screen (printed once: stdout is not a terminal).
    let o = berth(&endpoint, &["top"]);
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("{screen}");
    assert!(screen.contains("leader node "), "{screen}");
    assert!(screen.contains("RUNNING 1"), "{screen}");
    assert!(
        screen.contains("[#"),
        "the agent's reserved CPU bar: {screen}"
    );
    assert!(
        screen.contains("burst") && screen.contains("CPU 50% 1..4"),
        "{screen}"
    );

    // Described, and removable.
    let o = berth(&endpoint, &["service", "describe", "burst"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("autoscaling: average CPU toward 50%, 1..4 tasks"),
        "{text}"
    );
    let o = berth(&endpoint, &["service", "autoscale", "burst", "--off"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(describe(api.clone(), "burst")
        .await
        .scaling_policy
        .is_none());
}
