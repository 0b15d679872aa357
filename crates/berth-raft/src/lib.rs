//! Raft for Berth: the openraft type configuration (declared once, here), the sled-backed
//! log and state-machine store, and the gRPC network between control nodes.
//!
//! The API services never touch openraft's wire types; they go through `berth-control`,
//! which owns the `Raft` handle.

// openraft's error types (StorageError, RPCError, ConfigError) are large by design and
// its traits return them by value; boxing them here would fight its API.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod election;
pub mod network;
pub mod service;
pub mod store;

use std::fmt;
use std::io::Cursor;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What membership records about each control node: where its peers reach it for Raft
/// and node-to-node calls, and where users reach its public API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BerthNode {
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for BerthNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Berth's Raft types: one log entry carries one batch of commands (group commit), and
    /// its response is one result per command.
    pub TypeConfig:
        D = berth_core::Batch,
        R = Vec<berth_core::CommandResult>,
        NodeId = u64,
        Node = BerthNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;

/// Timing and compaction knobs, with defaults measured on a loaded 2-core machine (see
/// BENCHMARKS.md): openraft's own defaults (50 ms heartbeat, 150–300 ms election) flap
/// there.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches
    /// up from the log instead of a full snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(500),
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
        }
    }
}

impl RaftTuning {
    pub fn to_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: "berth".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            // A 100k-task state is tens of MiB; the default 200 ms would never finish.
            install_snapshot_timeout: 30_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            // Chunks stay well under the 64 MiB message limit of the raft port.
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            max_payload_entries: 64,
            ..Default::default()
        };
        config.validate()
    }
}

/// Largest message on the raft port (append-entries batches, snapshot chunks).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;
