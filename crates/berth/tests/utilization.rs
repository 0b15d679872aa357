//! Measured utilization end to end: a real agent samples real containers through the
//! engine's stats, summarizes them per window, and the control plane shows a CPU-burning
//! task near its CPU limit and a sleeping one near zero, in `task describe`, in the API and
//! beside allocation in `agent ls`.

mod common;

use std::time::Duration;

use berth_proto::v1::Task;
use common::agent::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_task_is_measured_near_its_cpu_limit_and_an_idle_one_near_zero() {
    let (c, a) = cluster_with_fast_meter("meter").await;
    let api = c.api(1);
    // 256 CPU units: the engine holds the container to a quarter of a CPU.
    register(
        api.clone(),
        quiet_spec("burn", &["sh", "-c", "while :; do :; done"]),
    )
    .await
    .expect("register burn");
    // 48 MiB in tmpfs: memory the kernel cannot reclaim, charged to the container.
    register(
        api.clone(),
        quiet_spec(
            "idle",
            &[
                "sh",
                "-c",
                "head -c 50331648 /dev/zero > /dev/shm/fill && sleep 3600",
            ],
        ),
    )
    .await
    .expect("register idle");
    let burn = run(api.clone(), "burn", 1, "")
        .await
        .expect("run burn")
        .tasks[0]
        .task_id
        .clone();
    let idle = run(api.clone(), "idle", 1, "")
        .await
        .expect("run idle")
        .tasks[0]
        .task_id
        .clone();

    // Two windows: the second is a full window of steady burning.
    let measured = |t: &Task| {
        t.utilization
            .as_ref()
            .is_some_and(|u| u.measured_ms >= 3_000)
    };
    let b = wait_for(
        api.clone(),
        &burn,
        "measured",
        Duration::from_secs(60),
        measured,
    )
    .await;
    let i = wait_for(
        api.clone(),
        &idle,
        "measured",
        Duration::from_secs(60),
        measured,
    )
    .await;
    let (bu, iu) = (b.utilization.unwrap(), i.utilization.unwrap());
    eprintln!("burn: {bu:?}\nidle: {iu:?}");
    assert!(
        (60.0..=130.0).contains(&bu.last_cpu_percent),
        "a busy loop held to 256 CPU units measured {}% of them",
        bu.last_cpu_percent
    );
    assert!(bu.cpu_peak_percent >= bu.last_cpu_percent);
    assert!(
        iu.last_cpu_percent < 10.0,
        "sleep measured {}%",
        iu.last_cpu_percent
    );
    assert!(
        (48..=100).contains(&iu.last_memory_mib),
        "48 MiB held in tmpfs measured {} MiB",
        iu.last_memory_mib
    );
    assert!(bu.memory_peak_mib >= 1 && bu.memory_peak_mib < 48);

    // The agent's measured use is its tasks' latest windows: about a quarter CPU.
    let agent = wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(5)).await;
    assert!(
        (150..=400).contains(&agent.measured_cpu),
        "agent measured {} CPU units",
        agent.measured_cpu
    );
    assert_eq!(agent.used_cpu, 512, "allocation is what the tasks reserve");

    // The CLI shows both.
    let endpoint = c.endpoint();
    let o = berth(&endpoint, &["task", "describe", &burn]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("CPU AVG") && out.contains("/512 MiB"), "{out}");
    // In words: every state with its time, and what it is billed so far.
    assert!(out.contains("  RUNNING ") && out.contains("+"), "{out}");
    assert!(out.contains("billed so far: 0.0041"), "{out}");
    let o = berth(&endpoint, &["agent", "ls"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("CPU USED"), "{out}");
}
