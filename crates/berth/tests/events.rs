//! The Events stream: every applied change in revision order, resumable on any node from the
//! last revision seen, refused past what a node holds.

mod common;

use std::time::Duration;

use berth_proto::v1::events_client::EventsClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::*;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

/// Events after `since` until the stream says it has caught up.
async fn replay(api: Api, since: u64) -> Result<Vec<ClusterEvent>, tonic::Status> {
    let mut stream = EventsClient::new(api)
        .watch(WatchEventsRequest {
            since_revision: since,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream answers")
    {
        let ev = ev?;
        if ev.kind == "caught-up" {
            return Ok(out);
        }
        out.push(ev);
    }
    panic!("the stream ended before catching up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_arrive_in_revision_order_and_resume_on_another_node() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = c.follower_of(leader);
    let api = c.api(follower);

    // Live: a follower of the stream from now sees the next change.
    let mut live = EventsClient::new(api.clone())
        .watch(WatchEventsRequest { since_revision: 0 })
        .await
        .expect("watch")
        .into_inner();
    register(api.clone(), web_spec("web"))
        .await
        .expect("register");
    let mut first = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("a live event")
    {
        let ev = ev.expect("event");
        if ev.kind == "task-definition" {
            first = Some(ev);
            break;
        }
    }
    let first = first.expect("the registration as an event");
    assert_eq!(first.id, "web:1");
    assert!(first.message.contains("ACTIVE"), "{first:?}");

    c.register_agent(follower, "ev-a1", 4096, 8192, &[("zone", "a")])
        .await;
    let ran = run(api.clone(), "web", 2, "ev-1").await.expect("run");
    ServicesClient::new(api.clone())
        .create(CreateServiceRequest {
            service_name: "svc".into(),
            task_definition: "web".into(),
            desired_count: 0,
            ..Default::default()
        })
        .await
        .expect("create service");

    let all = replay(c.api(leader), first.revision - 1)
        .await
        .expect("replay");
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    for k in ["task-definition", "agent", "task", "service"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert!(
        all.windows(2).all(|w| w[0].revision <= w[1].revision),
        "out of order: {all:?}"
    );
    let task_ids: Vec<&str> = all
        .iter()
        .filter(|e| e.kind == "task")
        .map(|e| e.id.as_str())
        .collect();
    for t in &ran.tasks {
        assert!(task_ids.contains(&t.task_id.as_str()), "{task_ids:?}");
    }
    let svc = all
        .iter()
        .find(|e| e.kind == "service")
        .expect("service event");
    assert!(svc.message.contains("service svc was created"), "{svc:?}");
    // Every write made with a token says whose it was: the audit trail.
    let admin = &admin_token()["berth_".len()..][..16];
    let audit: Vec<&str> = all
        .iter()
        .filter(|e| e.kind == "audit")
        .map(|e| e.message.as_str())
        .collect();
    for what in ["RunTask ", "CreateService svc"] {
        assert!(
            audit
                .iter()
                .any(|m| m.starts_with(&format!("token {admin} (admin): {what}"))),
            "no audit of {what} in {audit:#?}"
        );
    }
    let ran_audit = audit
        .iter()
        .find(|m| m.contains("RunTask "))
        .expect("RunTask audited");
    for t in &ran.tasks {
        assert!(ran_audit.contains(&t.task_id), "{ran_audit}");
    }

    // The leader killed: another node resumes from a revision in the middle, with nothing
    // before it and nothing missing after it.
    let middle = all[all.len() / 2].revision;
    c.kill(leader);
    c.wait_leader(Duration::from_secs(30)).await;
    let rest = replay(c.api(follower), middle).await.expect("resume");
    let expect: Vec<(u64, String, String)> = all
        .iter()
        .filter(|e| e.revision > middle)
        .map(|e| (e.revision, e.kind.clone(), e.id.clone()))
        .collect();
    let got: Vec<(u64, String, String)> = rest
        .iter()
        .filter(|e| e.revision <= all.last().map(|e| e.revision).unwrap_or(0))
        .map(|e| (e.revision, e.kind.clone(), e.id.clone()))
        .collect();
    assert_eq!(got, expect);

    // The CLI replays and ends once caught up.
    let since = (first.revision - 1).to_string();
    let out = berth(&c.endpoint(), &["events", "--since-revision", &since]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("task definition web:1 is ACTIVE"), "{text}");
    assert!(text.contains("service svc was created"), "{text}");

    // A node that restarted holds events only from then: an older resume is refused.
    c.spawn(leader);
    c.wait_applied(
        all.last().map(|e| e.revision).unwrap_or(0),
        Duration::from_secs(30),
    )
    .await;
    let e = replay(c.api(leader), 1)
        .await
        .expect_err("too old for this node");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("keeps events from revision"), "{e:?}");
}
