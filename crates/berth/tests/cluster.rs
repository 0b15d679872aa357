//! The control plane as users and operators meet it: three (or more) `berth control`
//! processes on loopback, real gRPC, real sled on disk, real SIGKILLs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::v1::cluster_client::ClusterClient;
use berth_proto::v1::task_definitions_client::TaskDefinitionsClient;
use berth_proto::v1::tasks_client::TasksClient;
use berth_proto::v1::*;
use common::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const FORM: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_are_read_linearizably_everywhere() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    let follower = c.follower_of(leader);

    let def = register(c.api(follower), web_spec("web"))
        .await
        .expect("register through a follower");
    assert_eq!((def.family.as_str(), def.revision), ("web", 1));
    c.register_agent(follower, "a1", 4096, 8192, &[("zone", "a")])
        .await;
    let run = run(c.api(follower), "web", 2, "t-1")
        .await
        .expect("run through a follower");
    assert_eq!(run.tasks.len(), 2, "{:?}", run.failures);

    // Straight after the acknowledgement, every node — followers included — must show it.
    for id in c.running() {
        let d = TaskDefinitionsClient::new(c.api(id))
            .describe(DescribeTaskDefinitionRequest {
                task_definition: "web".into(),
                stale: false,
            })
            .await
            .expect("describe")
            .into_inner();
        assert_eq!(d.task_definition.map(|d| d.revision), Some(1), "node {id}");
        assert!(
            d.revision >= run.revision,
            "node {id} answered from revision {} < {}",
            d.revision,
            run.revision
        );
        let ids: Vec<String> = run.tasks.iter().map(|t| t.task_id.clone()).collect();
        let r = TasksClient::new(c.api(id))
            .describe(DescribeTasksRequest {
                task_ids: ids,
                stale: false,
            })
            .await
            .expect("describe tasks")
            .into_inner();
        assert_eq!(r.tasks.len(), 2, "node {id}: {:?}", r.failures);
        assert!(r
            .tasks
            .iter()
            .all(|t| t.last_status == "PROVISIONING" && t.agent_id == "a1"));
    }

    // Stale reads answer from the local node and say which revision they reflect.
    let s = TasksClient::new(c.api(follower))
        .list(ListTasksRequest {
            stale: true,
            ..Default::default()
        })
        .await
        .expect("stale list")
        .into_inner();
    assert!(s.revision > 0);

    let st = status(c.api(follower)).await;
    assert_eq!(st.leader_id, leader);
    assert_eq!(st.members.len(), 3);
    assert!(
        st.members
            .iter()
            .all(|m| m.voter && m.role != "unreachable"),
        "{:?}",
        st.members
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standard_grpc_health_and_reflection_are_served() {
    let c = Cluster::start(3, &[]);
    c.wait_leader(FORM).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.api(2));
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "berth.v1.Tasks".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(c.api(1));
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}")
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "berth.v1.TaskDefinitions",
        "berth.v1.Tasks",
        "berth.v1.Agents",
        "berth.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
}

async fn health_of(c: &Cluster, id: u64) -> Option<i32> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.api(id));
    tokio::time::timeout(
        Duration::from_secs(2),
        health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner().status)
}

async fn wait_health(c: &Cluster, id: u64, want: ServingStatus, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if health_of(c, id).await == Some(want as i32) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "node {id} did not report {want:?} within {within:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression: `grpc.health.v1` said SERVING forever, even on a node whose calls all
/// failed UNAVAILABLE for want of a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_says_not_serving_while_a_node_cannot_serve_and_serving_once_it_can() {
    let mut c = Cluster::start(3, &["--leader-wait-ms", "1500"]);
    let leader = c.wait_leader(FORM).await;
    let survivor = c.follower_of(leader);
    for id in [1, 2, 3] {
        wait_health(&c, id, ServingStatus::Serving, Duration::from_secs(5)).await;
    }
    // The survivor loses its majority: no leader it can reach.
    for id in [1, 2, 3] {
        if id != survivor {
            c.kill(id);
        }
    }
    let took = wait_health(
        &c,
        survivor,
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    // Not before its own calls would fail (leader wait 1.5 s), and not long after.
    assert!(
        took >= Duration::from_millis(1_000),
        "NOT_SERVING after only {took:?}"
    );
    for id in [1, 2, 3] {
        if id != survivor {
            c.spawn(id);
        }
    }
    c.wait_leader(FORM).await;
    wait_health(
        &c,
        survivor,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
}

/// Writers keep running tasks with fresh tokens while the leader is SIGKILLed. Every
/// acknowledged task must exist exactly once afterwards, and writes must resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    let any = c.follower_of(leader);
    register(c.api(any), web_spec("web"))
        .await
        .expect("register");
    c.register_agent(any, "big", 1_000_000, 4_000_000, &[])
        .await;

    let endpoint = c.endpoint();
    // (client token, task ids, when acknowledged)
    type Acks = Vec<(String, Vec<String>, Instant)>;
    let acked: Arc<Mutex<Acks>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let acked = acked.clone();
        let stop = stop.clone();
        let endpoints: Vec<String> = endpoint.split(',').map(String::from).collect();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let token = format!("w{w}-{n}");
                n += 1;
                // Like the CLI: the same token on every endpoint until one acknowledges.
                'retry: for attempt in 0..200 {
                    let ep = &endpoints[(w + attempt) % endpoints.len()];
                    match run(channel(ep), "web", 1, &token).await {
                        Ok(r) => {
                            assert!(r.failures.is_empty(), "{:?}", r.failures);
                            let ids = r.tasks.into_iter().map(|t| t.task_id).collect();
                            acked
                                .lock()
                                .unwrap()
                                .push((token.clone(), ids, Instant::now()));
                            break 'retry;
                        }
                        Err(s)
                            if s.code() == Code::Unavailable
                                || s.code() == Code::Unknown
                                || s.code() == Code::Cancelled =>
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(s) => panic!("unexpected failure: {s:?}"),
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no write succeeded before the kill");
    let killed_at = Instant::now();
    c.kill(leader);
    let new_leader = c.wait_leader(FORM).await;
    assert_ne!(new_leader, leader);
    // Writes must flow again after the kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let after_kill = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, at)| *at > killed_at + Duration::from_millis(10))
            .count();
        if after_kill >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the leader was killed\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    // The killed node comes back and catches up.
    c.spawn(leader);
    let acked = acked.lock().unwrap().clone();
    let mut by_token: BTreeMap<String, Vec<Task>> = BTreeMap::new();
    let tasks = all_tasks(c.api(new_leader), false).await;
    for t in &tasks {
        by_token
            .entry(t.client_token.clone())
            .or_default()
            .push(t.clone());
    }
    for (token, ids, _) in &acked {
        let found = by_token.get(token).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "token {token}: {} tasks", found.len());
        assert_eq!(
            &found[0].task_id, &ids[0],
            "token {token} maps to another task"
        );
    }
    assert!(
        by_token.values().all(|v| v.len() == 1),
        "a token created more than one task"
    );
    let st = status(c.api(new_leader)).await;
    c.wait_applied(st.revision, Duration::from_secs(20)).await;
    let digests: BTreeSet<(u64, u64)> = {
        let mut d = BTreeSet::new();
        for id in c.running() {
            let i = c.info(id, true).await.expect("info");
            d.insert((i.revision, i.state_digest));
        }
        d
    };
    assert_eq!(
        digests.len(),
        1,
        "nodes disagree after catching up: {digests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_killed_and_restarted_keeps_identical_state() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    register(c.api(leader), web_spec("db"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 8192, 16384, &[("zone", "a")])
        .await;
    let r = run(c.api(leader), "web", 5, "k1").await.expect("run");
    assert_eq!(r.tasks.len(), 5);
    let before = all_tasks(c.api(leader), false).await;
    let defs_before = TaskDefinitionsClient::new(c.api(leader))
        .list(ListTaskDefinitionsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .task_definitions;

    for id in [1, 2, 3] {
        c.kill(id);
    }
    for id in [3, 1, 2] {
        c.spawn(id);
    }
    let leader = c.wait_leader(FORM).await;
    let after = all_tasks(c.api(leader), false).await;
    assert_eq!(before, after);
    let st = status(c.api(leader)).await;
    c.wait_applied(st.revision, Duration::from_secs(10)).await;
    let defs_after = TaskDefinitionsClient::new(c.api(leader))
        .list(ListTaskDefinitionsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .task_definitions;
    assert_eq!(defs_before, defs_after);
    // Every node rebuilt the same state from its own disk.
    let mut digests = BTreeSet::new();
    for id in c.running() {
        let i = c.info(id, true).await.expect("info");
        digests.insert((i.revision, i.state_digest));
    }
    assert_eq!(
        digests.len(),
        1,
        "nodes disagree after the restart: {digests:?}"
    );
    // And the cluster still takes writes.
    let r = run(c.api(leader), "web", 1, "k2")
        .await
        .expect("run after restart");
    assert_eq!(r.tasks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_rejoins_and_catches_up_by_snapshot() {
    // Small snapshot interval and short log tail, so the wiped node's entries are gone
    // from every log and only a snapshot can bring it back.
    let mut c = Cluster::start(
        3,
        &["--snapshot-every", "20", "--keep-behind-snapshot", "5"],
    );
    let leader = c.wait_leader(FORM).await;
    let victim = c.follower_of(leader);
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 1_000_000, 4_000_000, &[])
        .await;
    c.stop(victim);
    c.wipe(victim);
    let mut last = 0;
    for i in 0..60 {
        last = run(c.api(leader), "web", 1, &format!("s{i}"))
            .await
            .expect("run")
            .revision;
    }
    // Snapshots and purges run in the background: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let li = c.info(leader, false).await.expect("leader info");
        if li.purged_index > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never compacted its log: {li:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.spawn(victim);
    c.wait_applied(last, Duration::from_secs(30)).await;
    let vi = c.info(victim, true).await.expect("victim info");
    assert!(
        vi.snapshot_index > 0,
        "the wiped node caught up without a snapshot: {vi:?}\n{}",
        c.log(victim)
    );
    assert!(
        c.log(victim).contains("snapshot installed"),
        "{}",
        c.log(victim)
    );
    // The agent registered above never heartbeats, so the leader marks it DOWN at some
    // point: a write that can land between two reads. Compare at one applied index.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (vi, li) = loop {
        let vi = c.info(victim, true).await.expect("victim info");
        let li = c.info(leader, true).await.expect("leader info");
        if vi.applied_index == li.applied_index || Instant::now() > deadline {
            break (vi, li);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (vi.applied_index, vi.revision, vi.state_digest),
        (li.applied_index, li.revision, li.state_digest)
    );
    let tasks = all_tasks(c.api(victim), true).await;
    assert_eq!(tasks.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_as_learners_then_voters_and_leave() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    c.add_blank_node(4);
    let (raft4, api4) = (c.nodes[&4].raft.to_string(), c.nodes[&4].api.to_string());
    // Join through a follower: the request reaches the leader by itself.
    let follower = c.follower_of(leader);
    let r = ClusterClient::new(c.api(follower))
        .join(JoinRequest {
            id: 4,
            raft_address: raft4.clone(),
            api_address: api4,
        })
        .await
        .expect("join")
        .into_inner();
    let m4 = r.members.iter().find(|m| m.id == 4).expect("node 4 listed");
    assert!(m4.voter, "{m4:?}");
    // The membership changes are events: learner first, then voter.
    let endpoint = c.nodes[&leader].api.to_string();
    let o = berth(&endpoint, &["events", "--since-revision", "1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let learner = text
        .find("cluster membership: voters 1, 2, 3; learners 4")
        .unwrap_or_else(|| panic!("no learner event: {text}"));
    let voter = text
        .find("cluster membership: voters 1, 2, 3, 4; learners none")
        .unwrap_or_else(|| panic!("no voter event: {text}"));
    assert!(learner < voter, "{text}");
    // Node 4 has the data and serves linearizable reads.
    let d = TaskDefinitionsClient::new(c.api(4))
        .describe(DescribeTaskDefinitionRequest {
            task_definition: "web:1".into(),
            stale: false,
        })
        .await
        .expect("read on the new node");
    assert_eq!(
        d.into_inner().task_definition.map(|d| d.family),
        Some("web".into())
    );

    // Joining again is a no-op; joining the same id elsewhere is refused.
    ClusterClient::new(c.api(leader))
        .join(JoinRequest {
            id: 4,
            raft_address: raft4,
            api_address: "127.0.0.1:1".into(),
        })
        .await
        .expect("rejoin at the same address");
    let e = ClusterClient::new(c.api(leader))
        .join(JoinRequest {
            id: 4,
            raft_address: "127.0.0.1:2".into(),
            api_address: "127.0.0.1:3".into(),
        })
        .await
        .expect_err("same id, other address");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // Remove node 4 and one of the original followers; the rest keeps taking writes.
    let r = ClusterClient::new(c.api(leader))
        .leave(LeaveRequest { id: 4 })
        .await
        .expect("leave 4")
        .into_inner();
    assert!(r.members.iter().all(|m| m.id != 4), "{:?}", r.members);
    c.kill(4);
    let other = *c
        .running()
        .iter()
        .find(|id| **id != leader && **id != 4)
        .expect("follower");
    ClusterClient::new(c.api(leader))
        .leave(LeaveRequest { id: other })
        .await
        .expect("leave follower");
    c.kill(other);
    let st = status(c.api(leader)).await;
    assert_eq!(
        st.members.iter().filter(|m| m.voter).count(),
        2,
        "{:?}",
        st.members
    );
    register(c.api(leader), web_spec("after"))
        .await
        .expect("write after two leaves");
    let e = ClusterClient::new(c.api(leader))
        .leave(LeaveRequest { id: 99 })
        .await
        .expect_err("unknown member");
    assert_eq!(e.code(), Code::NotFound);
}

/// Answers `Node.Info` as a control node with the given id would, and nothing else (no
/// Raft service): it can be asked who it is but can never take a log entry.
struct Impostor;

impl Impostor {
    async fn serve(id: u64) -> String {
        use berth_proto::internal::node_server::{Node, NodeServer};
        use berth_proto::internal::*;
        struct Answer(u64);
        #[tonic::async_trait]
        impl Node for Answer {
            async fn info(
                &self,
                _: tonic::Request<InfoRequest>,
            ) -> Result<tonic::Response<NodeInfo>, tonic::Status> {
                Ok(tonic::Response::new(NodeInfo {
                    id: self.0,
                    ..Default::default()
                }))
            }
            async fn forward(
                &self,
                _: tonic::Request<ForwardRequest>,
            ) -> Result<tonic::Response<ForwardResponse>, tonic::Status> {
                Err(tonic::Status::unimplemented("impostor"))
            }
            async fn read_index(
                &self,
                _: tonic::Request<ReadIndexRequest>,
            ) -> Result<tonic::Response<ReadIndexResponse>, tonic::Status> {
                Err(tonic::Status::unimplemented("impostor"))
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        // It holds a real certificate for node `id`: what it lacks is a log.
        let tls = credentials(&berth_tls::Identity::control(id)).server_mutual();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("tls")
                .add_service(NodeServer::new(Answer(id)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

/// Regression: `Join` of an address where nothing answers returned OK at once and made
/// node 9 a voter, so the cluster needed 3 of 4 and one follower's death stopped writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_of_a_dead_address_changes_no_voters_and_a_follower_kill_is_survived() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    let follower = c.follower_of(leader);
    register(c.api(follower), web_spec("web"))
        .await
        .expect("register");

    let e = ClusterClient::new(c.api(follower))
        .join(JoinRequest {
            id: 9,
            raft_address: "127.0.0.1:1".into(),
            api_address: "127.0.0.1:2".into(),
        })
        .await
        .expect_err("nothing answers at 127.0.0.1:1");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("127.0.0.1:1"), "{e:?}");

    // A live node under the wrong id is refused too.
    c.add_blank_node(4);
    let raft4 = c.nodes[&4].raft.to_string();
    let e = ClusterClient::new(c.api(leader))
        .join(JoinRequest {
            id: 5,
            raft_address: raft4.clone(),
            api_address: c.nodes[&4].api.to_string(),
        })
        .await
        .expect_err("node 4 joined as node 5");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("is node 4, not node 5"), "{e:?}");

    // Something that answers as node 7 but cannot follow the log: it is added as a
    // learner, takes nothing, and is taken out again.
    let impostor = Impostor::serve(7).await;
    let e = ClusterClient::new(c.api(leader))
        .join(JoinRequest {
            id: 7,
            raft_address: impostor.clone(),
            api_address: "127.0.0.1:2".into(),
        })
        .await
        .expect_err("a node that cannot follow joined");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("took none of the log"), "{e:?}");

    let st = status(c.api(leader)).await;
    let ids: Vec<(u64, bool)> = st.members.iter().map(|m| (m.id, m.voter)).collect();
    assert_eq!(
        ids,
        vec![(1, true), (2, true), (3, true)],
        "{:?}",
        st.members
    );

    // Still three voters: losing one of them leaves a majority.
    c.kill(follower);
    register(c.api(leader), web_spec("after"))
        .await
        .expect("a write with one follower dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_client_token_after_a_leader_change_runs_one_task() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 4096, 8192, &[]).await;
    let first = run(c.api(leader), "web", 2, "once").await.expect("run");
    c.kill(leader);
    let new_leader = c.wait_leader(FORM).await;
    let again = run(c.api(new_leader), "web", 2, "once")
        .await
        .expect("retry");
    let ids = |r: &RunTaskResponse| {
        r.tasks
            .iter()
            .map(|t| t.task_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
    let tasks = all_tasks(c.api(new_leader), false).await;
    assert_eq!(tasks.iter().filter(|t| t.client_token == "once").count(), 2);
    // Same token, different request: refused, nothing created.
    let e = run(c.api(new_leader), "web", 3, "once")
        .await
        .expect_err("token reuse");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("different parameters"),
        "{}",
        e.message()
    );
    assert_eq!(all_tasks(c.api(new_leader), false).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_majority_calls_fail_unavailable_naming_the_last_leader() {
    let mut c = Cluster::start(3, &["--leader-wait-ms", "2000"]);
    let leader = c.wait_leader(FORM).await;
    let survivor = c.follower_of(leader);
    register(c.api(survivor), web_spec("web"))
        .await
        .expect("register");
    for id in [1, 2, 3] {
        if id != survivor {
            c.kill(id);
        }
    }
    let started = Instant::now();
    let e = register(c.api(survivor), web_spec("web"))
        .await
        .expect_err("no majority");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("last known leader is node"),
        "{}",
        e.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call waited {:?}",
        started.elapsed()
    );
    let e = TasksClient::new(c.api(survivor))
        .list(ListTasksRequest::default())
        .await
        .expect_err("no read index");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // A stale read still answers from the local state.
    TasksClient::new(c.api(survivor))
        .list(ListTasksRequest {
            stale: true,
            ..Default::default()
        })
        .await
        .expect("stale read without a majority");
}

/// Regression: a leader cut off from both followers stayed leader (openraft 0.9 has no
/// step-down) and held every call it was sent until the call's own deadline, 5 s, and it
/// went on acknowledging agents' heartbeats while the others could elect a new leader that
/// would declare those agents DOWN (and the agents never fenced).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_majority_fails_calls_at_once_and_refuses_heartbeats() {
    use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
    use berth_proto::internal::HeartbeatRequest;
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    let epoch = AgentProtocolClient::new(c.raft_agent(leader, "a1"))
        .register(berth_proto::internal::AgentRegisterRequest {
            agent_id: "a1".into(),
            cpu: 1024,
            memory: 2048,
            ..Default::default()
        })
        .await
        .expect("agent registration")
        .into_inner()
        .epoch;
    let heartbeat = || async {
        AgentProtocolClient::new(c.raft_agent(leader, "a1"))
            .heartbeat(HeartbeatRequest {
                agent_id: "a1".into(),
                epoch,
                engine_error: String::new(),
            })
            .await
    };
    heartbeat().await.expect("heartbeat while whole");

    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    for &f in &followers {
        c.signal(f, "-STOP");
    }
    // Past the followers' lease (election-max, 500 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let started = Instant::now();
    let e = register(c.api(leader), web_spec("cut"))
        .await
        .expect_err("a write without a majority");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("no majority has acknowledged it"),
        "{e:?}"
    );
    let e = TasksClient::new(c.api(leader))
        .list(ListTasksRequest::default())
        .await
        .expect_err("a linearizable read without a majority");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "two calls took {:?} to fail",
        started.elapsed()
    );
    // Heartbeats a while longer (a few seconds' stall must not make agents fence), but
    // not past half the agent TTL (2.5 s).
    heartbeat().await.expect("a heartbeat 1 s into the cut");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let e = heartbeat()
        .await
        .expect_err("a heartbeat acknowledged by a leader cut off for 3 s");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    for &f in &followers {
        c.signal(f, "-CONT");
    }
    c.wait_leader(FORM).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while register(c.api(leader), web_spec("whole")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no write after healing\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// libfaketime, from Debian's `faketime` package: it moves a process's wall clock and, with
/// FAKETIME_DONT_FAKE_MONOTONIC, leaves its monotonic clock alone.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Regression: agent liveness was timed with the wall clock, so a step of the leader's
/// clock made every agent look silent and marked them all DOWN at once (and a step back
/// would have kept a dead one READY past the fencing margin).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wall_clock_step_on_the_control_nodes_marks_no_agent_down() {
    use berth_proto::internal::agent_protocol_client::AgentProtocolClient;
    use berth_proto::internal::{AgentRegisterRequest, HeartbeatRequest};
    use berth_proto::v1::agents_client::AgentsClient;
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "this test steps the control nodes' wall clock with libfaketime ({LIBFAKETIME}); \
         install Debian's `faketime` package"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let offset_path = offset.display().to_string();
    let c = Cluster::start_with_env(
        3,
        &["--agent-ttl-ms", "3000", "--agent-grace-ms", "3000"],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let leader = c.wait_leader(FORM).await;
    let epoch = AgentProtocolClient::new(c.raft_agent(leader, "steady"))
        .register(AgentRegisterRequest {
            agent_id: "steady".into(),
            cpu: 1024,
            memory: 2048,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .epoch;
    // An agent that heartbeats every half second, as long as the test runs.
    let raft: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&i| c.raft_agent(i, "steady"))
        .collect();
    let beating = tokio::spawn(async move {
        for i in 0.. {
            let _ = AgentProtocolClient::new(raft[i % 3].clone())
                .heartbeat(HeartbeatRequest {
                    agent_id: "steady".into(),
                    epoch,
                    engine_error: String::new(),
                })
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let status = || async {
        AgentsClient::new(c.api(leader))
            .describe(DescribeAgentRequest {
                agent_id: "steady".into(),
                stale: false,
            })
            .await
            .expect("describe")
            .into_inner()
            .agent
            .expect("agent")
    };
    // Past the new leader's grace, so only the TTL protects the agent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status().await.status, "READY");

    // Every node's wall clock jumps a minute ahead (as an NTP step would).
    std::fs::write(&offset, "+60\n").expect("step the clock");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let a = status().await;
    assert_eq!(
        (a.status.as_str(), a.epoch),
        ("READY", epoch),
        "a wall-clock step marked a heartbeating agent DOWN\n{}",
        c.logs()
    );
    // The step did reach the nodes: their timestamps moved on by the minute.
    let registered = a.registered_at_ms;
    register(c.api(leader), web_spec("after-step"))
        .await
        .expect("register after the step");
    let td = TaskDefinitionsClient::new(c.api(leader))
        .describe(DescribeTaskDefinitionRequest {
            task_definition: "after-step".into(),
            stale: false,
        })
        .await
        .expect("describe")
        .into_inner()
        .task_definition
        .expect("definition");
    assert!(
        td.registered_at_ms >= registered + 60_000,
        "the nodes' clocks did not move: {} vs {registered}",
        td.registered_at_ms
    );
    beating.abort();
}

/// Regression: a graceful stop waited for every call in flight, and a call waiting for a
/// leader waits the whole leader wait — so `docker stop` of a node without a majority took
/// that long, or ran into its SIGKILL (seen in full restarts in the long chaos run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_does_not_wait_for_calls_waiting_on_a_leader() {
    let mut c = Cluster::start(3, &["--leader-wait-ms", "15000"]);
    let leader = c.wait_leader(FORM).await;
    let survivor = c.follower_of(leader);
    for id in [1, 2, 3] {
        if id != survivor {
            c.kill(id);
        }
    }
    // Calls that will wait for a leader that never comes.
    let api = c.api(survivor);
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { register(api, web_spec(&format!("w{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    c.stop(survivor);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a graceful stop took {took:?} with calls waiting for a leader\n{}",
        c.logs()
    );
    for w in waiting {
        let e = w
            .await
            .expect("caller")
            .expect_err("a write without a majority");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_streams_the_current_picture_then_changes() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(FORM).await;
    let follower = c.follower_of(leader);
    register(c.api(leader), web_spec("web"))
        .await
        .expect("register");
    register(c.api(leader), web_spec("other"))
        .await
        .expect("register");
    c.register_agent(leader, "a1", 4096, 8192, &[]).await;
    let first = run(c.api(leader), "web", 1, "w1").await.expect("run");
    run(c.api(leader), "other", 1, "o1")
        .await
        .expect("run other");

    let mut stream = TasksClient::new(c.api(follower))
        .watch(WatchTasksRequest {
            family: "web".into(),
            task_ids: vec![],
            stale: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("opening picture")
        .expect("ok")
        .expect("event");
    assert!(ev.initial);
    assert_eq!(
        ev.task.as_ref().map(|t| t.task_id.clone()),
        Some(first.tasks[0].task_id.clone())
    );

    let second = run(c.api(leader), "web", 1, "w2").await.expect("run");
    run(c.api(leader), "other", 1, "o2")
        .await
        .expect("run other");
    TasksClient::new(c.api(leader))
        .stop(StopTaskRequest {
            task_id: first.tasks[0].task_id.clone(),
            reason: "bye".into(),
        })
        .await
        .expect("stop");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("change")
            .expect("ok")
            .expect("event");
        assert!(!ev.initial);
        let t = ev.task.expect("task");
        assert_eq!(
            t.family, "web",
            "a task of another family leaked into the watch"
        );
        seen.push((t.task_id, t.desired_status, ev.revision));
    }
    assert_eq!(seen[0].0, second.tasks[0].task_id);
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        (first.tasks[0].task_id.as_str(), "STOPPED")
    );
    assert!(seen[1].2 > seen[0].2, "revisions must grow");
}
