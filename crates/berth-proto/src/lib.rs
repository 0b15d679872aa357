//! Generated gRPC code for `proto/`, the encoded descriptor set (for server reflection),
//! and conversions between the wire messages and `berth-core`'s model.

pub mod convert;

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
