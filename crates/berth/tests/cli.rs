//! The `berth` CLI against a real cluster: file parsing, failover across endpoints,
//! output formats and exit codes.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;

/// Runs `berth` with a reader that has already gone away, as `berth … | true` does.
fn berth_into_closed_pipe(endpoint: &str, args: &[&str]) -> Output {
    let mut child = cli_command(endpoint)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    // Closing the only read end: the CLI's first write to stdout meets a broken pipe (it
    // writes only after its call to the cluster has answered).
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for berth")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_registers_runs_lists_and_fails_over() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    // A dead endpoint first: the CLI must move on by itself.
    let dead = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("{dead},{}", c.endpoint());
    let dir = tempfile::tempdir().expect("tempdir");

    let yaml = dir.path().join("web.yaml");
    std::fs::write(
        &yaml,
        "family: web\ncpu: 0.25 vCPU\nmemory: 1 GB\ncontainerDefinitions:\n  - name: app\n    image: berth/workload\n    command: [sleep, '60']\n    environment:\n      - {name: A, value: b}\n",
    )
    .expect("write");
    let o = berth(
        &endpoint,
        &["taskdef", "register", yaml.to_str().unwrap_or_default()],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("web:1") && out.contains("1024"), "{out}");

    let json = dir.path().join("db.json");
    std::fs::write(
        &json,
        r#"{"family":"db","containerDefinitions":[{"name":"pg","image":"berth/workload"}]}"#,
    )
    .expect("write");
    let o = berth(
        &endpoint,
        &[
            "-o",
            "json",
            "taskdef",
            "register",
            json.to_str().unwrap_or_default(),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["taskDefinition"]["revision"], 1);
    assert_eq!(v["taskDefinition"]["memory"], 512);

    // Malformed files: the error names the file and where.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "family: web\ncontainerDefinitions:\n  - name: app\n    image: [unclosed\n",
    )
    .expect("write");
    let o = berth(
        &endpoint,
        &["taskdef", "register", bad.to_str().unwrap_or_default()],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("bad.yaml") && err.contains("line"), "{err}");
    let unknown = dir.path().join("unknown.json");
    std::fs::write(
        &unknown,
        r#"{"family":"x","containerDefinitions":[{"name":"a","image":"i","memoryy":5}]}"#,
    )
    .expect("write");
    let o = berth(
        &endpoint,
        &["taskdef", "register", unknown.to_str().unwrap_or_default()],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("unknown field `memoryy`"), "{err}");

    credentials(&berth_tls::Identity::agent("a1").expect("id"));
    let o = berth(
        &endpoint,
        &[
            "agent",
            "register",
            "--id",
            "a1",
            "--cpu",
            "1024",
            "--memory",
            "4096",
            "--attr",
            "zone=a",
            "--control",
            &c.nodes[&leader].raft.to_string(),
            "--tls-dir",
            &tls_dir().display().to_string(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));

    let o = berth(
        &endpoint,
        &[
            "task",
            "run",
            "web",
            "--count",
            "3",
            "--client-token",
            "cli-1",
        ],
    );
    let (out, err) = text(&o);
    // 1024 CPU units hold four 256-unit tasks, but 4096 MiB hold only three of 1 GiB: all three fit.
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.matches("PROVISIONING").count(), 3, "{out}");
    // The fourth does not fit: exit status 2 and the failure names the dimension.
    let o = berth(&endpoint, &["task", "run", "web", "--count", "2"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("RESOURCE:MEMORY"), "{out}");

    let o = berth(&endpoint, &["-o", "json", "task", "ls"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json list");
    assert_eq!(tasks.len(), 4);
    let id = tasks[0]["taskId"].as_str().unwrap_or_default().to_string();

    // A reader that goes away early (`| true`, `| head`, `grep -q`) ends the CLI quietly:
    // no panic, no backtrace, success.
    for args in [
        &["-o", "json", "task", "ls"][..],
        &["task", "ls"][..],
        &["agent", "ls"][..],
    ] {
        let o = berth_into_closed_pipe(&endpoint, args);
        let (_, err) = text(&o);
        assert!(
            o.status.success() && err.is_empty(),
            "berth {args:?} into a closed pipe: {:?}\n{err}",
            o.status
        );
    }

    // Describe shows each state's time, as the README promises.
    let o = berth(&endpoint, &["-o", "json", "task", "describe", &id]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json describe");
    assert_eq!(
        v["tasks"][0]["transitions"][0]["status"], "PROVISIONING",
        "{out}"
    );
    assert!(
        v["tasks"][0]["transitions"][0]["atMs"].as_u64().is_some(),
        "{out}"
    );

    // Agents come page by page, as the other lists.
    let o = berth(&endpoint, &["-o", "json", "agent", "ls"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let agents: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json agents");
    assert_eq!(agents.len(), 1, "{out}");
    assert_eq!(agents[0]["agentId"], "a1");

    // Settings: shown without options, changed only when asked.
    let settings = |args: &[&str]| {
        let mut all = vec!["-o", "json", "cluster", "settings"];
        all.extend_from_slice(args);
        let o = berth(&endpoint, &all);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json settings");
        v["freeSizing"].as_bool()
    };
    assert_eq!(settings(&[]), Some(false));
    assert_eq!(settings(&["--free-sizing"]), Some(true));
    assert_eq!(settings(&[]), Some(true));
    assert_eq!(settings(&["--free-sizing", "false"]), Some(false));

    let o = berth(&endpoint, &["task", "stop", &id, "--reason", "done here"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("UserInitiated: done here"), "{out}");

    let o = berth(&endpoint, &["task", "run", "web", "--count", "11"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("invalid argument: count 11 is outside 1..=10"),
        "{err}"
    );

    let o = berth(
        &endpoint,
        &["task", "describe", "0123456789abcdef0123456789abcdef"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).0.contains("MISSING"));

    let o = berth(&endpoint, &["cluster", "status"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.matches("yes").count(), 3, "{out}");
    assert!(out.contains("leader *"), "{out}");

    let o = berth(&dead, &["cluster", "status"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("unavailable"), "{:?}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_lists_describes_scales_and_deletes_a_service() {
    let c = Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(30)).await;
    let ep = c.endpoint();
    register(c.api(1), web_spec("web")).await.expect("register");

    let o = berth(
        &ep,
        &[
            "service",
            "create",
            "web",
            "--taskdef",
            "web",
            "--desired",
            "0",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("web") && out.contains("ACTIVE") && out.contains("web:1"),
        "{out}"
    );

    let o = berth(&ep, &["service", "update", "web", "--desired", "-1"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("desiredCount -1"), "{err}");

    // No agent: the launch cannot be placed, and the service says so in its events.
    let o = berth(&ep, &["service", "update", "web", "--desired", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = berth(&ep, &["service", "describe", "web"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        assert!(out.contains("desired 2"), "{out}");
        if out.contains("was unable to place a task") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no placement event: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let o = berth(&ep, &["-o", "json", "service", "ls"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["serviceName"], "web", "{out}");
    assert_eq!(v[0]["desiredCount"], 2, "{out}");

    let o = berth(&ep, &["service", "delete", "web"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("--force") || err.contains("force"), "{err}");
    let o = berth(&ep, &["service", "delete", "web", "--force"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("INACTIVE"), "{out}");
    let o = berth(&ep, &["service", "ls"]);
    assert!(!text(&o).0.contains("web "), "{:?}", text(&o));
    let o = berth(&ep, &["service", "ls", "--all"]);
    assert!(text(&o).0.contains("INACTIVE"), "{:?}", text(&o));
}
