//! A Berth control node: the public API on one port; Raft, node-to-node calls and the
//! agent protocol on another; the leader's batcher; and cluster formation.
//!
//! ```text
//!  client ──▶ API service ──write──▶ Node::leader_call ──(forward if follower)──▶ leader
//!                        │                                   batcher ─▶ Raft ─▶ sled
//!                        └─read──▶ Node::read_barrier ─▶ applied ClusterState
//! ```

pub mod api;
mod assignments;
pub mod auth;
mod autoscaler;
mod batcher;
mod bootstrap;
pub mod config;
pub mod error;
mod events;
mod firing;
mod health;
pub mod internal;
mod metrics;
mod monitor;
pub mod node;
mod placement;
mod read_index;
mod scheduler;
pub mod secrets;
pub mod shutdown;
mod timeouts;

use std::sync::Arc;

use berth_proto::internal::agent_protocol_server::AgentProtocolServer;
use berth_proto::internal::node_server::NodeServer;
use berth_proto::v1::agents_server::AgentsServer;
use berth_proto::v1::cluster_server::ClusterServer;
use berth_proto::v1::events_server::EventsServer;
use berth_proto::v1::namespaces_server::NamespacesServer;
use berth_proto::v1::schedules_server::SchedulesServer;
use berth_proto::v1::secrets_server::SecretsServer;
use berth_proto::v1::services_server::ServicesServer;
use berth_proto::v1::task_definitions_server::TaskDefinitionsServer;
use berth_proto::v1::tasks_server::TasksServer;
use berth_proto::v1::tokens_server::TokensServer;
use berth_proto::v1::usage_server::UsageServer;
use berth_raft::service::RaftService;
use berth_raft::MAX_RAFT_MESSAGE;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
// Accepted connections get TCP_NODELAY: without it Nagle's algorithm meets delayed ACKs
// and a lone request waits ~40 ms on every hop.
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

pub use config::NodeConfig;
pub use node::Node;

/// Largest request the public API decodes. Validation refuses far smaller inputs with a
/// message naming the field (a task definition is capped at 64 KiB); this bound only stops
/// a client from making the server buffer without limit, and is set high enough that
/// oversize input meets validation's clearer error first.
pub const MAX_API_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {source}")]
    Store {
        path: String,
        source: berth_raft::store::StoreError,
    },
    #[error("invalid raft settings: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("cannot set up TLS for the {what} port: {detail}")]
    Tls { what: &'static str, detail: String },
}

/// A running control node.
pub struct ControlNode {
    node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
    /// The election watch, stopped before Raft is.
    election: JoinHandle<()>,
    /// Rules keeping this host's tasks off the node's ports; removed when the node stops.
    _firewall: Option<berth_hostfw::HostFirewall>,
}

/// The threads Raft runs on, shared by every node of the process. On a runtime of their
/// own, a leader's heartbeats and appends are not queued behind thousands of agents' calls
/// and TLS handshakes: with 10,000 agents registering on one runtime, appends missed
/// openraft's timeout (the heartbeat interval), followers called elections and the ramp
/// never settled.
fn raft_runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("raft")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start Raft's threads: {e}"))
        })
        .as_ref()
        .map(|rt| rt.handle())
        .map_err(Clone::clone)
}

impl ControlNode {
    pub async fn start(cfg: NodeConfig) -> Result<Self, StartError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let store_path = cfg.data_dir.join("raft");
        let (log, sm) =
            berth_raft::store::open(&store_path).map_err(|source| StartError::Store {
                path: store_path.display().to_string(),
                source,
            })?;
        let state = sm.handle();
        let raft_config = Arc::new(cfg.tuning.to_config()?);
        // Raft's core, its replication to each peer and those peers' connections run on
        // Raft's own threads (see `raft_runtime`), over channels of their own; the node's
        // forwarded calls and read indexes use these.
        let channels = berth_raft::network::Channels::new(cfg.tls.clone());
        let network =
            berth_raft::network::Network::new(berth_raft::network::Channels::new(cfg.tls.clone()));
        let id = cfg.id;
        let raft = raft_runtime()
            .map_err(StartError::Raft)?
            .spawn(async move { berth_raft::Raft::new(id, raft_config, network, log, sm).await })
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(|e| StartError::Raft(e.to_string()))?;

        // Bind both ports before anything else runs, so a busy port fails the start
        // instead of a background task.
        let raft_listener =
            TcpListener::bind(cfg.raft_listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: cfg.raft_listen.to_string(),
                    what: "raft",
                    source,
                })?;
        let api_listener =
            TcpListener::bind(cfg.api_listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: cfg.api_listen.to_string(),
                    what: "api",
                    source,
                })?;
        let metrics_listener = match cfg.metrics_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            addr: addr.to_string(),
                            what: "metrics",
                            source,
                        })?,
                )
            }
            None => None,
        };

        let firewall = match cfg.host_firewall {
            true => berth_hostfw::HostFirewall::install_or_warn(
                &format!("control node {}", cfg.id),
                &[
                    (raft_listener.local_addr().ok(), "raft"),
                    (api_listener.local_addr().ok(), "api"),
                    (
                        metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
                        "metrics",
                    ),
                ],
            ),
            false => None,
        };

        let shutdown = shutdown::Shutdown::default();
        let (tx, rx) = tokio::sync::mpsc::channel(batcher::QUEUE);
        let node = Arc::new(Node::new(
            cfg,
            raft.clone(),
            state.clone(),
            shutdown.clone(),
            tx,
            channels,
        ));
        let mut tasks = Vec::new();

        let tls = node.cfg.tls.clone();
        let mut raft_builder = tonic::transport::Server::builder();
        let mut api_builder = tonic::transport::Server::builder();
        if let Some(creds) = &tls {
            raft_builder = raft_builder
                .tls_config(creds.server_mutual())
                .map_err(|e| StartError::Tls {
                    what: "raft",
                    detail: e.to_string(),
                })?;
            api_builder = api_builder
                .tls_config(creds.server())
                .map_err(|e| StartError::Tls {
                    what: "api",
                    detail: e.to_string(),
                })?;
        }
        // Raft and node-to-node calls: control nodes only (the handshake has already
        // checked the certificate is the cluster's).
        let nodes_only = move |req: tonic::Request<()>| {
            if tls.is_some() {
                if let Err(e) = berth_tls::grpc::require_control(&req) {
                    tracing::warn!(peer = ?req.remote_addr(), refused = %e.message(), "node-to-node call refused");
                    return Err(e);
                }
            }
            Ok(req)
        };
        let raft_server = raft_builder
            // openraft cancels every append or vote that misses its deadline; on a loaded
            // host that is many in a burst, and h2's default (20 reset streams not yet
            // accepted) then tears down the peer's connection, so the next call pays a new
            // connection on top of the load.
            .http2_max_pending_accept_reset_streams(Some(1024))
            .add_service(InterceptedService::new(
                RaftService::server(raft.clone()),
                nodes_only.clone(),
            ))
            .add_service(InterceptedService::new(
                NodeServer::new(internal::NodeService { node: node.clone() })
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE),
                nodes_only,
            ))
            .add_service(AgentProtocolServer::new(internal::AgentProtocolService {
                node: node.clone(),
            }));
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = TcpIncoming::from(raft_listener).with_nodelay(Some(true));
            if let Err(e) = raft_server
                .serve_with_incoming_shutdown(incoming, sd.wait())
                .await
            {
                tracing::error!(error = %e, "raft port server stopped");
            }
        }));

        let (health, health_service) = tonic_health::server::health_reporter();
        for s in health::SERVICES {
            health
                .set_service_status(s, tonic_health::ServingStatus::Serving)
                .await;
        }
        // Both versions of server reflection: v1 for current tools, v1alpha for the many
        // that still speak only it (Python's grpcio-reflection client among them).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        let node_id = node.id;
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // With TLS on, no call reaches a service without a token that allows it.
        let gate = match &node.cfg.tls {
            Some(_) => auth::AuthLayer::new(auth::check_with(node.clone())),
            None => auth::AuthLayer::open(),
        };
        let api_server = api_builder
            // Every call's log lines carry which call it was and which node served it: the
            // client's x-request-id when it sent one, else this node's own count.
            .trace_fn(move |req| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        let n = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        format!("{node_id}-{n}")
                    });
                tracing::info_span!("request", id = %id, node = node_id, rpc = %req.uri().path())
            })
            .layer(gate)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                TaskDefinitionsServer::new(api::task_definitions::TaskDefinitionsApi {
                    node: node.clone(),
                })
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                TasksServer::new(api::tasks::TasksApi { node: node.clone() })
                    .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(ServicesServer::new(api::services::ServicesApi {
                node: node.clone(),
            }))
            .add_service(SchedulesServer::new(api::schedules::SchedulesApi {
                node: node.clone(),
            }))
            .add_service(UsageServer::new(api::usage::UsageApi {
                node: node.clone(),
            }))
            .add_service(EventsServer::new(api::events::EventsApi {
                node: node.clone(),
            }))
            .add_service(AgentsServer::new(api::agents::AgentsApi {
                node: node.clone(),
            }))
            .add_service(ClusterServer::new(api::cluster::ClusterApi {
                node: node.clone(),
            }))
            .add_service(TokensServer::new(api::tokens::TokensApi {
                node: node.clone(),
            }))
            .add_service(NamespacesServer::new(api::namespaces::NamespacesApi {
                node: node.clone(),
            }))
            .add_service(SecretsServer::new(api::secrets::SecretsApi {
                node: node.clone(),
            }));
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = TcpIncoming::from(api_listener).with_nodelay(Some(true));
            if let Err(e) = api_server
                .serve_with_incoming_shutdown(incoming, sd.wait())
                .await
            {
                tracing::error!(error = %e, "api server stopped");
            }
        }));

        tasks.push(tokio::spawn(
            batcher::Batcher {
                raft: raft.clone(),
                state,
                rx,
                shutdown: shutdown.clone(),
                metrics: node.metrics.clone(),
                planner: None,
            }
            .run(),
        ));
        if let Some(listener) = metrics_listener {
            let n = node.clone();
            let render: berth_metrics::Render = Arc::new(move || n.metrics.render(&n));
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                berth_metrics::serve(listener, render, sd.wait()).await
            }));
        }
        tasks.push(tokio::spawn(bootstrap::run(node.clone())));
        tasks.push(tokio::spawn(monitor::run(node.clone())));
        tasks.push(tokio::spawn(events::run(node.clone())));
        tasks.push(tokio::spawn(assignments::run(node.clone())));
        tasks.push(tokio::spawn(scheduler::run(node.clone())));
        tasks.push(tokio::spawn(firing::run(node.clone())));
        tasks.push(tokio::spawn(timeouts::run(node.clone())));
        tasks.push(tokio::spawn(health::run(node.clone(), health)));
        tasks.push(tokio::spawn(auth::bootstrap_when_leader(node.clone())));
        let sd = shutdown.clone();
        let election = tokio::spawn(berth_raft::election::watch(
            raft.clone(),
            node.id,
            node.cfg.tuning.clone(),
            async move { sd.wait().await },
        ));

        tracing::info!(
            id = node.id,
            api = %node.cfg.api_listen,
            raft = %node.cfg.raft_listen,
            data = %node.cfg.data_dir.display(),
            "control node started"
        );
        Ok(ControlNode {
            node,
            tasks,
            election,
            _firewall: firewall,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops serving, stops Raft (which flushes and closes the store), and waits for every
    /// task of the node to end.
    pub async fn shutdown(self) {
        self.node.shutdown.trigger();
        // It asks the Raft loop every few ms: it must be gone before the loop is.
        let _ = self.election.await;
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
        for t in self.tasks {
            let _ = t.await;
        }
        tracing::info!(id = self.node.id, "control node stopped");
    }
}
