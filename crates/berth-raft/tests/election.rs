//! Elections among three in-process nodes over real gRPC on loopback and real sled stores:
//! a follower that refuses a candidate for its short log, with no leader heard, stands at
//! once and wins; one that still hears a leader leaves it alone; a follower that openraft
//! flagged for once seeing a longer log stands at the ordinary time when its leader dies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::Batch;
use berth_proto::internal::raft_client::RaftClient;
use berth_proto::internal::RaftPayload;
use berth_raft::network::Network;
use berth_raft::service::RaftService;
use berth_raft::store::{open, StoreError};
use berth_raft::{BerthNode, NodeId, Raft, RaftTuning};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{ServerState, Vote};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

struct Node {
    raft: Raft,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    backstop: Option<JoinHandle<()>>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    addrs: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Node>,
    tuning: RaftTuning,
}

/// Opens a store, waiting while a stopped node of this process still holds its lock
/// (sled's I/O threads let go of the file a moment after the instance is dropped).
fn open_store(path: &Path) -> (berth_raft::store::LogStore, berth_raft::store::StateMachine) {
    for _ in 0..100 {
        match open(path) {
            Err(StoreError::Sled(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(s) => return s,
            Err(e) => panic!("cannot open the store at {}: {e}", path.display()),
        }
    }
    panic!("the store at {} stayed locked", path.display());
}

impl Cluster {
    async fn new(ids: &[NodeId]) -> Cluster {
        Cluster::with_tuning(ids, RaftTuning::default()).await
    }

    async fn with_tuning(ids: &[NodeId], tuning: RaftTuning) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut addrs = BTreeMap::new();
        for &id in ids {
            // Bind to learn a free port, then let it go for the node to take.
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            addrs.insert(id, l.local_addr().expect("addr"));
        }
        let mut c = Cluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            addrs,
            nodes: BTreeMap::new(),
            tuning,
        };
        for &id in ids {
            c.start(id).await;
        }
        c
    }

    async fn start(&mut self, id: NodeId) {
        self.start_with(id, false).await
    }

    /// Starts a node, with the control node's election backstop beside it or not.
    async fn start_with(&mut self, id: NodeId, backstop: bool) {
        let (log, sm) = open_store(&self.root.join(id.to_string()));
        let config = Arc::new(self.tuning.to_config().expect("config"));
        let raft = Raft::new(id, config, Network::default(), log, sm)
            .await
            .expect("raft starts");
        let listener = TcpListener::bind(self.addrs[&id]).await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = RaftService::server(raft.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        let backstop = backstop.then(|| {
            tokio::spawn(berth_raft::election::watch(
                raft.clone(),
                id,
                self.tuning.clone(),
                std::future::pending(),
            ))
        });
        self.nodes.insert(
            id,
            Node {
                raft,
                stop,
                server,
                backstop,
            },
        );
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("running node");
        if let Some(b) = node.backstop {
            b.abort();
        }
        let _ = node.stop.send(());
        node.server.abort();
        let _ = node.server.await;
        node.raft.shutdown().await.expect("raft shuts down");
    }

    fn raft(&self, id: NodeId) -> &Raft {
        &self.nodes[&id].raft
    }

    async fn initialize(&self, first: NodeId) {
        let members: BTreeMap<NodeId, BerthNode> = self
            .addrs
            .iter()
            .map(|(&id, a)| {
                (
                    id,
                    BerthNode {
                        raft_addr: a.to_string(),
                        api_addr: String::new(),
                    },
                )
            })
            .collect();
        self.raft(first)
            .initialize(members)
            .await
            .expect("initialize");
    }

    /// The leader that every running node agrees on, waiting up to `within`.
    async fn leader(&self, within: Duration) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|n| n.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = seen.first() {
                if self.nodes.contains_key(l)
                    && seen.iter().all(|s| s == &Some(*l))
                    && self.raft(*l).metrics().borrow().state == ServerState::Leader
                {
                    return Some(*l);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn write(&self, leader: NodeId, n: usize) {
        for i in 0..n {
            self.raft(leader)
                .client_write(Batch {
                    now: i as u64,
                    commands: Vec::new(),
                })
                .await
                .expect("write through the leader");
        }
    }

    fn last_index(&self, id: NodeId) -> u64 {
        self.raft(id)
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or_default()
    }

    /// Waits (up to `tries` × 20 ms) until every node in `ids` holds the log up to `target`.
    async fn catch_up(&self, ids: &[NodeId], target: u64, tries: u32) {
        for _ in 0..tries {
            if ids.iter().all(|&id| self.last_index(id) >= target) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn term(&self, id: NodeId) -> u64 {
        self.raft(id).metrics().borrow().current_term
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_follower_with_the_longer_log_stands_when_it_refuses_a_shorter_one() {
    let mut c = Cluster::new(&[1, 2, 3]).await;
    c.initialize(1).await;
    let leader = c.leader(Duration::from_secs(10)).await.expect("a leader");
    let mut followers = c.nodes.keys().copied().filter(|&id| id != leader);
    let (behind, ahead) = (followers.next().unwrap(), followers.next().unwrap());

    // `behind` misses entries that the leader and `ahead` commit; then the leader dies.
    c.stop(behind).await;
    c.write(leader, 20).await;
    c.catch_up(&[ahead], c.last_index(leader), 100).await;
    c.stop(leader).await;
    let ahead_index = c.last_index(ahead);

    // Neither stands on its own timer: `behind` stands once, when told, and only the
    // refusal can make `ahead` stand.
    c.raft(ahead).runtime_config().elect(false);
    c.start(behind).await;
    c.raft(behind).runtime_config().elect(false);
    assert!(
        c.last_index(behind) < ahead_index,
        "the restarted node must be behind ({} vs {ahead_index})",
        c.last_index(behind)
    );
    // Past the leader lease on `ahead`, so that the lease is not what refuses.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let term_before = c.term(ahead);
    c.raft(behind).trigger().elect().await.expect("elect");

    let new_leader = c.leader(Duration::from_secs(5)).await;
    assert_eq!(
        new_leader,
        Some(ahead),
        "the node with the longer log should have stood after refusing the shorter one"
    );
    assert!(
        c.term(ahead) > term_before + 1,
        "it stood past the candidate's term"
    );
    // The new leader's log reaches the node that was behind.
    c.write(ahead, 1).await;
    let target = c.last_index(ahead);
    c.catch_up(&[behind], target, 250).await;
    assert_eq!(c.last_index(behind), target);

    // A stale candidate (the dead leader, with no log at all) asks `behind`, which hears
    // `ahead`: it is refused, and `behind` must not stand; leadership and terms stay.
    let (term_ahead, term_behind) = (c.term(ahead), c.term(behind));
    let req: VoteRequest<NodeId> = VoteRequest::new(Vote::new(term_behind + 1, leader), None);
    let mut client = RaftClient::new(
        berth_raft::network::lazy_channel(&c.addrs[&behind].to_string(), None).expect("channel"),
    );
    let answer = client
        .vote(RaftPayload {
            json: serde_json::to_vec(&req).expect("encode"),
        })
        .await
        .expect("vote rpc")
        .into_inner();
    let answer: Result<VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
        serde_json::from_slice(&answer.json).expect("decode");
    assert!(!answer.expect("vote answered").vote_granted);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.leader(Duration::from_secs(5)).await, Some(ahead));
    assert_eq!(
        (c.term(ahead), c.term(behind)),
        (term_ahead, term_behind),
        "a node hearing its leader stood anyway"
    );

    for id in [ahead, behind] {
        c.stop(id).await;
    }
}

/// openraft 0.9 makes a node that once saw a longer log in a vote response wait a further
/// 2 × `election-max` before it next stands, and forgets that only when it stands on its
/// own timer. Here the flagged node's peer is kept from standing (as if it carried the same
/// flag), so without the backstop the flagged node would stand 2 × `election-max` late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_once_saw_a_longer_log_stands_on_time_when_its_leader_dies() {
    // Long, narrow timers, so that on time and late are far apart: openraft stands a
    // follower 1.9–2.0 s after its leader's last word, a flagged one 3.9–4.0 s after.
    let tuning = RaftTuning {
        election_min: Duration::from_millis(900),
        election_max: Duration::from_millis(1000),
        ..RaftTuning::default()
    };
    let mut c = Cluster::with_tuning(&[1, 2, 3], tuning).await;
    c.initialize(1).await;
    let first = c.leader(Duration::from_secs(15)).await.expect("a leader");
    let mut followers = c.nodes.keys().copied().filter(|&id| id != first);
    let (flagged, second) = (followers.next().unwrap(), followers.next().unwrap());

    // `flagged` misses entries, the leader dies, and `flagged` stands with its short log:
    // `second` refuses it with a longer one (openraft flags `flagged`) and then wins.
    c.stop(flagged).await;
    c.write(first, 20).await;
    c.catch_up(&[second], c.last_index(first), 100).await;
    c.stop(first).await;
    c.start_with(flagged, true).await;
    assert!(c.last_index(flagged) < c.last_index(second));
    c.raft(flagged).trigger().elect().await.expect("elect");
    assert_eq!(c.leader(Duration::from_secs(10)).await, Some(second));

    // The old leader comes back unable to stand on its own; everyone catches up.
    c.start(first).await;
    c.raft(first).runtime_config().elect(false);
    c.write(second, 1).await;
    let target = c.last_index(second);
    c.catch_up(&[first, flagged], target, 250).await;
    assert_eq!(
        (c.last_index(first), c.last_index(flagged)),
        (target, target)
    );

    // The leader dies; only `flagged` can stand.
    let died = tokio::time::Instant::now();
    c.stop(second).await;
    let new_leader = c.leader(Duration::from_secs(8)).await;
    let took = died.elapsed();
    assert_eq!(new_leader, Some(flagged));
    assert!(
        took < Duration::from_millis(3200),
        "the flagged follower stood {took:?} after its leader died; on time is 2.0–2.1 s"
    );

    for id in [first, flagged] {
        c.stop(id).await;
    }
}
