//! A Berth agent: runs the tasks the control plane assigns it as Docker containers with
//! hard limits, reports every state they reach, survives its own restarts (adopting what
//! runs), and fences itself (stops its tasks) when cut off from the control plane.
//!
//! ```text
//!  control nodes (raft port)          agent                          Docker engine
//!  ──────────────────────────         ─────                          ─────────────
//!  Register/Heartbeat   ◀──────  session ── contact ── fence timer
//!  Assignments stream   ──────▶  session ──▶ reconciler ──▶ supervisor per task ──▶ bollard
//!  ReportTasks          ◀──────  report outbox ◀── reports ◀──┘          ▲
//!  (Tasks.Logs proxy)   ──────▶  AgentService.Logs ───────────────────────┘ (logs)
//! ```
//!
//! Modules: [`config`]/[`cli`] (settings and flags), [`session`] (the agent protocol),
//! [`reconcile`] (assignments → supervisors), [`task`] (one task's lifecycle), [`spec`]
//! (task → container specs), [`resources`] (task size → limits), [`runtime`] (the engine
//! calls), [`reports`] (the outbox), [`store`] (records on disk), [`logs`] (AgentService).

pub mod cli;
pub mod config;
mod engine_watch;
pub mod logs;
pub mod meter;
pub mod metrics;
pub mod reconcile;
pub mod reports;
pub mod resources;
pub mod runtime;
mod session;
pub mod shutdown;
pub mod spec;
mod store;
pub mod task;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::internal::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::AgentConfig;
pub use reconcile::{Reconciler, ReconcilerSettings, Snapshot};
pub use runtime::{Runtime, RuntimeError, RuntimeOptions};
pub use task::StopRequest;

/// Reports buffered between supervisors and the outbox (which never blocks, so this only
/// smooths bursts).
const REPORT_CHANNEL: usize = 1024;
/// How often the fence timer looks at the silence.
const FENCE_TICK: Duration = Duration::from_millis(100);
/// Longest the agent waits for its loops to end at shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent configuration: {0}")]
    Config(String),
    #[error("the reconciler has stopped")]
    Stopped,
    #[error("cannot set up TLS for the logs port: {0}")]
    Tls(String),
}

/// Milliseconds since the Unix epoch, the agent's clock for reported states.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A reason cut to what the control plane accepts.
pub(crate) fn truncate_reason(mut s: String) -> String {
    let max = berth_core::limits::MAX_REASON_LEN;
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The whole agent, until `shutdown` completes. Shutting down leaves every task container
/// running: the next start adopts them (stopping tasks is the control plane's decision, or
/// fencing's).
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    if cfg.control.is_empty() {
        return Err(AgentError::Config("no control node address".into()));
    }
    berth_core::validate::agent(&cfg.id, cfg.cpu, cfg.memory, &cfg.attributes)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let runtime = Runtime::connect(&cfg.id, cfg.runtime.clone()).await?;
    let metrics = Arc::new(metrics::AgentMetrics::default());
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen {
                    addr: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;
    // Held until the agent returns, when dropping it removes the rules.
    let _firewall = match cfg.host_firewall {
        true => berth_hostfw::HostFirewall::install_or_warn(
            &format!("agent {}", cfg.id),
            &[
                (listener.local_addr().ok(), "logs"),
                (
                    metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
                    "metrics",
                ),
            ],
        ),
        false => None,
    };
    tracing::info!(
        agent = %cfg.id,
        cpu = cfg.cpu,
        memory = cfg.memory,
        control = ?cfg.control,
        listen = %cfg.listen,
        fence_after_ms = cfg.fence_after.as_millis() as u64,
        "agent starting"
    );

    let sd = shutdown::Shutdown::default();
    let book = Arc::new(reports::ReportBook::default());
    let (reports_tx, mut reports_rx) = mpsc::channel(REPORT_CHANNEL);
    let mut tasks = Vec::new();
    // Running before the reconciler starts: it sends the records of tasks ended before a
    // restart, possibly more than the channel holds.
    let outbox = book.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(r) = reports_rx.recv().await {
            outbox.push(r);
        }
    }));
    let reconciler = Arc::new(
        Reconciler::start(
            runtime.clone(),
            ReconcilerSettings {
                agent_id: cfg.id.clone(),
                data_dir: Some(cfg.data_dir.clone()),
                sweep_every: cfg.sweep_every,
                metrics: metrics.clone(),
            },
            reports_tx,
        )
        .await?,
    );
    let contact = Arc::new(session::Contact::new());
    let engine = Arc::new(engine_watch::EngineHealth::default());
    tasks.push(tokio::spawn(engine_watch::run(
        runtime.clone(),
        engine.clone(),
        cfg.engine_probe_every,
        cfg.engine_probe_timeout,
        sd.clone(),
    )));

    if let Some(listener) = metrics_listener {
        let (m, e) = (metrics.clone(), engine.clone());
        let render: berth_metrics::Render = Arc::new(move || m.render(e.error().is_none()));
        let msd = sd.clone();
        tasks.push(tokio::spawn(async move {
            berth_metrics::serve(listener, render, msd.wait()).await
        }));
    }
    let utilization = Arc::new(meter::Outbox::default());
    if !cfg.stats_every.is_zero() {
        tasks.push(tokio::spawn(meter::run(
            runtime.clone(),
            utilization.clone(),
            cfg.stats_every,
            cfg.utilization_window,
            sd.clone(),
        )));
    }

    let mut builder = tonic::transport::Server::builder();
    if let Some(creds) = &cfg.tls {
        builder = builder
            .tls_config(creds.server_mutual())
            .map_err(|e| AgentError::Tls(e.to_string()))?;
    }
    let tls_on = cfg.tls.is_some();
    if !tls_on {
        tracing::warn!(
            "running without TLS (--insecure): control nodes are not authenticated, anyone who \
             reaches {} can read task logs, and the agent protocol travels in the clear",
            cfg.listen
        );
    }
    // Logs are asked for by control nodes only.
    let server = builder.add_service(tonic::service::interceptor::InterceptedService::new(
        AgentServiceServer::new(logs::LogsService {
            runtime: runtime.clone(),
        }),
        move |req: tonic::Request<()>| {
            if tls_on {
                berth_tls::grpc::require_control(&req)?;
            }
            Ok(req)
        },
    ));
    let server_sd = sd.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), server_sd.wait())
            .await
        {
            tracing::error!(error = %e, "agent service stopped");
        }
    }));

    tasks.push(tokio::spawn(
        session::Session {
            cfg: cfg.clone(),
            reconciler: reconciler.clone(),
            book: book.clone(),
            contact: contact.clone(),
            engine,
            utilization,
            shutdown: sd.clone(),
            registration: std::sync::Mutex::new(None),
        }
        .run(),
    ));

    tasks.push(tokio::spawn(fence_loop(
        cfg.clone(),
        reconciler.clone(),
        contact,
        sd.clone(),
    )));

    shutdown.await;
    tracing::info!(agent = %cfg.id, "agent shutting down; task containers keep running");
    sd.trigger();
    reconciler.shutdown().await;
    for t in tasks {
        // The report pump ends when the reconciler's senders are gone; anything stuck is
        // abandoned after the wait (the runtime is about to go anyway).
        let abort = t.abort_handle();
        if tokio::time::timeout(SHUTDOWN_WAIT, t).await.is_err() {
            abort.abort();
        }
    }
    Ok(())
}

/// Stops every task once the control plane has not acknowledged a heartbeat for
/// `fence_after`; arms again when contact is back.
async fn fence_loop(
    cfg: AgentConfig,
    reconciler: Arc<Reconciler>,
    contact: Arc<session::Contact>,
    sd: shutdown::Shutdown,
) {
    if cfg.fence_after.is_zero() {
        return;
    }
    let mut fenced = false;
    let mut tick = tokio::time::interval(FENCE_TICK);
    loop {
        tokio::select! {
            _ = sd.wait() => return,
            _ = tick.tick() => {}
        }
        let silence = contact.silence();
        if !fenced && silence >= cfg.fence_after {
            fenced = true;
            let reason = format!(
                "agent {} fenced itself: no heartbeat acknowledged by the control plane for {} ms",
                cfg.id,
                silence.as_millis()
            );
            tracing::warn!(ttl_ms = ?contact.ttl().map(|t| t.as_millis()), "{reason}");
            if reconciler.fence(reason, cfg.fence_grace).await.is_err() {
                return;
            }
        } else if fenced && silence < cfg.fence_after {
            fenced = false;
            tracing::info!(agent = %cfg.id, "control plane reachable again");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let s = "é".repeat(2000);
        let t = super::truncate_reason(s);
        assert!(t.len() <= berth_core::limits::MAX_REASON_LEN);
        assert!(t.ends_with("..."));
    }
}
