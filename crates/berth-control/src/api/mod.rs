//! The public API, one module per gRPC service. Each handler validates its input, then
//! takes one of the node's two paths: `Node::write` (to the leader) or
//! `Node::read_barrier` followed by a read of the local applied state.

pub mod agents;
pub mod cluster;
pub mod task_definitions;
pub mod tasks;

use crate::error::{ApiError, ApiResult};

/// Default and largest page for list calls.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

pub(crate) fn page_size(max_results: u32) -> ApiResult<usize> {
    match max_results as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(ApiError::invalid(format!(
            "maxResults {n} is above the limit of {MAX_PAGE}"
        ))),
    }
}

/// Task ids are 32 lowercase hex characters; anything else is a typo worth naming.
pub(crate) fn check_task_id(field: &str, id: &str) -> ApiResult<()> {
    if id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{field} `{id}` is not a task id (32 lowercase hex characters)"
        )))
    }
}

pub(crate) fn unexpected(what: &str, outcome: &berth_core::Outcome) -> tonic::Status {
    tonic::Status::internal(format!("{what}: unexpected outcome {outcome:?}"))
}
