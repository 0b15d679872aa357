//! Generated gRPC code for `proto/`, the encoded descriptor set (for server reflection),
//! and conversions between the wire messages and `berth-core`'s model.

pub mod bearer;
pub mod convert;

/// The wire messages' trait, for servers that measure what they send (see [`element_len`]).
pub use prost::Message;

/// The public API.
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

/// Raft, node-to-node and agent RPCs (the raft port).
pub mod internal {
    tonic::include_proto!("berth.internal.v1");
}

/// The public package's descriptors, for `grpc.reflection` on the API port.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_v1_descriptor");

/// Bytes `m` adds to an answer as one element of a repeated field (its tag, its length and
/// itself), so that a server can bound an answer in bytes as it builds it.
pub fn element_len<M: prost::Message>(m: &M) -> usize {
    // Every repeated field of an answer has a tag below 16: one byte of key.
    prost::encoding::message::encoded_len(1, m)
}
