//! The server side of Raft between control nodes: hands each RPC to the local openraft.
//!
//! One thing is added on the way: a node that refuses a candidate because the candidate's
//! log is behind its own, at a time when no leader has reached it for a whole leader lease,
//! stands itself at once (see [`stand_after_refusal`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::internal::raft_server::{Raft as RaftRpc, RaftServer};
use berth_proto::internal::{RaftPayload, SnapshotChunk};
use openraft::raft::{InstallSnapshotRequest, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::{NodeId, Raft, TypeConfig, MAX_RAFT_MESSAGE};

pub struct RaftService {
    raft: Raft,
    heard: Arc<LeaderHeard>,
}

impl RaftService {
    pub fn server(raft: Raft) -> RaftServer<RaftService> {
        let lease = Duration::from_millis(raft.config().election_timeout_max);
        RaftServer::new(RaftService {
            raft,
            heard: Arc::new(LeaderHeard::new(lease)),
        })
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }
}

/// When a leader last reached this node (an append-entries or snapshot RPC), and the
/// highest term this node has already stood above on its own initiative.
struct LeaderHeard {
    born: Instant,
    /// Milliseconds since `born` of the last leader RPC, plus one; 0 while none came.
    last: AtomicU64,
    lease: Duration,
    stood_above: AtomicU64,
}

impl LeaderHeard {
    fn new(lease: Duration) -> Self {
        LeaderHeard {
            born: Instant::now(),
            last: AtomicU64::new(0),
            lease,
            stood_above: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64 + 1
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since a leader last reached this node; `None` if none ever did.
    fn silence(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            last => Some(Duration::from_millis(self.now_ms().saturating_sub(last))),
        }
    }

    fn leader_silent(&self) -> bool {
        self.silence().is_none_or(|s| s > self.lease)
    }
}

/// How many elections this node should start, back to back, after answering `req` with
/// `resp`; 0 for none.
///
/// openraft 0.9 refuses a candidate whose log is behind without taking the candidate's
/// term. Left alone, the refusing node (the one that can win) stands later for that same
/// term, which the candidate has already given itself, is refused in turn, and only wins
/// one more election timeout later: a second round of up to a second on a loaded machine.
/// Standing as soon as the refusal is made, for the term after the candidate's, skips
/// that round. openraft starts each election at its own term plus one, so reaching
/// `candidate + 1` from `ours` takes `candidate + 1 - ours` elections. A gap of more than
/// a few terms means a candidate that stood again and again while cut off; then nothing
/// is started, and the node's own timer stands after the lease as it always does.
///
/// Nothing changes while a leader is being heard: then the refusal is the leader lease's
/// (or a leader is about to be found), and standing would only disturb it.
pub(crate) fn stand_after_refusal(
    req: &VoteRequest<NodeId>,
    resp: &VoteResponse<NodeId>,
    leader_silent: bool,
) -> u64 {
    if resp.vote_granted || !leader_silent {
        return 0;
    }
    if resp.last_log_id <= req.last_log_id {
        // Not refused for its log: the candidate may win, or lost on votes alone.
        return 0;
    }
    let ours = resp.vote.leader_id().term;
    let theirs = req.vote.leader_id().term;
    if ours >= theirs {
        // This node already holds that term or a later one; its own timer stands for it.
        return 0;
    }
    match theirs + 1 - ours {
        n if n <= MAX_TERMS_TO_SKIP => n,
        _ => 0,
    }
}

/// Each election persists a vote before it is sent; a handful is cheap, dozens are not.
const MAX_TERMS_TO_SKIP: u64 = 4;

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
        self.heard.touch();
        answer(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = parse(&req.into_inner().json)?;
        let result = self.raft.vote(rpc.clone()).await;
        if let Ok(resp) = &result {
            // A leader ignores an election trigger anyway; it is not worth a log line.
            let leading = self.raft.metrics().borrow().state.is_leader();
            let silent = !leading && self.heard.leader_silent();
            let n = stand_after_refusal(&rpc, resp, silent);
            let target = resp.vote.leader_id().term + n;
            // One stand per term: the candidate's retries must not start more elections.
            if n > 0 && self.heard.stood_above.fetch_max(target, Ordering::Relaxed) < target {
                tracing::info!(
                    candidate = rpc.vote.leader_id().node_id,
                    candidate_term = rpc.vote.leader_id().term,
                    candidate_last_log = ?rpc.last_log_id.map(|l| l.index),
                    our_last_log = ?resp.last_log_id.map(|l| l.index),
                    leader_silent_ms = ?self.heard.silence().map(|s| s.as_millis()),
                    term = target,
                    "refused a candidate whose log is behind ours with no leader heard; standing at once"
                );
                let raft = self.raft.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        if let Err(e) = raft.trigger().elect().await {
                            tracing::warn!(error = %e, "could not start an election");
                            break;
                        }
                    }
                });
            }
        }
        answer(&result)
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
        self.heard.touch();
        answer(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Vote};

    fn req(term: u64, node: NodeId, last_index: u64) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, node), Some(log_id(last_index)))
    }

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    fn resp(vote: Vote<NodeId>, granted: bool, last_index: u64) -> VoteResponse<NodeId> {
        VoteResponse::new(vote, Some(log_id(last_index)), granted)
    }

    fn followed(term: u64, leader: NodeId) -> Vote<NodeId> {
        let mut v = Vote::new(term, leader);
        v.commit();
        v
    }

    #[test]
    fn a_refusal_for_a_shorter_log_after_the_leader_went_silent_stands_past_its_term() {
        // Followed leader 1 at term 3; candidate 2 stood at 4 with less log: stand at 5.
        assert_eq!(
            stand_after_refusal(&req(4, 2, 90), &resp(followed(3, 1), false, 100), true),
            2
        );
    }

    #[test]
    fn a_node_that_still_hears_a_leader_never_stands() {
        assert_eq!(
            stand_after_refusal(&req(4, 2, 90), &resp(followed(3, 1), false, 100), false),
            0
        );
    }

    #[test]
    fn a_granted_vote_or_a_refusal_not_about_the_log_leaves_the_timers_alone() {
        // Granted.
        assert_eq!(
            stand_after_refusal(&req(4, 2, 100), &resp(Vote::new(4, 2), true, 100), true),
            0
        );
        // Refused with the same log: the candidate's log is as good, it lost on votes.
        assert_eq!(
            stand_after_refusal(&req(4, 2, 100), &resp(Vote::new(4, 3), false, 100), true),
            0
        );
        // Refused with a longer candidate log.
        assert_eq!(
            stand_after_refusal(&req(4, 2, 120), &resp(followed(3, 1), false, 100), true),
            0
        );
    }

    #[test]
    fn a_node_already_at_the_candidates_term_or_past_it_waits_for_its_own_timer() {
        assert_eq!(
            stand_after_refusal(&req(4, 2, 90), &resp(Vote::new(4, 3), false, 100), true),
            0
        );
        assert_eq!(
            stand_after_refusal(&req(4, 2, 90), &resp(Vote::new(6, 3), false, 100), true),
            0
        );
    }

    #[test]
    fn a_candidate_a_few_terms_ahead_is_passed_and_one_far_ahead_left_to_the_timer() {
        assert_eq!(
            stand_after_refusal(&req(6, 2, 90), &resp(followed(3, 1), false, 100), true),
            4
        );
        assert_eq!(
            stand_after_refusal(&req(40, 2, 90), &resp(followed(3, 1), false, 100), true),
            0
        );
    }
}
