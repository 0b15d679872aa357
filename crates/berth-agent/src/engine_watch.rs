//! Watches that the container engine answers. An engine whose calls never return (met in
//! long runs on Docker 20.10 when its network controller deadlocks) would otherwise leave
//! the agent heartbeating while none of its tasks can be started, stopped or seen: the
//! agent says so in every heartbeat, the control plane places nothing here and replaces
//! the service tasks elsewhere, until a probe answers again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::Runtime;
use crate::shutdown::Shutdown;

/// What the last probe found: `None` while the engine answers.
#[derive(Default)]
pub(crate) struct EngineHealth(Mutex<Option<String>>);

impl EngineHealth {
    pub fn error(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, error: Option<String>) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (&*now, &error) {
            (None, Some(e)) => tracing::warn!(error = %e, "the container engine does not answer"),
            (Some(_), None) => tracing::info!("the container engine answers again"),
            _ => {}
        }
        *now = error;
    }
}

/// Probes every `every` with a listing of this agent's containers (the call the engine's
/// known deadlock blocks), each allowed `timeout`.
pub(crate) async fn run(
    runtime: Runtime,
    health: Arc<EngineHealth>,
    every: Duration,
    timeout: Duration,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let probe = tokio::time::timeout(timeout, runtime.list_own());
        let error = tokio::select! {
            _ = shutdown.wait() => return,
            r = probe => match r {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("the engine failed a container list: {e}")),
                Err(_) => Some(format!(
                    "the engine did not answer a container list within {} ms",
                    timeout.as_millis()
                )),
            },
        };
        health.set(error);
    }
}
