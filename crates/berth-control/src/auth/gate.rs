//! A control node's answer to "may this call run": the token checked on the node's own
//! applied state, which a follower may not have caught up on. A token the node does not
//! know yet sends it to the leader for the latest state before it is refused; the cluster's
//! first admin token (`admin.token`) is written to the state by the first call that shows
//! it, or by the leader as soon as it is elected, whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use berth_core::access::{self, Need};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::{bearer, check, digest, Caller, Check};
use crate::error::ApiError;
use crate::node::{Node, WriteRequest};

/// The node's [`Check`], for its API port's [`super::AuthLayer`].
pub fn check_with(node: Arc<Node>) -> Check {
    Arc::new(move |need, headers: &http::HeaderMap| {
        let node = node.clone();
        let md = MetadataMap::from_headers(headers.clone());
        Box::pin(async move { authenticate(&node, &md, need).await })
    })
}

async fn authenticate(node: &Node, md: &MetadataMap, need: Need) -> Result<Caller, Status> {
    let text = bearer(md)?;
    let (accessor, _) =
        access::parse_token(text).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let (known, bootstrapped) = {
        let s = node.state.read();
        (
            s.state.access_token(accessor).is_some(),
            s.state.access_bootstrapped(),
        )
    };
    if !known {
        let first = node.cfg.initial_admin.as_ref();
        if !bootstrapped && first.is_some_and(|f| f.digest == digest(text)) {
            bootstrap(node).await?;
        }
        // Made on another node a moment ago, perhaps: catch up before saying no.
        node.read_barrier(false).await.map_err(Status::from)?;
        if !node.state.read().state.access_bootstrapped() {
            return Err(Status::unauthenticated(
                "this cluster has no tokens yet: its first is the admin.token file that \
                 `berth tls init` writes beside the certificates, taken by control nodes \
                 started with that --tls-dir (`berth tls admin-token --dir DIR` makes one for \
                 an older directory); give the CLI --token-file DIR/admin.token",
            ));
        }
    }
    let s = node.state.read();
    check(&s.state, md, need)
}

/// Proposes the configured first admin token; losing the race to another node is fine.
async fn bootstrap(node: &Node) -> Result<(), Status> {
    let Some(first) = node.cfg.initial_admin.clone() else {
        return Ok(());
    };
    match node.write(WriteRequest::BootstrapAccessToken(first)).await {
        Ok(_) | Err(ApiError::FailedPrecondition(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Once this node leads a state with no tokens, writes the configured first admin token,
/// so that it is in the state (and in `berth token ls`) before anyone calls. Ends when the
/// state has a token, when the node has none to offer, or when it stops.
pub async fn bootstrap_when_leader(node: Arc<Node>) {
    if node.cfg.tls.is_none() || node.cfg.initial_admin.is_none() {
        return;
    }
    loop {
        if node.state.read().state.access_bootstrapped() {
            return;
        }
        if node.current_leader() == Some(node.id) {
            match bootstrap(&node).await {
                Ok(()) => tracing::info!("wrote the cluster's first admin token (admin.token)"),
                Err(e) => {
                    tracing::debug!(error = %e.message(), "first admin token not written yet")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = node.shutdown.wait() => return,
        }
    }
}
