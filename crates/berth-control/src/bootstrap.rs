//! Cluster formation. Exactly one node — the lowest id among the initial peers — may
//! initialise the cluster, and only after every initial peer has answered and none of them
//! already belongs to a cluster. So racing starts cannot bootstrap twice, and a node whose
//! disk was wiped cannot found a second cluster beside the first: it finds its peers
//! initialised, stays blank, and is caught up by the leader like any lagging member.
//!
//! The price: the very first start needs every initial peer up once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::InfoRequest;
use berth_raft::BerthNode;

use crate::internal::local_info;
use crate::node::Node;

const RETRY: Duration = Duration::from_millis(500);

pub(crate) async fn run(node: Arc<Node>) {
    let peers = node.cfg.peers.clone();
    let Some(&lowest) = peers.keys().next() else {
        tracing::info!("no --peers given: waiting to be joined to a cluster");
        return;
    };
    if !peers.contains_key(&node.id) {
        tracing::warn!(
            id = node.id,
            "this node is not among --peers; waiting to be joined to a cluster"
        );
        return;
    }
    if lowest != node.id {
        return;
    }
    let mut waiting_logged = false;
    while !node.shutdown.is_triggered() {
        if local_info(&node, false).initialized {
            return;
        }
        match survey(&node, &peers).await {
            Survey::SomeoneInitialized(id) => {
                tracing::info!(
                    peer = id,
                    "a peer already belongs to a cluster; not bootstrapping"
                );
                return;
            }
            Survey::Missing(ids) => {
                if !waiting_logged {
                    tracing::info!(
                        ?ids,
                        "waiting for every initial peer to answer before forming the cluster"
                    );
                    waiting_logged = true;
                }
            }
            Survey::Ready(members) => match node.raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(id = node.id, "cluster formed");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "initialising the cluster failed; retrying"),
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = node.shutdown.wait() => return,
        }
    }
}

enum Survey {
    Ready(BTreeMap<u64, BerthNode>),
    Missing(Vec<u64>),
    SomeoneInitialized(u64),
}

async fn survey(node: &Node, peers: &BTreeMap<u64, String>) -> Survey {
    let mut members = BTreeMap::new();
    let mut missing = Vec::new();
    for (&id, addr) in peers {
        if id == node.id {
            members.insert(
                id,
                BerthNode {
                    raft_addr: node.cfg.raft_advertise.clone(),
                    api_addr: node.cfg.api_advertise.clone(),
                },
            );
            continue;
        }
        let Ok(ch) = node.channel(addr) else {
            missing.push(id);
            continue;
        };
        let mut client = NodeClient::new(ch);
        match tokio::time::timeout(
            Duration::from_secs(1),
            client.info(InfoRequest { digest: false }),
        )
        .await
        {
            Ok(Ok(info)) => {
                let info = info.into_inner();
                if info.id != id {
                    tracing::error!(
                        expected = id,
                        answered = info.id,
                        %addr,
                        "the peer at this address has another id; fix --peers"
                    );
                    missing.push(id);
                    continue;
                }
                if info.initialized {
                    return Survey::SomeoneInitialized(id);
                }
                members.insert(
                    id,
                    BerthNode {
                        raft_addr: addr.clone(),
                        api_addr: info.api_address,
                    },
                );
            }
            _ => missing.push(id),
        }
    }
    if missing.is_empty() {
        Survey::Ready(members)
    } else {
        Survey::Missing(missing)
    }
}
