//! A backstop for openraft's election timer.
//!
//! openraft 0.9 lets a follower stand once it has heard no leader for the leader lease
//! (`election-max`) plus its own timeout (drawn once per start from `election-min`..
//! `election-max`). When a vote response once showed it a longer log than its own, it adds
//! 2 × `election-max` to that, so that the node with the longer log stands first. The flag
//! is cleared only when the node next stands on its own timer, so it outlives the election
//! it came from: after a few elections both followers of a leader can carry it, and when
//! that leader dies neither stands for a further second (seen in the chaos suite: leader
//! kills bunched at ~1 s and ~2 s, the slow ones with no vote asked for until ~1.9 s after
//! the last write).
//!
//! This loop stands in openraft's place once its longest ordinary wait has passed by a
//! random margin. A node with the longer log and no flag still stands first, on its own
//! timer, so the flag's purpose is kept; only a stale flag stops delaying the cluster.
//! Standing at any time is safe in Raft; this only decides when.
//!
//! The same check also times the Raft loop's answer: while the loop is busy (a flush it
//! waits for, a starved runtime) the node neither counts down its election timer nor
//! answers votes and appends, so a late answer is logged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::ServerState;

use crate::{NodeId, Raft, RaftTuning};

/// A Raft loop that takes this long to answer a question needing no work is logged.
const LATE_ANSWER: Duration = Duration::from_millis(300);

/// How long a node whose vote is `committed` (it follows an elected leader) or not may go
/// without hearing a leader before openraft's timer, with no flag, would have made it
/// stand at the latest.
pub fn ordinary_wait(committed: bool, tuning: &RaftTuning) -> Duration {
    if committed {
        // Leader lease plus the longest timeout.
        tuning.election_max * 2
    } else {
        tuning.election_max
    }
}

/// Whether to stand now: a follower or candidate, silent past its ordinary wait plus
/// `margin`.
pub fn late(
    state: ServerState,
    committed: bool,
    silent: Duration,
    margin: Duration,
    tuning: &RaftTuning,
) -> bool {
    matches!(state, ServerState::Follower | ServerState::Candidate)
        && silent >= ordinary_wait(committed, tuning) + margin
}

/// A small generator for the margins: nodes that went silent together must not all stand
/// at the same moment.
struct Jitter(u64);

impl Jitter {
    fn new(id: NodeId) -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Jitter((nanos ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Uniform-enough in `0..=spread`.
    fn next(&mut self, spread: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let spread_ms = spread.as_millis() as u64;
        Duration::from_millis(self.0 % (spread_ms + 1))
    }
}

/// Checks every half heartbeat how long this node has gone without hearing a leader (or
/// granting a vote, which restarts openraft's wait too), and stands when openraft's timer
/// is late; warns when the Raft loop itself answered late. Returns when `stop` completes
/// (before Raft is shut down: asking a stopped Raft loop is logged by openraft as an error) or
/// when the Raft loop has stopped.
pub async fn watch(
    raft: Raft,
    id: NodeId,
    tuning: RaftTuning,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let tick = (tuning.heartbeat / 2).max(Duration::from_millis(10));
    let spread = tuning.election_max.saturating_sub(tuning.election_min);
    let mut jitter = Jitter::new(id);
    let mut margin = jitter.next(spread);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut stop => return,
        }
        let asked = Instant::now();
        let seen = raft
            .with_raft_state(|s| {
                (
                    s.server_state,
                    s.vote_ref().is_committed(),
                    s.vote_last_modified().map(|t| t.elapsed()),
                )
            })
            .await;
        let took = asked.elapsed();
        if took >= LATE_ANSWER {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "the Raft loop answered late; elections and replication waited as long"
            );
        }
        let Ok((state, committed, Some(silent))) = seen else {
            if seen.is_err() {
                return;
            }
            continue;
        };
        if !late(state, committed, silent, margin, &tuning) {
            continue;
        }
        tracing::info!(
            silent_ms = silent.as_millis() as u64,
            "no leader heard past the election timeout and the timer has not fired; standing"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
        margin = jitter.next(spread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_follower_stands_only_past_the_lease_and_the_longest_timeout() {
        let t = RaftTuning::default();
        // Defaults: election 300..500 ms, so lease + longest timeout is 1 s.
        assert!(!late(ServerState::Follower, true, ms(999), ms(0), &t));
        assert!(late(ServerState::Follower, true, ms(1000), ms(0), &t));
        assert!(!late(ServerState::Follower, true, ms(1100), ms(150), &t));
        assert!(late(ServerState::Follower, true, ms(1150), ms(150), &t));
    }

    #[test]
    fn with_no_elected_leader_the_lease_does_not_count() {
        let t = RaftTuning::default();
        assert!(!late(ServerState::Candidate, false, ms(499), ms(0), &t));
        assert!(late(ServerState::Candidate, false, ms(500), ms(0), &t));
        assert!(late(ServerState::Follower, false, ms(500), ms(0), &t));
    }

    #[test]
    fn leaders_and_learners_never_stand() {
        let t = RaftTuning::default();
        for s in [
            ServerState::Leader,
            ServerState::Learner,
            ServerState::Shutdown,
        ] {
            assert!(!late(s, true, ms(60_000), ms(0), &t), "{s:?}");
            assert!(!late(s, false, ms(60_000), ms(0), &t), "{s:?}");
        }
    }

    #[test]
    fn margins_stay_within_the_spread_and_vary() {
        let mut j = Jitter::new(3);
        let drawn: Vec<Duration> = (0..200).map(|_| j.next(ms(200))).collect();
        assert!(drawn.iter().all(|d| *d <= ms(200)));
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 50, "{} distinct margins", distinct.len());
        assert_eq!(Jitter::new(1).next(ms(0)), ms(0));
    }
}
