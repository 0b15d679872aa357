//! Placement through the real control plane: strategies and constraints reach the engine
//! and the answers come back through the API.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::*;

fn req(count: u32, token: &str) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: "web".into(),
        count,
        client_token: token.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spread_over_zones_and_distinct_instance_through_the_api() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    register(api.clone(), web_spec("web"))
        .await
        .expect("register");
    for (id, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
        c.register_agent(leader, id, 4096, 8192, &[("zone", zone)])
            .await;
    }
    let zone_of: BTreeMap<&str, &str> = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")].into();

    // spread by zone: three tasks, one per zone (binpack alone would stack them).
    let mut r = req(3, "spread");
    r.group = "spread-demo".into();
    r.placement_strategy = vec![PlacementStrategy {
        r#type: "spread".into(),
        field: "attribute:zone".into(),
    }];
    let out = TasksClient::new(api.clone())
        .run(r)
        .await
        .expect("run")
        .into_inner();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let mut per_zone: BTreeMap<&str, u32> = BTreeMap::new();
    for t in &out.tasks {
        *per_zone.entry(zone_of[t.agent_id.as_str()]).or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("a", 1), ("b", 1), ("c", 1)]));

    // distinctInstance with more tasks than agents: one per agent, the rest are failures.
    let mut r = req(6, "distinct");
    r.group = "distinct-demo".into();
    r.placement_constraints = vec![PlacementConstraint {
        r#type: "distinctInstance".into(),
        expression: String::new(),
    }];
    let out = TasksClient::new(api.clone())
        .run(r)
        .await
        .expect("run")
        .into_inner();
    assert_eq!(out.tasks.len(), 4, "{:?}", out.failures);
    let mut agents: Vec<&str> = out.tasks.iter().map(|t| t.agent_id.as_str()).collect();
    agents.sort();
    agents.dedup();
    assert_eq!(agents.len(), 4, "two tasks of the group share an agent");
    assert_eq!(out.failures.len(), 2);
    assert!(
        out.failures
            .iter()
            .all(|f| f.reason == "ATTRIBUTE" || f.reason == "AGENT_UNAVAILABLE"),
        "{:?}",
        out.failures
    );

    // memberOf restricts agents; a constraint nobody meets fails with ATTRIBUTE.
    let mut r = req(2, "member");
    r.placement_constraints = vec![PlacementConstraint {
        r#type: "memberOf".into(),
        expression: "attribute:zone == b".into(),
    }];
    let out = TasksClient::new(api.clone())
        .run(r)
        .await
        .expect("run")
        .into_inner();
    assert!(
        out.tasks.iter().all(|t| t.agent_id == "b1"),
        "{:?}",
        out.tasks
    );
    let mut r = req(1, "member-none");
    r.placement_constraints = vec![PlacementConstraint {
        r#type: "memberOf".into(),
        expression: "attribute:zone == z".into(),
    }];
    let out = TasksClient::new(api.clone())
        .run(r)
        .await
        .expect("run")
        .into_inner();
    assert!(out.tasks.is_empty());
    assert_eq!(out.failures[0].reason, "ATTRIBUTE", "{:?}", out.failures);

    // Draining an agent removes it from placement.
    AgentsClient::new(api.clone())
        .drain(DrainAgentRequest {
            agent_id: "b1".into(),
            drain: true,
        })
        .await
        .expect("drain");
    let mut r = req(1, "after-drain");
    r.placement_constraints = vec![PlacementConstraint {
        r#type: "memberOf".into(),
        expression: "attribute:zone == b".into(),
    }];
    let out = TasksClient::new(api.clone())
        .run(r)
        .await
        .expect("run")
        .into_inner();
    assert!(
        out.tasks.is_empty(),
        "placed on a draining agent: {:?}",
        out.tasks
    );
}
