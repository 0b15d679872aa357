//! Berth's domain model and its replicated state machine.
//!
//! Everything here is deterministic and free of I/O: time and identifiers arrive inside
//! commands, so every control node that applies the same log reaches the same state.
//! The control plane proposes [`command::Batch`]es through Raft and every replica runs
//! [`state::ClusterState::apply`] on them.

pub mod access;
pub mod command;
pub mod error;
pub mod limits;
pub mod model;
pub mod namespace;
pub mod quote;
pub mod scaling;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod size;
pub mod state;
pub mod usage;
pub mod utilization;
pub mod validate;

pub use command::{Batch, Command, CommandResult, Outcome};
pub use error::Error;
pub use model::*;
pub use quote::quote;
pub use service::{Service, ServiceEvent, ServiceStatus};
pub use state::ClusterState;

/// A request's fingerprint: a stable hash of its JSON form, taken by callers with the client
/// token cleared, so that a retry with the same token and the same request matches.
pub fn fingerprint<T: serde::Serialize>(request: &T) -> u64 {
    // Serialising a struct of plain fields cannot fail.
    fnv1a(&serde_json::to_vec(request).unwrap_or_default())
}

/// 64-bit FNV-1a. Used where a stable, platform-independent hash must agree across
/// replicas and releases (request fingerprints, state digests); `std`'s hasher promises
/// neither.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
