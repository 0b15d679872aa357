//! `--wait` end to end: the CLI follows a task to its end and exits with its code, and
//! follows a deployment to COMPLETED.

mod common;

use std::time::Duration;

use common::agent::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_exits_with_the_task_exit_code_and_follows_a_deployment() {
    require_docker();
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(1);
    let a = AgentProc::start(&c, "wait");
    wait_agent(api.clone(), &a.id, "READY", Duration::from_secs(20)).await;
    register(api.clone(), quiet_spec("ok", &["true"]))
        .await
        .expect("register");
    register(api.clone(), quiet_spec("three", &["sh", "-c", "exit 3"]))
        .await
        .expect("register");
    let endpoint = c.endpoint();

    let o = berth(&endpoint, &["task", "run", "ok", "--wait"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("RUNNING") || err.contains("STOPPED"), "{err}");
    let o = berth(&endpoint, &["task", "run", "three", "--wait"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("exit code 3"), "{err}");

    // A deployment followed to COMPLETED.
    register(api.clone(), quiet_spec("web", &["sleep", "3600"]))
        .await
        .expect("register web:1");
    register(api.clone(), quiet_spec("web", &["sleep", "3601"]))
        .await
        .expect("register web:2");
    let o = berth(
        &endpoint,
        &[
            "service",
            "create",
            "w",
            "--taskdef",
            "web:1",
            "--desired",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = berth(
        &endpoint,
        &["service", "update", "w", "--taskdef", "web:2", "--wait"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("COMPLETED"), "{err}");
}
