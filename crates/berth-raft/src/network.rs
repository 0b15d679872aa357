//! The client side of Raft between control nodes: openraft's RPCs over gRPC.
//!
//! openraft's messages travel as JSON inside a bytes field (they are openraft's own serde
//! types); snapshot chunks travel as raw bytes, since JSON would turn every byte into an
//! array element several times its size.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::internal::raft_client::RaftClient;
use berth_proto::internal::{RaftPayload, SnapshotChunk};
use berth_tls::grpc::Credentials;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::{BerthNode, NodeId, TypeConfig, MAX_RAFT_MESSAGE};

/// Lazy channels by address, one per peer for the life of the process: tonic channels
/// multiplex and reconnect by themselves, so sharing one costs nothing, while a fresh one
/// costs a name lookup, a TCP connect and an HTTP/2 handshake on first use. With
/// credentials, every channel is mutual TLS as their holder.
#[derive(Clone, Default)]
pub struct Channels {
    map: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<Credentials>>,
}

impl Channels {
    /// Channels that speak mutual TLS as `tls`'s holder (plaintext when `None`).
    pub fn new(tls: Option<Arc<Credentials>>) -> Self {
        Channels {
            map: Default::default(),
            tls,
        }
    }

    /// The channel to `addr`, made on first ask; `None` if the address does not parse.
    pub fn get(&self, addr: &str) -> Option<Channel> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Some(c.clone());
        }
        let c = lazy_channel(addr, self.tls.as_deref())?;
        map.insert(addr.to_string(), c.clone());
        Some(c)
    }
}

/// Makes clients to peers over shared [`Channels`]: openraft asks for a fresh client for
/// every vote request, and a fresh connection per vote had to fit into the vote's deadline
/// (the election timeout).
#[derive(Clone, Default)]
pub struct Network {
    channels: Channels,
}

impl Network {
    pub fn new(channels: Channels) -> Self {
        Network { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BerthNode) -> Self::Network {
        PeerClient {
            target,
            channel: self.channels.get(&node.raft_addr),
        }
    }
}

/// A channel to a peer's raft port (or an agent's port) that connects on first use, over
/// mutual TLS as `tls`'s holder when given. An address that does not parse yields `None`;
/// calls through it fail as unreachable rather than panicking.
pub fn lazy_channel(addr: &str, tls: Option<&Credentials>) -> Option<Channel> {
    let mut e = Endpoint::from_shared(berth_tls::grpc::uri(addr, tls.is_some())).ok()?;
    if let Some(creds) = tls {
        e = creds.secure(e).ok()?;
    }
    Some(
        e.connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

pub struct PeerClient {
    target: NodeId,
    channel: Option<Channel>,
}

/// Transport failures: the peer is down or unreachable, so openraft should back off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        let ch = self.channel.clone().ok_or_else(|| {
            Unreachable::new(&TransportError(format!(
                "node {} has an invalid address",
                self.target
            )))
        })?;
        Ok(RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE))
    }

    async fn call<Fut, Resp, E>(
        &self,
        ttl: Duration,
        fut: Fut,
    ) -> Result<Resp, RPCError<NodeId, BerthNode, RaftError<NodeId, E>>>
    where
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let resp = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    format!("node {} did not answer within {ttl:?}", self.target),
                ))))
            }
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&resp.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How long a call may take before this client gives up on it itself.
///
/// openraft bounds every append-entries, vote and snapshot call with the deadline it
/// passes in `option`, and reports a miss as a timeout, after which replication simply
/// sends again. This bound is only a backstop, later than openraft's: a miss reported from
/// here is `Unreachable`, which makes openraft pause replication to that peer for the
/// backoff (200 ms, no heartbeats either) — right for a peer that is gone, wrong for one
/// that is slow for a moment. On a loaded host a follower that took 150 ms to fsync an
/// append (deadline: one heartbeat, 100 ms) missed 300 ms of replication each time, and
/// right after a failover that follower is the only one the new leader can commit with.
fn backstop(option: &RPCOption) -> Duration {
    option.hard_ttl() * 2 + Duration::from_millis(50)
}

fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, BerthNode, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn payload<T: serde::Serialize, E: std::error::Error>(
    v: &T,
) -> Result<RaftPayload, RPCError<NodeId, BerthNode, RaftError<NodeId, E>>> {
    let json = serde_json::to_vec(v).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    Ok(RaftPayload { json })
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BerthNode, RaftError<NodeId>>> {
        let req = payload(&rpc)?;
        let mut client = self.client()?;
        self.call(backstop(&option), client.append_entries(req))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BerthNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let vote =
            serde_json::to_vec(&rpc.vote).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let meta =
            serde_json::to_vec(&rpc.meta).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let chunk = SnapshotChunk {
            vote,
            meta,
            offset: rpc.offset,
            done: rpc.done,
            data: rpc.data,
        };
        let mut client = self.client()?;
        self.call(backstop(&option), client.install_snapshot(chunk))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BerthNode, RaftError<NodeId>>> {
        let req = payload(&rpc)?;
        let mut client = self.client()?;
        self.call(backstop(&option), client.vote(req)).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A dead peer is retried every 200 ms: often enough to notice it is back within a
        // heartbeat or two, rarely enough not to spin.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backstop_leaves_openraft_its_own_deadline() {
        for ms in [1, 100, 300, 30_000] {
            let option = RPCOption::new(Duration::from_millis(ms));
            assert!(backstop(&option) > option.hard_ttl());
        }
    }
}
