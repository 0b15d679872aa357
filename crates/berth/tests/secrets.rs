//! Secrets against a three-node cluster of real processes on TLS with a real agent: a
//! task's container gets its secret in its environment, and the value is nowhere else —
//! not in any answer, not in the nodes' Raft logs, snapshots or sled files, not in any
//! process's log. A task naming a secret its namespace lacks is refused, saying which.

mod common;

use std::time::Duration;

use berth_proto::v1::secrets_client::SecretsClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::agent::*;
use common::*;
use tonic::Code;

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

fn with_secret(family: &str, command: &str, from: &str) -> TaskDefinitionSpec {
    let mut spec = quiet_spec(family, &["sh", "-c", command]);
    spec.container_definitions[0].secrets = vec![SecretRef {
        name: "DB_PASSWORD".into(),
        value_from: from.into(),
    }];
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_gets_its_secret_and_the_value_is_nowhere_else() {
    require_docker();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    let agent = AgentProc::start(&c, "secrets");
    wait_agent(api.clone(), &agent.id, "READY", Duration::from_secs(20)).await;

    // Put through the CLI, from a file, as a user would.
    let value = format!("s3cr3t-{}-{}", std::process::id(), free_port());
    let file = c.dir.path().join("value.txt");
    std::fs::write(&file, &value).expect("write value");
    let o = c.berth(&[
        "secret",
        "put",
        "db-pass",
        "--from-file",
        &file.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&file).expect("remove value file");
    let listed = SecretsClient::new(api.clone())
        .list(ListSecretsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.secrets.len(), 1);
    assert_eq!(
        (listed.secrets[0].name.as_str(), listed.secrets[0].version),
        ("db-pass", 1)
    );

    let def = register(
        api.clone(),
        with_secret("sec", "echo DB=$DB_PASSWORD; sleep 3600", "db-pass"),
    )
    .await
    .expect("register");
    assert_eq!(
        def.container_definitions[0].secrets[0].value_from,
        "db-pass"
    );
    let id = run(api.clone(), "sec", 1, "sec-1")
        .await
        .expect("run")
        .tasks
        .remove(0)
        .task_id;
    wait_for(api.clone(), &id, "RUNNING", Duration::from_secs(60), |t| {
        t.last_status == "RUNNING"
    })
    .await;

    // The container has it: its output says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = logs(api.clone(), &id).await.expect("logs");
        if out.contains("DB=") || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(out.trim(), format!("DB={value}"));

    // Nothing Berth answers holds it.
    let described = TaskDefinitionsClient::new(api.clone())
        .describe(DescribeTaskDefinitionRequest {
            task_definition: "sec:1".into(),
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner();
    assert!(!format!("{described:?}").contains(&value));
    let t = task(api.clone(), &id).await;
    assert!(!format!("{t:?}").contains(&value));

    // A name its namespace lacks: refused before anything is placed, saying which.
    register(api.clone(), with_secret("nosec", "true", "missing"))
        .await
        .expect("register");
    let e = run(api.clone(), "nosec", 1, "nosec-1")
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("berth secret put missing"), "{e:?}");

    TasksClient::new(api.clone())
        .stop(StopTaskRequest {
            task_id: id.clone(),
            reason: String::new(),
        })
        .await
        .expect("stop");
    // Every node's files (Raft log, snapshots, sled) and every process's log: no value.
    for id in 1..=3 {
        assert!(
            !c.log(id).contains(&value),
            "node {id}'s log holds the value"
        );
    }
    assert!(
        !agent.log().contains(&value),
        "the agent's log holds the value"
    );
    let hits = files_holding(c.dir.path(), value.as_bytes());
    assert!(hits.is_empty(), "the value is in {hits:?}");
    // And it was there to find: the files hold the secret's name.
    assert!(!files_holding(c.dir.path(), b"db-pass").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_whose_task_names_a_missing_secret_says_so_in_its_events() {
    // Its launches were refused before placement, which the scheduler only logged at debug
    // level and retried on every pass: the service sat at 0 tasks without a word.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(leader);
    register(api.clone(), with_secret("nosec", "true", "missing"))
        .await
        .expect("register");
    berth_proto::v1::services_client::ServicesClient::new(api.clone())
        .create(CreateServiceRequest {
            service_name: "nosec".into(),
            task_definition: "nosec".into(),
            desired_count: 1,
            ..Default::default()
        })
        .await
        .expect("create service");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let svc = common::service::describe(api.clone(), "nosec").await;
        if svc.events.iter().any(|e| {
            e.message.contains("unable to place a task")
                && e.message.contains("berth secret put missing")
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", svc.events);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
