//! An agent's Prometheus metrics: how long its tasks took to start and how many failed to,
//! observed where tasks start; how many it supervises, kept by the reconciler; whether its
//! engine answers, read at scrape time.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    start: Histogram,
    start_failures: Counter,
    supervised: Gauge,
    engine_up: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("berth_agent");
        let start = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        r.register_with_unit(
            "task_start_duration",
            "From a task's PENDING to RUNNING here: image check or pull, create and start of its containers",
            Unit::Seconds,
            start.clone(),
        );
        let start_failures = Counter::default();
        r.register(
            "task_start_failures",
            "Tasks that failed to start here (TaskFailedToStart)",
            start_failures.clone(),
        );
        let supervised = Gauge::default();
        r.register(
            "tasks",
            "Tasks this agent is running or stopping",
            supervised.clone(),
        );
        let engine_up = Gauge::default();
        r.register(
            "engine_up",
            "1 while the container engine answers its probes, else 0",
            engine_up.clone(),
        );
        AgentMetrics {
            registry: r,
            start,
            start_failures,
            supervised,
            engine_up,
        }
    }
}

impl AgentMetrics {
    pub fn started(&self, took: Duration) {
        self.start.observe(took.as_secs_f64());
    }

    pub fn failed_to_start(&self) {
        self.start_failures.inc();
    }

    pub fn set_tasks(&self, n: usize) {
        self.supervised.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The registry's text, with the engine's state read at scrape time.
    pub fn render(&self, engine_up: bool) -> String {
        self.engine_up.set(i64::from(engine_up));
        berth_metrics::encode(&self.registry)
    }
}
