//! The agent's runtime against the real Docker engine: assignments go straight into a
//! reconciler, reports come out of its channel. No control plane involved.

mod common;

use std::time::{Duration, Instant};

use berth_agent::logs::LogsService;
use berth_agent::task::OOM_REASON;
use berth_core::*;
use berth_proto::internal::agent_service_server::AgentService;
use berth_proto::internal::LogsRequest;
use common::*;
use tokio_stream::StreamExt;

const START: Duration = Duration::from_secs(30);

async fn logs_of(h: &Harness, task: &str, container: &str) -> String {
    let svc = LogsService {
        runtime: h.runtime.clone(),
    };
    let resp = svc
        .logs(tonic::Request::new(LogsRequest {
            task_id: task.into(),
            container: container.into(),
            follow: false,
            tail: 0,
        }))
        .await
        .expect("logs");
    let mut stream = resp.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.expect("log chunk").data);
    }
    String::from_utf8_lossy(&out).to_string()
}

async fn wait_logs(h: &Harness, task: &str, container: &str, needle: &str) {
    let deadline = Instant::now() + START;
    while !logs_of(h, task, container).await.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{container} never printed {needle}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_in_order(states: &[TaskState], expected: &[TaskState]) {
    let mut it = states.iter();
    for e in expected {
        assert!(
            it.any(|s| s == e),
            "expected {expected:?} in this order within {states:?}"
        );
    }
    assert!(
        states.windows(2).all(|w| w[0] <= w[1]),
        "states went backwards: {states:?}"
    );
}

#[tokio::test]
async fn runs_with_hard_limits_visible_in_inspect_then_stops() {
    let h = Harness::new("limits").await;
    let id = task_id("limits");
    let mut c = container("app", "exec sleep 600");
    c.stop_timeout = Some(1);
    let t = h.task(&id, 512, 1024, vec![c]);
    h.run(&t).await;
    let running = h.reports.wait_state(&id, TaskState::Running, START).await;
    assert_eq!(running.containers[0].last_status, TaskState::Running);
    assert_in_order(
        &h.reports.states(&id),
        &[
            TaskState::Pending,
            TaskState::Activating,
            TaskState::Running,
        ],
    );
    let ats: Vec<u64> = h.reports.of(&id).iter().map(|r| r.at).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "timestamps: {ats:?}");

    let v = h.inspect(&id, "app");
    let hc = &v["HostConfig"];
    assert_eq!(hc["NanoCpus"], 500_000_000, "0.5 vCPU");
    assert_eq!(hc["CpuQuota"], 0, "never a CPU quota with NanoCpus");
    assert_eq!(hc["Memory"], 1024i64 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], hc["Memory"], "no swap beyond the limit");
    assert_eq!(hc["PidsLimit"], 4096);
    assert_eq!(hc["Privileged"], false);
    assert!(hc["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o.as_str().unwrap().starts_with("no-new-privileges")));
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    let cap_add: Vec<&str> = hc["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        !cap_add.iter().any(|c| c.contains("NET_RAW")),
        "{cap_add:?}"
    );
    assert_ne!(hc["NetworkMode"], "host");
    assert_eq!(hc["NetworkMode"], "bridge");
    assert_eq!(hc["RestartPolicy"]["Name"], "no");
    let labels = &v["Config"]["Labels"];
    assert_eq!(labels["berth.agent"], h.agent_id.as_str());
    assert_eq!(labels["berth.task"], id.as_str());
    assert_eq!(labels["berth.container"], "app");

    // And the kernel enforces them.
    let name = berth_agent::spec::docker_name(&id, "app");
    let status = docker_exec(&name, &["cat", "/proc/self/status"]);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let limit = docker_exec(
        &name,
        &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
    );
    if !limit.is_empty() {
        // cgroup v1 (this engine); v2 shows memory.max instead.
        assert_eq!(limit.trim(), (1024u64 * 1024 * 1024).to_string());
    }

    // A user stop: `sleep` as PID 1 ignores SIGTERM, so SIGKILL after stopTimeout (1 s).
    h.stop(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("stopped by the test")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(137));
    assert_in_order(
        &h.reports.states(&id),
        &[
            TaskState::Running,
            TaskState::Deactivating,
            TaskState::Stopping,
            TaskState::Deprovisioning,
            TaskState::Stopped,
        ],
    );
    assert!(
        !h.exists(&id, "app"),
        "containers are removed at DEPROVISIONING"
    );
}

#[tokio::test]
async fn reports_the_exit_code_of_an_essential_container() {
    let h = Harness::new("exit3").await;
    let id = task_id("exit3");
    let t = h.task(&id, 256, 512, vec![container("app", "exit 3")]);
    h.run(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    assert!(
        stopped
            .stopped_reason
            .as_deref()
            .unwrap()
            .starts_with("Essential container in task exited"),
        "{stopped:?}"
    );
    assert_in_order(
        &h.reports.states(&id),
        &[
            TaskState::Pending,
            TaskState::Activating,
            TaskState::Running,
            TaskState::Deprovisioning,
            TaskState::Stopped,
        ],
    );
    assert!(!h.exists(&id, "app"));
}

#[tokio::test]
async fn a_memory_hog_is_reported_as_out_of_memory() {
    let h = Harness::new("oom").await;
    let id = task_id("oom");
    let mut c = container("hog", "exec berth-memhog");
    // A container-level hard limit inside the task's 512 MiB: quick to reach.
    c.memory = Some(48);
    let t = h.task(&id, 256, 512, vec![c]);
    h.run(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert!(
        stopped
            .stopped_reason
            .as_deref()
            .unwrap()
            .starts_with(OOM_REASON),
        "{stopped:?}"
    );
    assert_eq!(stopped.containers[0].reason.as_deref(), Some(OOM_REASON));
    assert_eq!(stopped.containers[0].exit_code, Some(137));
}

#[tokio::test]
async fn stop_sends_sigterm_and_a_trap_exits_cleanly() {
    let h = Harness::new("sigterm").await;
    let id = task_id("sigterm");
    let mut c = container(
        "app",
        "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    );
    c.stop_timeout = Some(30);
    let t = h.task(&id, 256, 512, vec![c]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Running, START).await;
    wait_logs(&h, &id, "app", "ready").await;
    let asked = Instant::now();
    h.stop(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM honoured in {took:?}, far below the 30 s timeout"
    );
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(stopped.containers[0].exit_code, Some(0), "{stopped:?}");
}

#[tokio::test]
async fn sigkill_follows_the_stop_timeout() {
    let h = Harness::new("sigkill").await;
    let id = task_id("sigkill");
    let mut c = container("app", "exec berth-ignore-term");
    c.command = vec!["berth-ignore-term".into()];
    c.stop_timeout = Some(2);
    let t = h.task(&id, 256, 512, vec![c]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Running, START).await;
    wait_logs(&h, &id, "app", "ready").await;
    h.stop(&t).await;
    let stopping = h.reports.wait_state(&id, TaskState::Stopping, START).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    let took = Duration::from_millis(stopped.at - stopping.at);
    assert!(
        took >= Duration::from_secs(2),
        "killed only after the 2 s timeout, took {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "killed soon after the timeout, took {took:?}"
    );
    assert_eq!(stopped.containers[0].exit_code, Some(137));
    assert_ne!(stopped.containers[0].reason.as_deref(), Some(OOM_REASON));
}

#[tokio::test]
async fn a_missing_image_fails_to_start() {
    let h = Harness::new("noimage").await;
    let id = task_id("noimage");
    let mut c = container("app", "true");
    c.image = "berth/no-such-image:never".into();
    let t = h.task(&id, 256, 512, vec![c]);
    let asked = Instant::now();
    h.run(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert!(asked.elapsed() < Duration::from_secs(20), "fails fast");
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.unwrap();
    assert!(reason.starts_with("CannotPullContainerError:"), "{reason}");
    assert!(reason.contains("berth/no-such-image"), "{reason}");
    assert!(!h.reports.states(&id).contains(&TaskState::Running));
    assert!(!h.exists(&id, "app"));
}

/// A task of two containers: `server` (essential, 1 s stop timeout) serves `body` on
/// 127.0.0.1:8080; `client` (not essential) runs `client_first`, then fetches the page and
/// exits 0 once it has (1 after ten seconds of tries).
fn server_and_client(h: &Harness, id: &str, body: &str, client_first: &str) -> AssignedTask {
    let server = container(
        "server",
        &format!(
            "mkdir -p /tmp/w && echo {body} > /tmp/w/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/w"
        ),
    );
    let mut client = container(
        "client",
        &format!(
            "{client_first}for i in $(seq 100); do if wget -q -O - http://127.0.0.1:8080/; then exit 0; fi; sleep 0.1; done; exit 1"
        ),
    );
    client.essential = Some(false);
    let mut t = h.task(id, 512, 1024, vec![server, client]);
    t.definition.container_definitions[0].stop_timeout = Some(1);
    t
}

#[tokio::test]
async fn containers_of_a_task_share_localhost_and_a_non_essential_exit_keeps_it_running() {
    let h = Harness::new("localhost").await;
    let id = task_id("localhost");
    let t = server_and_client(&h, &id, "hello-from-server", "");
    h.run(&t).await;
    // The client reached the server on 127.0.0.1 and exited 0; the task runs on.
    let r = h
        .reports
        .wait(&id, START, |r| {
            r.last_status == TaskState::Running
                && r.containers
                    .iter()
                    .any(|c| c.name == "client" && c.exit_code.is_some())
        })
        .await;
    let client_state = r.containers.iter().find(|c| c.name == "client").unwrap();
    assert_eq!(client_state.exit_code, Some(0), "{r:?}");
    assert_eq!(client_state.last_status, TaskState::Stopped);
    assert_eq!(
        r.containers
            .iter()
            .find(|c| c.name == "server")
            .unwrap()
            .last_status,
        TaskState::Running
    );
    assert!(logs_of(&h, &id, "client")
        .await
        .contains("hello-from-server"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !h.reports.states(&id).contains(&TaskState::Deactivating),
        "a non-essential exit does not stop the task"
    );

    // One namespace, owned by the server, never the host's.
    let server_ns = h.inspect(&id, "server")["HostConfig"]["NetworkMode"].clone();
    assert_eq!(server_ns, "bridge");
    let client_ns = h.inspect(&id, "client")["HostConfig"]["NetworkMode"].clone();
    // The engine resolves the owner's name to its id.
    let server_id = h.inspect(&id, "server")["Id"].as_str().unwrap().to_string();
    assert_eq!(client_ns, format!("container:{server_id}"));
    // The split: each container half the task.
    assert_eq!(
        h.inspect(&id, "client")["HostConfig"]["NanoCpus"],
        250_000_000
    );
    assert_eq!(
        h.inspect(&id, "server")["HostConfig"]["Memory"],
        512i64 * 1024 * 1024
    );

    h.stop(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
}

#[tokio::test]
async fn network_mode_none_leaves_loopback_only_shared_by_the_task() {
    let h = Harness::new("nonet").await;
    let id = task_id("nonet");
    let mut t = server_and_client(
        &h,
        &id,
        "hello-over-lo",
        "echo interfaces: $(ls /sys/class/net); ",
    );
    t.definition.network_mode = NetworkMode::None;
    h.run(&t).await;
    let r = h
        .reports
        .wait(&id, START, |r| {
            r.containers
                .iter()
                .any(|c| c.name == "client" && c.exit_code.is_some())
        })
        .await;
    let client_state = r.containers.iter().find(|c| c.name == "client").unwrap();
    assert_eq!(client_state.exit_code, Some(0), "{r:?}");
    let logs = logs_of(&h, &id, "client").await;
    assert!(logs.contains("hello-over-lo"), "{logs}");
    // Loopback is the only interface: no bridge address, nothing published.
    let interfaces = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("interfaces: "));
    assert_eq!(interfaces, Some("lo"), "{logs}");
    let server = h.inspect(&id, "server");
    assert_eq!(server["HostConfig"]["NetworkMode"], "none");
    assert!(server["NetworkSettings"]["Ports"]
        .as_object()
        .is_none_or(|p| p.is_empty()));

    h.stop(&t).await;
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
}

#[tokio::test]
async fn adopts_running_containers_after_a_restart_without_restarting_them() {
    let mut h = Harness::new("adopt").await;
    let keep = task_id("adopt-keep");
    let exits = task_id("adopt-exits");
    let dropped = task_id("adopt-dropped");
    let mut c = container("app", "exec sleep 600");
    c.stop_timeout = Some(1);
    let t_keep = h.task(&keep, 256, 512, vec![c.clone()]);
    let t_exits = h.task(&exits, 256, 512, vec![container("app", "sleep 2; exit 5")]);
    let t_dropped = h.task(&dropped, 256, 512, vec![c]);
    for t in [&t_keep, &t_exits, &t_dropped] {
        h.run(t).await;
    }
    for id in [&keep, &exits, &dropped] {
        h.reports.wait_state(id, TaskState::Running, START).await;
    }
    let before = h.inspect(&keep, "app");

    // The agent goes away; its containers do not.
    h.restart().await;
    let reports = h.reports.clone();
    // Meanwhile one task's container exits.
    let deadline = Instant::now() + START;
    while h.inspect(&exits, "app")["State"]["Running"] == true {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The control plane's full set after the restart: two tasks, both RUNNING for it.
    let mut a = t_keep.clone();
    a.task.last_status = TaskState::Running;
    let mut b = t_exits.clone();
    b.task.last_status = TaskState::Running;
    h.reconciler.assign(true, vec![a, b]).await.unwrap();

    let adopted = reports.wait_state(&keep, TaskState::Running, START).await;
    assert_eq!(adopted.containers[0].last_status, TaskState::Running);
    let after = h.inspect(&keep, "app");
    assert_eq!(after["Id"], before["Id"], "same container");
    assert_eq!(
        after["State"]["StartedAt"], before["State"]["StartedAt"],
        "not restarted"
    );
    assert_eq!(after["RestartCount"], 0);

    let ended = reports.wait_state(&exits, TaskState::Stopped, START).await;
    assert_eq!(ended.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(ended.containers[0].exit_code, Some(5));

    // Labelled for this agent, no longer assigned: removed, and never reported.
    let deadline = Instant::now() + START;
    while h.exists(&dropped, "app") {
        assert!(
            Instant::now() < deadline,
            "unassigned container still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reports.of(&dropped).is_empty());

    // Only the adopted task is still supervised.
    let deadline = Instant::now() + START;
    loop {
        let snap = h.reconciler.snapshot().await.unwrap();
        if snap.supervised == vec![keep.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "{snap:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    h.stop(&t_keep).await;
    reports.wait_state(&keep, TaskState::Stopped, START).await;
}

#[tokio::test]
async fn a_task_ended_before_a_restart_is_not_run_again() {
    let mut h = Harness::new("ended").await;
    let id = task_id("ended");
    let t = h.task(&id, 256, 512, vec![container("app", "exit 4")]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Stopped, START).await;
    // The control plane never heard (reports lost with the old process): it still lists
    // the task as RUNNING after the restart.
    h.restart().await;
    let resent = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    assert_eq!(
        resent.containers[0].exit_code,
        Some(4),
        "the record kept the exit code"
    );
    let mut again = t.clone();
    again.task.last_status = TaskState::Running;
    h.reconciler.assign(true, vec![again]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.exists(&id, "app"), "not started twice");
    assert!(!h.reports.states(&id).contains(&TaskState::Pending));
    // Once the control plane has it STOPPED, the record goes.
    let mut done = t.clone();
    done.task.last_status = TaskState::Stopped;
    h.reconciler.assign(false, vec![done]).await.unwrap();
    let snap = h.reconciler.snapshot().await.unwrap();
    assert!(snap.ended.is_empty(), "{snap:?}");
}

#[tokio::test]
async fn fencing_stops_tasks_within_the_grace() {
    let h = Harness::new("fence").await;
    let id = task_id("fence");
    let mut c = container("app", "exec berth-ignore-term");
    c.command = vec!["berth-ignore-term".into()];
    c.stop_timeout = Some(60);
    let t = h.task(&id, 256, 512, vec![c]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Running, START).await;
    let asked = Instant::now();
    h.reconciler
        .fence("fenced by the test".into(), Duration::from_millis(500))
        .await
        .unwrap();
    let stopped = h.reports.wait_state(&id, TaskState::Stopped, START).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "fencing ignores the 60 s stopTimeout: {took:?}"
    );
    assert_eq!(stopped.stop_code, Some(StopCode::InfrastructureHealth));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("fenced by the test")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(137));
}

/// Figures for the README, not a pass/fail bar: `cargo test -p berth-agent --test runtime
/// -- --ignored --nocapture measure`. Assignment → RUNNING report, one task at a time,
/// beside a bare `docker run -d` of the same image and command.
#[tokio::test]
#[ignore]
async fn measure_start_latency() {
    let h = Harness::new("measure").await;
    let n = 30;
    let mut agent = Vec::new();
    let mut bare = Vec::new();
    for i in 0..n {
        let id = task_id(&format!("m{i}"));
        let mut c = container("app", "");
        c.command = vec!["sleep".into(), "600".into()];
        c.stop_timeout = Some(1);
        let t = h.task(&id, 256, 512, vec![c]);
        let t0 = Instant::now();
        h.run(&t).await;
        h.reports.wait_state(&id, TaskState::Running, START).await;
        agent.push(t0.elapsed());

        let name = format!("berth-bare-{}-{i}", std::process::id());
        let t0 = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--name", &name, "--label"])
            .arg(format!("berth.agent={}", h.agent_id))
            .args([IMAGE, "sleep", "600"])
            .output()
            .unwrap();
        assert!(out.status.success());
        bare.push(t0.elapsed());
        h.stop(&t).await;
        h.reports.wait_state(&id, TaskState::Stopped, START).await;
        remove_agent_containers(&h.agent_id);
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!(
        "assignment → RUNNING over {n} tasks: p50 {:?} p99 {:?}; bare docker run -d: p50 {:?} p99 {:?}",
        pct(&mut agent, 0.5),
        pct(&mut agent, 0.99),
        pct(&mut bare, 0.5),
        pct(&mut bare, 0.99)
    );
}

#[tokio::test]
async fn a_task_larger_than_the_host_is_limited_to_the_hosts_cpus() {
    let h = Harness::new("bigcpu").await;
    let id = task_id("bigcpu");
    let mut c = container("app", "exec sleep 600");
    c.stop_timeout = Some(1);
    // 16 vCPU: more than this machine has; the engine would refuse such a limit.
    let t = h.task(&id, 16384, 32768, vec![c]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Running, START).await;
    let ncpu: i64 = String::from_utf8(
        std::process::Command::new("docker")
            .args(["info", "-f", "{{.NCPU}}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let nano = h.inspect(&id, "app")["HostConfig"]["NanoCpus"]
        .as_i64()
        .unwrap();
    assert_eq!(nano, (ncpu * 1_000_000_000).min(16_000_000_000));
    h.stop(&t).await;
    h.reports.wait_state(&id, TaskState::Stopped, START).await;
}

/// ECS's `user` and `readonlyRootFilesystem`: the container runs as the user asked for and
/// cannot write its root filesystem (a plain one can, as the image's root).
#[tokio::test]
async fn a_read_only_root_and_a_user_are_what_the_container_gets() {
    let h = Harness::new("rouser").await;
    let id = task_id("rouser");
    let probe = "echo uid=$(id -u) gid=$(id -g); \
                 if touch /written 2>/dev/null; then echo root=writable; else echo root=read-only; fi; \
                 sleep 3600";
    let mut locked = container("locked", probe);
    locked.user = Some("65534:65534".into());
    locked.readonly_root_filesystem = Some(true);
    let mut plain = container("plain", probe);
    // A shell as PID 1 ignores SIGTERM: no need to wait the default 30 s for the kill.
    for c in [&mut locked, &mut plain] {
        c.stop_timeout = Some(1);
    }
    let t = h.task(&id, 256, 512, vec![locked, plain]);
    h.run(&t).await;
    h.reports.wait_state(&id, TaskState::Running, START).await;
    wait_logs(&h, &id, "locked", "root=").await;
    wait_logs(&h, &id, "plain", "root=").await;
    let locked = logs_of(&h, &id, "locked").await;
    assert!(locked.contains("uid=65534 gid=65534"), "{locked}");
    assert!(locked.contains("root=read-only"), "{locked}");
    let plain = logs_of(&h, &id, "plain").await;
    assert!(plain.contains("uid=0 gid=0"), "{plain}");
    assert!(plain.contains("root=writable"), "{plain}");
    let inspect = h.inspect(&id, "locked");
    assert_eq!(inspect["Config"]["User"], "65534:65534");
    assert_eq!(inspect["HostConfig"]["ReadonlyRootfs"], true);

    h.stop(&t).await;
    h.reports.wait_state(&id, TaskState::Stopped, START).await;
}
