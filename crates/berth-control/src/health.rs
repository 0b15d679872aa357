//! `grpc.health.v1` answers that mean something: SERVING while this node can serve
//! linearizable calls, NOT_SERVING once it has been unable to for longer than
//! `leader_wait` — the point from which its own calls fail UNAVAILABLE. A load balancer or
//! a container health check can then route around a node that lost its leader or its
//! majority, while a node that merely saw an election stays in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::agents_server::AgentsServer;
use berth_proto::v1::cluster_server::ClusterServer;
use berth_proto::v1::events_server::EventsServer;
use berth_proto::v1::namespaces_server::NamespacesServer;
use berth_proto::v1::secrets_server::SecretsServer;
use berth_proto::v1::services_server::ServicesServer;
use berth_proto::v1::task_definitions_server::TaskDefinitionsServer;
use berth_proto::v1::tasks_server::TasksServer;
use berth_proto::v1::tokens_server::TokensServer;
use berth_proto::v1::usage_server::UsageServer;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::agents::AgentsApi;
use crate::api::cluster::ClusterApi;
use crate::api::events::EventsApi;
use crate::api::namespaces::NamespacesApi;
use crate::api::secrets::SecretsApi;
use crate::api::services::ServicesApi;
use crate::api::task_definitions::TaskDefinitionsApi;
use crate::api::tasks::TasksApi;
use crate::api::tokens::TokensApi;
use crate::api::usage::UsageApi;
use crate::node::Node;

/// How often the node checks that it can still serve; each check is one read-index round
/// (a heartbeat exchange on the leader), cheap at this rate.
const EVERY: Duration = Duration::from_millis(500);
/// One check's bound: a node that cannot confirm within this is not serving right now.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The services whose status follows the node's; "" is the whole server's.
pub(crate) const SERVICES: [&str; 11] = [
    "",
    <TaskDefinitionsServer<TaskDefinitionsApi> as NamedService>::NAME,
    <TasksServer<TasksApi> as NamedService>::NAME,
    <ServicesServer<ServicesApi> as NamedService>::NAME,
    <AgentsServer<AgentsApi> as NamedService>::NAME,
    <ClusterServer<ClusterApi> as NamedService>::NAME,
    <UsageServer<UsageApi> as NamedService>::NAME,
    <EventsServer<EventsApi> as NamedService>::NAME,
    <TokensServer<TokensApi> as NamedService>::NAME,
    <NamespacesServer<NamespacesApi> as NamedService>::NAME,
    <SecretsServer<SecretsApi> as NamedService>::NAME,
];

/// Whether a node that last served at `last_ok` counts as serving at `now`.
fn serving(last_ok: Instant, now: Instant, leader_wait: Duration) -> bool {
    now.saturating_duration_since(last_ok) <= leader_wait
}

pub(crate) async fn run(node: Arc<Node>, reporter: HealthReporter) {
    // A node just started gets the same allowance as one that just lost its leader.
    let mut last_ok = Instant::now();
    // `ControlNode::start` reports every service SERVING before the API port opens.
    let mut reported = Some(ServingStatus::Serving);
    loop {
        let ok = matches!(
            tokio::time::timeout(CHECK_TIMEOUT, node.read_barrier(false)).await,
            Ok(Ok(()))
        );
        let now = Instant::now();
        if ok {
            last_ok = now;
        }
        let status = if serving(last_ok, now, node.cfg.leader_wait) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if reported != Some(status) {
            tracing::info!(?status, "health changed");
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
            reported = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = node.shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_until_the_leader_wait_has_passed_without_a_successful_check() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(5);
        assert!(serving(t0, t0 + Duration::from_secs(5), wait));
        assert!(!serving(t0, t0 + Duration::from_millis(5_001), wait));
    }
}
