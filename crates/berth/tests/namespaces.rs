//! Namespaces against a three-node cluster of real processes on TLS: a token of team-a
//! never sees or touches team-b's objects (not even whether they exist), names never reach
//! across, and a namespace's quota holds across concurrent RunTasks through different
//! nodes, each refusal naming the quota.

mod common;

use std::time::Duration;

use berth_proto::v1::namespaces_client::NamespacesClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::*;
use tonic::Code;

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let o = c.berth(args);
    assert!(o.status.success(), "berth {args:?}: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

async fn families(api: Api) -> Result<Vec<(String, String)>, tonic::Status> {
    TaskDefinitionsClient::new(api)
        .list(ListTaskDefinitionsRequest::default())
        .await
        .map(|r| {
            r.into_inner()
                .task_definitions
                .into_iter()
                .map(|d| (d.namespace, d.family))
                .collect()
        })
}

async fn describe(api: Api, id: &str) -> DescribeTasksResponse {
    TasksClient::new(api)
        .describe(DescribeTasksRequest {
            task_ids: vec![id.into()],
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner()
}

async fn stop(api: Api, id: &str) -> tonic::Status {
    TasksClient::new(api)
        .stop(StopTaskRequest {
            task_id: id.into(),
            reason: String::new(),
        })
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_token_never_sees_another_namespace_and_its_quota_holds_across_nodes() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    c.register_agent(leader, "a1", 16384, 32768, &[]).await;

    // An admin makes two namespaces and a token for each, by the CLI.
    ok(&c, &["namespace", "create", "team-a", "--tasks", "3"]);
    ok(&c, &["namespace", "create", "team-b"]);
    let a = ok(
        &c,
        &[
            "token",
            "create",
            "a-ops",
            "--role",
            "operator",
            "--namespace",
            "team-a",
        ],
    );
    let b = ok(
        &c,
        &[
            "token",
            "create",
            "b-ops",
            "--role",
            "operator",
            "--namespace",
            "team-b",
        ],
    );
    let listed = ok(&c, &["namespace", "ls"]);
    for n in ["default", "team-a", "team-b"] {
        assert!(listed.contains(n), "{listed}");
    }

    // The same family name in both: two objects, each seen only in its own namespace.
    for (token, ns) in [(&a, "team-a"), (&b, "team-b")] {
        let d = register(c.api_in(2, token, ns), web_spec("web"))
            .await
            .expect("register");
        assert_eq!(
            (d.namespace.as_str(), d.family.as_str(), d.revision),
            (ns, "web", 1)
        );
    }
    assert_eq!(
        families(c.api_in(3, &a, "team-a")).await.expect("list"),
        vec![("team-a".to_string(), "web".to_string())]
    );
    assert!(families(c.api(1))
        .await
        .expect("admin's default")
        .is_empty());

    // team-a's token in another namespace, or the default one: refused, and why.
    for ns in ["team-b", "default"] {
        let e = families(c.api_in(1, &a, ns)).await.expect_err("refused");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("may use namespace(s) team-a"), "{e:?}");
    }
    // A name cannot spell its way into another namespace.
    let e = register(c.api_in(1, &a, "team-a"), web_spec("team-b/web"))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // team-b's task is, to team-a, exactly a task that does not exist.
    let theirs = run(c.api_in(1, &b, "team-b"), "web", 1, "b-1")
        .await
        .expect("run in team-b")
        .tasks
        .remove(0);
    assert_eq!(theirs.namespace, "team-b");
    let never = "0".repeat(32);
    for id in [theirs.task_id.as_str(), never.as_str()] {
        let d = describe(c.api_in(2, &a, "team-a"), id).await;
        assert!(d.tasks.is_empty());
        assert_eq!(d.failures[0].reason, "MISSING");
        let e = stop(c.api_in(3, &a, "team-a"), id).await;
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(e.message(), format!("task {id} does not exist"));
    }
    assert_eq!(
        describe(c.api_in(2, &b, "team-b"), &theirs.task_id)
            .await
            .tasks
            .len(),
        1
    );

    // The quota of 3 tasks, asked for 2 + 2 at once through two nodes: 3 placed, 1 refused.
    let (x, y) = tokio::join!(
        run(c.api_in(2, &a, "team-a"), "web", 2, "a-1"),
        run(c.api_in(3, &a, "team-a"), "web", 2, "a-2"),
    );
    let (x, y) = (x.expect("run"), y.expect("run"));
    assert_eq!(x.tasks.len() + y.tasks.len(), 3, "{x:?} {y:?}");
    let refusal = x
        .failures
        .iter()
        .chain(&y.failures)
        .next()
        .expect("one refused");
    assert_eq!(refusal.reason, "QUOTA:TASKS");
    assert!(
        refusal.detail.contains("quota of 3 running task(s)"),
        "{refusal:?}"
    );
    let ns = NamespacesClient::new(c.api_in(1, &a, "team-a"))
        .list(ListNamespacesRequest::default())
        .await
        .expect("list namespaces")
        .into_inner()
        .namespaces;
    // The token sees its own namespace only, with what it holds.
    assert_eq!(ns.len(), 1, "{ns:?}");
    assert_eq!(
        (ns[0].name.as_str(), ns[0].used_tasks, ns[0].used_cpu),
        ("team-a", 3, 768)
    );
    // Every node holds the same figure.
    for id in 1..=3 {
        let tasks = TasksClient::new(c.api_in(id, &a, "team-a"))
            .list(ListTasksRequest::default())
            .await
            .expect("list")
            .into_inner()
            .tasks;
        assert_eq!(tasks.len(), 3, "node {id}");
        assert!(tasks
            .iter()
            .all(|t| t.namespace == "team-a" && t.family == "web"));
        assert!(tasks.iter().all(|t| t.group == "family:web"), "{tasks:?}");
    }

    // A service in team-b, held to the quota set on it: two tasks of three, and an event
    // saying why; team-a cannot see it.
    ok(&c, &["namespace", "set-quota", "team-b", "--tasks", "2"]);
    ServicesClient::new(c.api_in(1, &b, "team-b"))
        .create(CreateServiceRequest {
            service_name: "api".into(),
            task_definition: "web".into(),
            desired_count: 3,
            ..Default::default()
        })
        .await
        .expect("create service");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let svc = loop {
        let svc = common::service::describe(c.api_in(2, &b, "team-b"), "api").await;
        let said = svc.events.iter().any(|e| e.message.contains("QUOTA:TASKS"));
        if said || std::time::Instant::now() > deadline {
            break svc;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (svc.namespace.as_str(), svc.service_name.as_str()),
        ("team-b", "api")
    );
    assert_eq!(svc.running_count + svc.pending_count, 1, "{svc:?}");
    assert!(
        svc.events
            .iter()
            .any(|e| e.message.contains("quota of 2 running task(s)")),
        "{:?}",
        svc.events
    );
    let hidden = ServicesClient::new(c.api_in(2, &a, "team-a"))
        .describe(DescribeServicesRequest {
            services: vec!["api".into()],
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner();
    assert!(hidden.services.is_empty());
    assert_eq!(hidden.failures[0].reason, "MISSING");

    // A client token is one namespace's: team-a's `a-1` is new to default (it used to be
    // refused there as "used with different parameters", telling the caller it was used).
    register(c.api(1), web_spec("web")).await.expect("register");
    let reused = run(c.api(1), "web", 1, "a-1")
        .await
        .expect("another namespace's token is new here")
        .tasks
        .remove(0);
    assert_eq!(
        (reused.client_token.as_str(), reused.namespace.as_str()),
        ("a-1", "default")
    );

    // Only an admin manages namespaces; an empty one can go, a full one cannot.
    let e = NamespacesClient::new(c.api_in(1, &a, "team-a"))
        .create(CreateNamespaceRequest {
            name: "team-c".into(),
            quota: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let o = c.berth(&["namespace", "delete", "team-a"]);
    assert!(!o.status.success());
    assert!(out(&o).contains("holds 1 task definition"), "{}", out(&o));
    ok(&c, &["namespace", "create", "team-c"]);
    ok(&c, &["namespace", "delete", "team-c"]);
    assert!(!ok(&c, &["namespace", "ls"]).contains("team-c"));
}
