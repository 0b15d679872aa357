use serde::{Deserialize, Serialize};

/// An API failure as callers see it. It crosses node boundaries (a follower forwarding to
/// the leader gets the leader's answer back), hence serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// This node is not the leader; the caller should find the leader and retry.
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ApiError::InvalidArgument(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::Unavailable(msg.into())
    }
}

impl From<berth_core::Error> for ApiError {
    fn from(e: berth_core::Error) -> Self {
        match e {
            berth_core::Error::InvalidArgument(m) => ApiError::InvalidArgument(m),
            berth_core::Error::NotFound(m) => ApiError::NotFound(m),
            berth_core::Error::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            berth_core::Error::AlreadyExists(m) => ApiError::AlreadyExists(m),
            berth_core::Error::Unauthenticated(m) => ApiError::Unauthenticated(m),
            berth_core::Error::PermissionDenied(m) => ApiError::PermissionDenied(m),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ApiError::NotFound(m) => tonic::Status::not_found(m),
            ApiError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            ApiError::AlreadyExists(m) => tonic::Status::already_exists(m),
            ApiError::Unavailable(m) => tonic::Status::unavailable(m),
            ApiError::Internal(m) => tonic::Status::internal(m),
            ApiError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            ApiError::NotLeader { leader } => tonic::Status::unavailable(match leader {
                Some(l) => format!("this node is not the leader; node {l} is"),
                None => "this node is not the leader and no leader is known".to_string(),
            }),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
