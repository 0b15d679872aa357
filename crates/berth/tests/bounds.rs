//! Issue 11's input bounds against a real cluster: no stored object can push an answer past a
//! stock client's 4 MiB limit, error messages never grow with the input they refuse, and the
//! smaller faults (Describe with a malformed id, Watch's id cap, strategy chains, empty
//! requests, reflection v1alpha, transitions).

mod common;

use std::time::Duration;

use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
use berth_proto::internal::{AgentRegisterRequest, HeartbeatRequest};
use berth_proto::v1::agents_client::AgentsClient;
use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use berth_proto::Message;
use common::*;
use tonic::Code;

/// gRPC's default limit on a message a client accepts (tonic's, grpc-go's, grpcio's).
const CLIENT_LIMIT: usize = 4 * 1024 * 1024;
/// What an error message may take: well under the 8 KiB at which common clients drop
/// error metadata.
const MESSAGE_LIMIT: usize = 512;
/// The size of the values the issue sent.
const BIG: usize = 100 * 1024;

fn env(vars: usize, len: usize) -> Vec<KeyValue> {
    (0..vars)
        .map(|i| KeyValue {
            name: format!("V{i}"),
            value: "x".repeat(len),
        })
        .collect()
}

fn three_containers(family: &str) -> TaskDefinitionSpec {
    let mut spec = web_spec(family);
    spec.container_definitions = (0..3)
        .map(|i| ContainerDefinition {
            name: format!("c{i}"),
            image: "berth/workload".into(),
            ..Default::default()
        })
        .collect();
    spec
}

/// Expects a refusal with `code`, a message that mentions `needle`, and a message short
/// enough for any client to receive.
fn refused<T: std::fmt::Debug>(what: &str, code: Code, needle: &str, r: Result<T, tonic::Status>) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(
                s.message().contains(needle),
                "{what}: `{}` does not mention `{needle}`",
                s.message()
            );
            assert!(
                s.message().len() <= MESSAGE_LIMIT,
                "{what}: a {}-byte message",
                s.message().len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stored_object_pushes_an_answer_past_4_mib() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    register(api.clone(), three_containers("fat"))
        .await
        .expect("register");
    c.register_agent(leader, "big", 1 << 20, 1 << 24, &[]).await;
    let mut tasks = TasksClient::new(api.clone());
    let before = status(c.api(leader)).await.revision;

    // The request: 3 containers × 256 variables × 8,000 B, each within its
    // per-field limit, 6 MB in all. It was stored; now it is refused.
    let huge = RunTaskRequest {
        task_definition: "fat".into(),
        count: 1,
        client_token: "huge".into(),
        overrides: (0..3)
            .map(|i| ContainerOverride {
                name: format!("c{i}"),
                command: vec![],
                environment: env(256, 8000),
            })
            .collect(),
        ..Default::default()
    };
    assert!(huge.encoded_len() > 6_000_000);
    refused(
        "6 MB of overrides",
        Code::InvalidArgument,
        "limit is 65536",
        tasks.run(huge).await,
    );
    assert_eq!(status(c.api(leader)).await.revision, before);

    // Within the limit: 80 tasks with 56 KB of overrides each, 4.5 MB stored in all.
    for call in 0..8 {
        let r = tasks
            .run(RunTaskRequest {
                task_definition: "fat".into(),
                count: 10,
                client_token: format!("fat-{call}"),
                overrides: vec![ContainerOverride {
                    name: "c0".into(),
                    command: vec![],
                    environment: env(7, 8000),
                }],
                ..Default::default()
            })
            .await
            .expect("overrides within the limit")
            .into_inner();
        assert_eq!(r.tasks.len(), 10, "{:?}", r.failures);
    }

    // A stock client asking for 1000 tasks gets a page under its limit, then the rest.
    let mut seen = std::collections::BTreeSet::new();
    let mut next_token = String::new();
    let mut pages = 0;
    loop {
        let r = tasks
            .list(ListTasksRequest {
                max_results: 1000,
                next_token: next_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a list page within the client's limit")
            .into_inner();
        assert!(r.encoded_len() < CLIENT_LIMIT, "{} bytes", r.encoded_len());
        assert!(!r.tasks.is_empty());
        pages += 1;
        for t in &r.tasks {
            assert!(seen.insert(t.task_id.clone()), "{} listed twice", t.task_id);
        }
        if r.next_token.is_empty() {
            break;
        }
        next_token = r.next_token;
    }
    assert_eq!(seen.len(), 80);
    assert!(pages >= 3, "80 tasks of 56 KB came in {pages} pages");

    // DescribeTasks of all 80: bounded too; what does not fit is named, and described by
    // a second call.
    let ids: Vec<String> = seen.iter().cloned().collect();
    let d = tasks
        .describe(DescribeTasksRequest {
            task_ids: ids.clone(),
            stale: false,
        })
        .await
        .expect("describe within the client's limit")
        .into_inner();
    assert!(d.encoded_len() < CLIENT_LIMIT, "{} bytes", d.encoded_len());
    assert_eq!(d.tasks.len() + d.failures.len(), 80);
    assert!(!d.failures.is_empty());
    assert!(d.failures.iter().all(|f| f.reason == "ANSWER_FULL"));
    let rest: Vec<String> = d.failures.iter().map(|f| f.arn.clone()).collect();
    let d2 = tasks
        .describe(DescribeTasksRequest {
            task_ids: rest.clone(),
            stale: false,
        })
        .await
        .expect("describe the rest")
        .into_inner();
    assert!(d2.tasks.iter().all(|t| rest.contains(&t.task_id)));
    assert!(!d2.tasks.is_empty());

    // Task definitions: 72 revisions of 60 KB, 4.3 MB for a default page of 100.
    let mut fat = web_spec("fatdef");
    fat.container_definitions[0].environment = env(7, 8000);
    for _ in 0..72 {
        register(api.clone(), fat.clone())
            .await
            .expect("a definition under 64 KiB");
    }
    let mut defs = TaskDefinitionsClient::new(api.clone());
    let mut count = 0;
    let mut next_token = String::new();
    loop {
        let r = defs
            .list(ListTaskDefinitionsRequest {
                family: "fatdef".into(),
                next_token: next_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a definition page within the client's limit")
            .into_inner();
        assert!(r.encoded_len() < CLIENT_LIMIT, "{} bytes", r.encoded_len());
        count += r.task_definitions.len();
        if r.next_token.is_empty() {
            break;
        }
        assert!(
            r.task_definitions.len() < 72,
            "the first page held them all"
        );
        next_token = r.next_token;
    }
    assert_eq!(count, 72);

    // Agents: 260 with 64 attributes of 128-byte names and values, 4.4 MB unpaged.
    // Ten at a time: 260 at once make one 4.4 MB Raft entry, slower than the write
    // timeout in a debug build.
    let mut set: tokio::task::JoinSet<Result<(), tonic::Status>> = tokio::task::JoinSet::new();
    for i in 0..260 {
        if set.len() >= 10 {
            if let Some(r) = set.join_next().await {
                r.expect("join").expect("register a wide agent");
            }
        }
        let ch = c.raft_agent(leader, &format!("wide-{i:03}"));
        set.spawn(async move {
            AgentProtocolClient::new(ch)
                .register(AgentRegisterRequest {
                    agent_id: format!("wide-{i:03}"),
                    cpu: 1024,
                    memory: 2048,
                    attributes: (0..64)
                        .map(|k| (format!("{k:0>128}"), "v".repeat(128)))
                        .collect(),
                    address: String::new(),
                })
                .await
                .map(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("register a wide agent");
    }
    let mut agents = AgentsClient::new(api.clone());
    let mut listed = Vec::new();
    let mut next_token = String::new();
    loop {
        let r = agents
            .list(ListAgentsRequest {
                max_results: 1000,
                next_token: next_token.clone(),
                stale: false,
            })
            .await
            .expect("an agent page within the client's limit")
            .into_inner();
        assert!(r.encoded_len() < CLIENT_LIMIT, "{} bytes", r.encoded_len());
        listed.extend(r.agents.into_iter().map(|a| a.agent_id));
        if r.next_token.is_empty() {
            break;
        }
        next_token = r.next_token;
    }
    assert_eq!(listed.len(), 261, "260 wide agents and `big`");
    let mut sorted = listed.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 261, "an agent listed twice");

    // maxResults pages by count as the other lists do.
    let r = agents
        .list(ListAgentsRequest {
            max_results: 2,
            next_token: String::new(),
            stale: false,
        })
        .await
        .expect("a page of two")
        .into_inner();
    assert_eq!(r.agents.len(), 2);
    assert_eq!(r.next_token, r.agents[1].agent_id);
    refused(
        "maxResults over 1000",
        Code::InvalidArgument,
        "maxResults 1001",
        agents
            .list(ListAgentsRequest {
                max_results: 1001,
                next_token: String::new(),
                stale: false,
            })
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_quote_a_prefix_and_the_small_faults_are_fixed() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let api = c.api(c.follower_of(leader));
    register(api.clone(), web_spec("web"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 4096, 8192, &[("zone", "a")])
        .await;
    c.register_agent(leader, "a2", 4096, 8192, &[("zone", "b")])
        .await;
    let mut tasks = TasksClient::new(api.clone());
    let ok = run(api.clone(), "web", 1, "one").await.expect("run");
    let task_id = ok.tasks[0].task_id.clone();
    let before = status(c.api(leader)).await.revision;

    // ---- error messages: a short prefix and the length, never the whole value
    let big = "x".repeat(BIG);
    let run_with = |f: &dyn Fn(&mut RunTaskRequest)| {
        let mut r = RunTaskRequest {
            task_definition: "web".into(),
            count: 1,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let expression = format!("attribute:zone == {big}");
    let r = run_with(&|r| {
        r.placement_constraints = vec![PlacementConstraint {
            r#type: "memberOf".into(),
            expression: expression.clone(),
        }]
    });
    refused(
        "a 100 KB constraint expression",
        Code::InvalidArgument,
        "placementConstraints[0].expression `attribute:zone == xxx",
        tasks.run(r).await,
    );
    let r = run_with(&|r| {
        r.placement_strategy = vec![PlacementStrategy {
            r#type: "spread".into(),
            field: format!("attribute:{big}"),
        }]
    });
    refused(
        "a 100 KB strategy field",
        Code::InvalidArgument,
        "placementStrategy[0].field is 102410 bytes long; the limit is 138",
        tasks.run(r).await,
    );
    let r = run_with(&|r| {
        r.placement_strategy = vec![PlacementStrategy {
            r#type: big.clone(),
            field: String::new(),
        }]
    });
    refused(
        "a 100 KB strategy type",
        Code::InvalidArgument,
        "(102400 bytes) is not a strategy",
        tasks.run(r).await,
    );
    let r = run_with(&|r| r.task_definition = format!("web:{big}"));
    refused(
        "a 100 KB revision",
        Code::InvalidArgument,
        "(102400 bytes) is not a positive number",
        tasks.run(r).await,
    );
    let r = run_with(&|r| r.client_token = big.clone());
    refused(
        "a 100 KB client token",
        Code::InvalidArgument,
        "got 102400",
        tasks.run(r).await,
    );
    // 10 KB, not 100: a 100 KB override is refused earlier for its total size.
    let r = run_with(&|r| {
        r.overrides = vec![ContainerOverride {
            name: "x".repeat(10 * 1024),
            ..Default::default()
        }]
    });
    refused(
        "a 10 KB container name in an override",
        Code::InvalidArgument,
        "(10240 bytes) is not a container",
        tasks.run(r).await,
    );
    refused(
        "a 100 KiB task id",
        Code::InvalidArgument,
        "taskId `xxx",
        tasks
            .stop(StopTaskRequest {
                task_id: big.clone(),
                reason: String::new(),
            })
            .await,
    );
    refused(
        "a 100 KiB task id to logs",
        Code::InvalidArgument,
        "(102400 bytes) is not a task id",
        tasks
            .logs(TaskLogsRequest {
                task_id: big.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    refused(
        "a 100 KiB task id to watch",
        Code::InvalidArgument,
        "taskIds[0] `xxx",
        tasks
            .watch(WatchTasksRequest {
                task_ids: vec![big.clone()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    refused(
        "a 100 KB nextToken to ListTasks",
        Code::InvalidArgument,
        "nextToken `xxx",
        tasks
            .list(ListTasksRequest {
                next_token: big.clone(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "a 100 KB desiredStatus",
        Code::InvalidArgument,
        "must be RUNNING or STOPPED",
        tasks
            .list(ListTasksRequest {
                desired_status: big.clone(),
                ..Default::default()
            })
            .await,
    );
    let mut defs = TaskDefinitionsClient::new(api.clone());
    refused(
        "a 100 KB nextToken to ListTaskDefinitions",
        Code::InvalidArgument,
        "was not issued by this API",
        defs.list(ListTaskDefinitionsRequest {
            next_token: big.clone(),
            ..Default::default()
        })
        .await,
    );
    refused(
        "a 200-byte family without a revision",
        Code::InvalidArgument,
        "(200 bytes): deregister needs an explicit revision",
        defs.deregister(DeregisterTaskDefinitionRequest {
            task_definition: "f".repeat(200),
        })
        .await,
    );
    let mut spec = web_spec("web");
    spec.container_definitions[0].image = format!("{big} x");
    refused(
        "a 100 KB image with a space",
        Code::InvalidArgument,
        "containerDefinitions[0].image is 102402 bytes long",
        register(api.clone(), spec).await,
    );
    let mut spec = web_spec("web");
    spec.container_definitions[0].environment = vec![KeyValue {
        name: format!("1{}", "x".repeat(200)),
        value: String::new(),
    }];
    refused(
        "a bad 201-byte variable name",
        Code::InvalidArgument,
        "(201 bytes) is not a valid variable name",
        register(api.clone(), spec).await,
    );
    let mut agents = AgentsClient::new(api.clone());
    refused(
        "a 100 KB agent id to describe",
        Code::NotFound,
        "(102400 bytes) is not registered",
        agents
            .describe(DescribeAgentRequest {
                agent_id: big.clone(),
                stale: false,
            })
            .await,
    );
    refused(
        "a 100 KB agent id to drain",
        Code::NotFound,
        "(102400 bytes) is not registered",
        agents
            .drain(DrainAgentRequest {
                agent_id: big.clone(),
                drain: true,
            })
            .await,
    );
    refused(
        "a 100 KB nextToken to ListAgents",
        Code::InvalidArgument,
        "was not issued by this API",
        agents
            .list(ListAgentsRequest {
                next_token: big.clone(),
                ..Default::default()
            })
            .await,
    );
    let mut cluster = ClusterClient::new(api.clone());
    refused(
        "a 100 KB raft address",
        Code::InvalidArgument,
        "must be HOST:PORT",
        cluster
            .join(JoinRequest {
                id: 9,
                raft_address: big.clone(),
                api_address: "127.0.0.1:1".into(),
            })
            .await,
    );
    // As agent a3: on TLS an agent speaks only for itself, so a heartbeat for a 100 KB id
    // is refused for the caller's identity, and the refusal quotes a prefix too.
    let mut agent_protocol = AgentProtocolClient::new(c.raft_agent(leader, "a3"));
    refused(
        "a heartbeat from a 100 KB agent id",
        Code::PermissionDenied,
        "… (102400 bytes); the caller is agent a3",
        agent_protocol
            .heartbeat(HeartbeatRequest {
                agent_id: big.clone(),
                epoch: 1,
                engine_error: String::new(),
            })
            .await,
    );
    refused(
        "a 100 KB attribute name",
        Code::InvalidArgument,
        "(102400 bytes) must be 1..=128",
        agent_protocol
            .register(AgentRegisterRequest {
                agent_id: "a3".into(),
                cpu: 1,
                memory: 1,
                attributes: [(big.clone(), "v".to_string())].into_iter().collect(),
                address: String::new(),
            })
            .await,
    );

    refused(
        "a 1 MB agent address",
        Code::InvalidArgument,
        "address is 1048576 bytes long",
        agent_protocol
            .register(AgentRegisterRequest {
                agent_id: "a3".into(),
                cpu: 1,
                memory: 1,
                attributes: Default::default(),
                address: "h".repeat(1 << 20),
            })
            .await,
    );

    // ---- DescribeTasks: a malformed id is one MISSING failure, not a failed call
    let missing = "0123456789abcdef0123456789abcdef".to_string();
    let d = tasks
        .describe(DescribeTasksRequest {
            task_ids: vec![
                task_id.clone(),
                "not-an-id".into(),
                missing.clone(),
                big.clone(),
            ],
            stale: false,
        })
        .await
        .expect("describe with malformed ids")
        .into_inner();
    assert_eq!(d.tasks.len(), 1);
    assert_eq!(d.tasks[0].task_id, task_id);
    let reasons: Vec<(&str, &str)> = d
        .failures
        .iter()
        .map(|f| (f.reason.as_str(), f.arn.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("MISSING", "not-an-id"),
            ("MISSING", missing.as_str()),
            ("MISSING", &big[..64]),
        ]
    );
    assert!(d.failures[0].detail.contains("is not a task id"));
    assert!(d.failures[1].detail.contains("does not exist"));
    assert!(d.failures[2].detail.contains("(102400 bytes)"));

    // ---- Watch takes at most what Describe takes
    refused(
        "watch with 101 ids",
        Code::InvalidArgument,
        "taskIds has 101 ids; the limit is 100",
        tasks
            .watch(WatchTasksRequest {
                task_ids: vec![missing.clone(); 101],
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    let mut watch = tasks
        .watch(WatchTasksRequest {
            task_ids: vec![task_id.clone(); 100],
            ..Default::default()
        })
        .await
        .expect("watch with 100 ids")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the opening picture")
        .expect("a watch event")
        .expect("an event");
    assert_eq!(first.task.map(|t| t.task_id), Some(task_id.clone()));

    // ---- strategies after a binpack or random are refused, not ignored
    let r = run_with(&|r| {
        r.placement_strategy = vec![
            PlacementStrategy {
                r#type: "binpack".into(),
                field: "memory".into(),
            },
            PlacementStrategy {
                r#type: "spread".into(),
                field: "attribute:zone".into(),
            },
        ]
    });
    refused(
        "binpack then spread",
        Code::InvalidArgument,
        "placementStrategy[1] follows placementStrategy[0] (binpack)",
        tasks.run(r).await,
    );

    // ---- empty requests: INVALID_ARGUMENT naming the field, and nothing changes
    refused(
        "UpdateSettings {}",
        Code::InvalidArgument,
        "the request sets nothing",
        cluster
            .update_settings(UpdateSettingsRequest::default())
            .await,
    );
    refused(
        "Leave {}",
        Code::InvalidArgument,
        "id: node ids start at 1",
        cluster.leave(LeaveRequest { id: 0 }).await,
    );
    refused(
        "Join {}",
        Code::InvalidArgument,
        "id: node ids start at 1",
        cluster.join(JoinRequest::default()).await,
    );

    assert_eq!(
        status(c.api(leader)).await.revision,
        before,
        "a refused request changed the state"
    );

    // ---- what works after all that
    // ECS's usual chain: spread over zones, binpack inside each.
    let r = run_with(&|r| {
        r.count = 2;
        r.client_token = "chain".into();
        r.placement_strategy = vec![
            PlacementStrategy {
                r#type: "spread".into(),
                field: "attribute:zone".into(),
            },
            PlacementStrategy {
                r#type: "binpack".into(),
                field: "memory".into(),
            },
        ]
    });
    let placed = tasks
        .run(r)
        .await
        .expect("spread then binpack")
        .into_inner();
    let on: Vec<&str> = placed.tasks.iter().map(|t| t.agent_id.as_str()).collect();
    // One agent already runs a task of the group: the spread puts the next in the other
    // zone, then one anywhere (the zones are even again).
    let other = if ok.tasks[0].agent_id == "a1" {
        "a2"
    } else {
        "a1"
    };
    assert_eq!(on.len(), 2, "{:?}", placed.failures);
    assert_eq!(on[0], other, "{on:?}");

    let s = cluster
        .update_settings(UpdateSettingsRequest {
            free_sizing: Some(true),
            ..Default::default()
        })
        .await
        .expect("set free sizing")
        .into_inner();
    assert!(s.free_sizing);
    assert!(status(api.clone()).await.free_sizing);

    // Transitions reach the wire: a new task has reached PROVISIONING at its creation.
    let d = tasks
        .describe(DescribeTasksRequest {
            task_ids: vec![task_id.clone()],
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner();
    let t = &d.tasks[0];
    assert_eq!(
        t.transitions.first().map(|x| (x.status.as_str(), x.at_ms)),
        Some(("PROVISIONING", t.created_at_ms))
    );

    // Server reflection v1alpha, which many tools still speak.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(api.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let msg = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("v1alpha reflection is served")
        .into_inner()
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["berth.v1.Tasks", "berth.v1.Agents", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}
