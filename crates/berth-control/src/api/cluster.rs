use std::sync::Arc;
use std::time::Duration;

use berth_core::{quote, Outcome};
use berth_proto::internal::node_client::NodeClient;
use berth_proto::internal::{InfoRequest, NodeInfo};
use berth_proto::v1::cluster_server::Cluster;
use berth_proto::v1::*;
use berth_raft::BerthNode;
use tonic::{Request, Response, Status};

use super::unexpected;
use crate::error::ApiError;
use crate::internal::local_info;
use crate::node::{LeaderRequest, Node, SettingsUpdate, WriteRequest};

/// How long Status waits to catch up with the leader before answering from local state.
const STATUS_BARRIER_WAIT: Duration = Duration::from_secs(1);

/// Highest price per hour accepted, in the price table's currency.
const MAX_PRICE: f64 = 1000.0;

/// A price per hour from the wire, in nano-units.
fn price_nanos(field: &str, p: f64) -> Result<u64, ApiError> {
    if !p.is_finite() || !(0.0..=MAX_PRICE).contains(&p) {
        return Err(ApiError::invalid(format!(
            "{field} {p} is outside 0..={MAX_PRICE}"
        )));
    }
    Ok((p * 1e9).round() as u64)
}

pub(crate) fn nanos_price(n: u64) -> f64 {
    n as f64 / 1e9
}

pub struct ClusterApi {
    pub node: Arc<Node>,
}

/// How long status waits for each member's own figures.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(700);

impl ClusterApi {
    /// Every member of the membership this node knows, each asked for its own figures.
    async fn members(&self) -> Vec<Member> {
        let (voters, nodes): (Vec<u64>, Vec<(u64, BerthNode)>) = {
            let m = self.node.raft.metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            (
                mem.voter_ids().collect(),
                mem.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            )
        };
        let mut set = tokio::task::JoinSet::new();
        for (id, n) in nodes {
            let voter = voters.contains(&id);
            let node = self.node.clone();
            set.spawn(async move {
                let info = if id == node.id {
                    Ok(local_info(&node, false))
                } else {
                    ask(&node, &n).await
                };
                let mut member = Member {
                    id,
                    raft_address: n.raft_addr.clone(),
                    api_address: n.api_addr.clone(),
                    voter,
                    ..Default::default()
                };
                match info {
                    Ok(i) => {
                        member.role = i.state;
                        member.term = i.term;
                        member.last_log_index = i.last_log_index;
                        member.applied_index = i.applied_index;
                    }
                    Err(e) => {
                        member.role = "unreachable".into();
                        member.error = e;
                    }
                }
                member
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(m) = r {
                out.push(m);
            }
        }
        out.sort_by_key(|m| m.id);
        out
    }
}

async fn ask(node: &Node, n: &BerthNode) -> Result<NodeInfo, String> {
    let ch = node.channel(&n.raft_addr).map_err(|e| e.to_string())?;
    let mut client = NodeClient::new(ch);
    match tokio::time::timeout(MEMBER_TIMEOUT, client.info(InfoRequest { digest: false })).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err(format!("no answer within {MEMBER_TIMEOUT:?}")),
    }
}

fn check_addr(field: &str, a: &str) -> Result<(), ApiError> {
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "{field} {} must be HOST:PORT",
            quote(a)
        ))),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn status(
        &self,
        _req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        // Up to date with the leader where one answers (a setting just changed through
        // another node shows here), and still an answer, from this node's state, where none
        // does: status is what an operator asks during an outage.
        // A token revoked before the call is refused all the same (the barrier checks it
        // again on the state it reaches).
        if let Ok(Err(e @ (ApiError::Unauthenticated(_) | ApiError::PermissionDenied(_)))) =
            tokio::time::timeout(STATUS_BARRIER_WAIT, self.node.read_barrier(false)).await
        {
            return Err(e.into());
        }
        let members = self.members().await;
        let s = self.node.state.read();
        Ok(Response::new(ClusterStatusResponse {
            leader_id: self.node.current_leader().unwrap_or(0),
            members,
            node_id: self.node.id,
            revision: s.state.revision(),
            free_sizing: s.state.settings().free_sizing,
            vcpu_hour_price: nanos_price(s.state.settings().prices.vcpu_hour_nanos),
            gib_hour_price: nanos_price(s.state.settings().prices.gib_hour_nanos),
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(ApiError::invalid("id: node ids start at 1").into());
        }
        check_addr("raftAddress", &req.raft_address)?;
        check_addr("apiAddress", &req.api_address)?;
        if let Some(existing) = self.node.member(req.id) {
            if existing.raft_addr != req.raft_address {
                return Err(ApiError::AlreadyExists(format!(
                    "node {} is already a member at {}; remove it first to re-add it elsewhere",
                    req.id, existing.raft_addr
                ))
                .into());
            }
        }
        let node = BerthNode {
            raft_addr: req.raft_address,
            api_addr: req.api_address,
        };
        // Membership is not a state write checked at apply: the caller's token is checked
        // on a state at least as new as the call.
        self.node.read_barrier(false).await?;
        self.node
            .leader_call(LeaderRequest::Join { id: req.id, node })
            .await?;
        Ok(Response::new(JoinResponse {
            members: self.members().await,
        }))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let id = req.into_inner().id;
        // An empty request is refused as Join refuses one, not looked up as node 0.
        if id == 0 {
            return Err(ApiError::invalid("id: node ids start at 1").into());
        }
        self.node.read_barrier(false).await?;
        self.node.leader_call(LeaderRequest::Leave { id }).await?;
        Ok(Response::new(LeaveResponse {
            members: self.members().await,
        }))
    }

    async fn update_settings(
        &self,
        req: Request<UpdateSettingsRequest>,
    ) -> Result<Response<UpdateSettingsResponse>, Status> {
        let by = super::caller(&req);
        let req = req.into_inner();
        // Proto3 reads an absent bool as false: without `optional`, `UpdateSettings {}`
        // turned free sizing off. A request must say what it sets.
        if req.free_sizing.is_none()
            && req.vcpu_hour_price.is_none()
            && req.gib_hour_price.is_none()
        {
            return Err(ApiError::invalid(
                "the request sets nothing: give freeSizing, vcpuHourPrice or gibHourPrice",
            )
            .into());
        }
        let update = SettingsUpdate {
            free_sizing: req.free_sizing,
            vcpu_hour_nanos: req
                .vcpu_hour_price
                .map(|p| price_nanos("vcpuHourPrice", p))
                .transpose()?,
            gib_hour_nanos: req
                .gib_hour_price
                .map(|p| price_nanos("gibHourPrice", p))
                .transpose()?,
        };
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::UpdateSettings(update))
            .await?;
        match &outcome {
            Outcome::Settings(s) => Ok(Response::new(UpdateSettingsResponse {
                free_sizing: s.free_sizing,
                revision,
                vcpu_hour_price: nanos_price(s.prices.vcpu_hour_nanos),
                gib_hour_price: nanos_price(s.prices.gib_hour_nanos),
            })),
            other => Err(unexpected("update settings", other)),
        }
    }
}
