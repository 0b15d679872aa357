use serde::{Deserialize, Serialize};

/// Why a request was refused. Each variant maps one-to-one onto a gRPC status code at the
/// API edge, and the message is meant for a person: it names the field or object at fault.
///
/// The state machine returns these from `apply`, so they are serialisable and compared
/// across replicas; they never carry anything non-deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller's token is unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's token does not allow this.
    #[error("{0}")]
    PermissionDenied(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn precondition(msg: impl Into<String>) -> Self {
        Error::FailedPrecondition(msg.into())
    }
}
