//! The server side of Raft between control nodes: hands each RPC to the local openraft.

use berth_proto::internal::raft_server::{Raft as RaftRpc, RaftServer};
use berth_proto::internal::{RaftPayload, SnapshotChunk};
use openraft::raft::InstallSnapshotRequest;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::{Raft, TypeConfig, MAX_RAFT_MESSAGE};

pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn server(raft: Raft) -> RaftServer<RaftService> {
        RaftServer::new(RaftService { raft })
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))
}

fn answer<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(v)
        .map(|json| Response::new(RaftPayload { json }))
        .map_err(|e| Status::internal(format!("cannot encode raft answer: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = parse(&req.into_inner().json)?;
        answer(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = parse(&req.into_inner().json)?;
        answer(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<SnapshotChunk>,
    ) -> Result<Response<RaftPayload>, Status> {
        let c = req.into_inner();
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: parse(&c.vote)?,
            meta: parse(&c.meta)?,
            offset: c.offset,
            data: c.data,
            done: c.done,
        };
        answer(&self.raft.install_snapshot(rpc).await)
    }
}
