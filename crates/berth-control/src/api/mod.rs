//! The public API, one module per gRPC service. Each handler validates its input, then
//! takes one of the node's two paths: `Node::write` (to the leader) or
//! `Node::read_barrier` followed by a read of the local applied state.

pub mod agents;
pub mod cluster;
pub mod events;
pub mod namespaces;
pub mod schedules;
pub mod secrets;
pub mod services;
pub mod task_definitions;
pub mod tasks;
pub mod tokens;
pub mod usage;

use berth_core::limits::MAX_ANSWER_BYTES;
use berth_core::quote;

use crate::error::{ApiError, ApiResult};

/// Whose token made the call, when the cluster takes tokens (the gate put it there).
pub(crate) fn caller<T>(req: &tonic::Request<T>) -> Option<crate::auth::Caller> {
    req.extensions().get::<crate::auth::Caller>().cloned()
}

/// The namespace the call acts in: the one the gate checked the caller's token for, or on
/// a cluster without tokens the `berth-namespace` header (default: `default`).
pub(crate) fn namespace<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    match caller(req) {
        Some(c) => Ok(c.namespace),
        None => crate::auth::namespace_of(req.metadata()),
    }
}

/// A user's name of a family or service, as the state names it in namespace `ns`.
pub(crate) fn qualify(ns: &str, field: &str, name: &str) -> ApiResult<String> {
    Ok(berth_core::namespace::qualify(ns, field, name)?)
}

/// `family` or `family:revision`, its family qualified by namespace `ns`.
pub(crate) fn definition_ref(ns: &str, field: &str, r: &str) -> ApiResult<(String, Option<u32>)> {
    let (family, revision) = berth_core::validate::task_definition_ref(r)?;
    Ok((qualify(ns, field, &family)?, revision))
}

/// Default and largest page for list calls (a page also ends at `MAX_ANSWER_BYTES`).
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

/// Task ids are 32 lowercase hex characters.
pub(crate) fn is_task_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Anything but a task id where one goes is a typo worth naming.
pub(crate) fn check_task_id(field: &str, id: &str) -> ApiResult<()> {
    if is_task_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{field} {} is not a task id (32 lowercase hex characters)",
            quote(id)
        )))
    }
}

/// One page of a list answer: at most `count` items and at most `MAX_ANSWER_BYTES` of
/// them, so that no stored object can push an answer past a client's message limit.
/// `more` says whether the listing ended early (more items, or more bytes, than fit);
/// the caller then hands out its last item's key as `nextToken`. A page holds at least one
/// item whatever its size, so paging always moves on.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

pub(crate) fn page<T: berth_proto::Message>(
    items: impl Iterator<Item = T>,
    count: usize,
) -> Page<T> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for item in items {
        let len = berth_proto::element_len(&item);
        if out.len() == count || (!out.is_empty() && bytes + len > MAX_ANSWER_BYTES) {
            return Page {
                items: out,
                more: true,
            };
        }
        bytes += len;
        out.push(item);
    }
    Page {
        items: out,
        more: false,
    }
}

pub(crate) fn unexpected(what: &str, outcome: &berth_core::Outcome) -> tonic::Status {
    tonic::Status::internal(format!("{what}: unexpected outcome {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::Task;

    fn task(id: usize, bytes: usize) -> Task {
        Task {
            task_id: format!("{id:032x}"),
            stopped_reason: "x".repeat(bytes),
            ..Default::default()
        }
    }

    #[test]
    fn a_page_ends_at_its_count() {
        let p = page((0..10).map(|i| task(i, 0)), 3);
        assert_eq!(p.items.len(), 3);
        assert!(p.more);
        let p = page((0..3).map(|i| task(i, 0)), 3);
        assert_eq!((p.items.len(), p.more), (3, false));
    }

    #[test]
    fn a_page_ends_before_its_bytes_pass_the_bound() {
        // 100 tasks of 64 KiB: 6.4 MB if listed at once, past a client's 4 MiB.
        let p = page((0..100).map(|i| task(i, 64 * 1024)), 1000);
        assert!(p.more);
        let bytes: usize = p.items.iter().map(berth_proto::element_len).sum();
        assert!(bytes <= MAX_ANSWER_BYTES, "{bytes}");
        // And it was full: the next one would have passed the bound.
        let next = berth_proto::element_len(&task(0, 64 * 1024));
        assert!(bytes + next > MAX_ANSWER_BYTES, "{bytes}");
    }

    #[test]
    fn one_item_larger_than_the_bound_still_makes_a_page() {
        let p = page((0..2).map(|i| task(i, MAX_ANSWER_BYTES + 1)), 1000);
        assert_eq!((p.items.len(), p.more), (1, true));
    }
}
