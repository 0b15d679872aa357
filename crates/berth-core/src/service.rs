//! Services: a task definition kept running at a desired count, as ECS services are.
//!
//! A service owns the tasks whose group is `service:NAME` (a prefix RunTask refuses, so only
//! the service scheduler makes them). The state machine keeps, per service, the set of its
//! tasks whose desired status is RUNNING — the count the scheduler compares with
//! `desired_count` — and refuses a launch that would take that count past the desired one,
//! whoever proposed it: a new leader that acts on a state a little behind cannot double a
//! service.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{PlacementConstraint, PlacementStrategy};
use crate::error::Error;
use crate::limits::{
    DEFAULT_MIN_HEALTHY_TIME_MS, MAX_DESIRED_COUNT, MAX_MAXIMUM_PERCENT, MAX_MIN_HEALTHY_PERCENT,
    MAX_MIN_HEALTHY_TIME_MS, MIN_MAXIMUM_PERCENT,
};
use crate::model::{Millis, Revision};

/// The group every task of service `name` carries.
pub const SERVICE_GROUP_PREFIX: &str = "service:";

pub fn service_group(name: &str) -> String {
    format!("{SERVICE_GROUP_PREFIX}{name}")
}

/// The service a task group belongs to, if it is a service's.
pub fn service_of_group(group: &str) -> Option<&str> {
    group.strip_prefix(SERVICE_GROUP_PREFIX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    /// Kept at its desired count.
    Active,
    /// Deleted; its tasks are being stopped.
    Draining,
    /// Deleted and without tasks; describable for an hour, then forgotten.
    Inactive,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deployment's place in the service, as ECS names it: the PRIMARY is the one the service
/// launches; an ACTIVE one still has tasks being replaced; an INACTIVE one is history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Primary,
    Active,
    Inactive,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Primary => "PRIMARY",
            DeploymentStatus::Active => "ACTIVE",
            DeploymentStatus::Inactive => "INACTIVE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }
}

/// How a deployment replaces tasks: ECS's `deploymentConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Healthy tasks kept during a deployment, in percent of the desired count, rounded up.
    pub minimum_healthy_percent: u32,
    /// Tasks (all deployments together) allowed during a deployment, in percent of the
    /// desired count, rounded down.
    pub maximum_percent: u32,
    /// Stop a deployment whose tasks keep failing.
    pub circuit_breaker: bool,
    /// With the breaker: return to the last COMPLETED deployment's task definition.
    pub rollback: bool,
    /// How long a new task must stay RUNNING (and HEALTHY, where it has a health check)
    /// before it counts as healthy: before an old task is stopped for it and before its
    /// deployment is COMPLETED. Catches the revision that starts and then dies (Nomad's
    /// `min_healthy_time`, Swarm's `--update-monitor`).
    #[serde(default = "default_min_healthy_time_ms")]
    pub min_healthy_time_ms: u32,
}

fn default_min_healthy_time_ms() -> u32 {
    DEFAULT_MIN_HEALTHY_TIME_MS
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration {
            minimum_healthy_percent: 100,
            maximum_percent: 200,
            circuit_breaker: false,
            rollback: false,
            min_healthy_time_ms: DEFAULT_MIN_HEALTHY_TIME_MS,
        }
    }
}

impl DeploymentConfiguration {
    /// Healthy tasks that must remain at every instant for `desired`.
    pub fn min_healthy(&self, desired: u32) -> u32 {
        (u64::from(desired) * u64::from(self.minimum_healthy_percent)).div_ceil(100) as u32
    }
    /// Live tasks allowed at once for `desired`.
    pub fn max_total(&self, desired: u32) -> u32 {
        (u64::from(desired) * u64::from(self.maximum_percent) / 100) as u32
    }

    /// Refuses percentages outside ECS's bounds and combinations under which a deployment
    /// of `desired` tasks could never make progress: no room to start a new task before an
    /// old one stops, and no old one allowed to stop before a new one is healthy.
    pub fn check(&self, desired: u32) -> Result<(), Error> {
        if self.minimum_healthy_percent > MAX_MIN_HEALTHY_PERCENT {
            return Err(Error::invalid(format!(
                "minimumHealthyPercent {} is outside 0..={MAX_MIN_HEALTHY_PERCENT}",
                self.minimum_healthy_percent
            )));
        }
        if !(MIN_MAXIMUM_PERCENT..=MAX_MAXIMUM_PERCENT).contains(&self.maximum_percent) {
            return Err(Error::invalid(format!(
                "maximumPercent {} is outside {MIN_MAXIMUM_PERCENT}..={MAX_MAXIMUM_PERCENT}",
                self.maximum_percent
            )));
        }
        if self.min_healthy_time_ms > MAX_MIN_HEALTHY_TIME_MS {
            return Err(Error::invalid(format!(
                "minHealthyTimeMs {} is outside 0..={MAX_MIN_HEALTHY_TIME_MS}",
                self.min_healthy_time_ms
            )));
        }
        if self.rollback && !self.circuit_breaker {
            return Err(Error::invalid(
                "rollback needs the deployment circuit breaker (circuitBreaker true)".to_string(),
            ));
        }
        if desired > 0 && self.max_total(desired) <= self.min_healthy(desired) {
            return Err(Error::invalid(format!(
                "minimumHealthyPercent {} and maximumPercent {} leave no room to replace a task \
                 at desired count {desired}: at most {} tasks may run and {} must stay healthy; \
                 lower minimumHealthyPercent or raise maximumPercent",
                self.minimum_healthy_percent,
                self.maximum_percent,
                self.max_total(desired),
                self.min_healthy(desired)
            )));
        }
        Ok(())
    }
}

/// Failed launches of a deployment after which the circuit breaker trips: ECS's
/// `clamp(ceil(desired / 2), 3, 200)`.
pub fn breaker_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// One task definition being rolled out to (or kept running by) a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `berth-svc/<state revision of its creation>`; also the `startedBy` of its tasks.
    pub id: String,
    pub family: String,
    pub revision: u32,
    pub status: DeploymentStatus,
    pub rollout_state: RolloutState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_state_reason: String,
    /// Tasks of this deployment that failed to start, exited early or failed their health
    /// check.
    pub failed_tasks: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Deployment {
    pub fn task_definition(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

/// The prefix of every deployment id (and so of its tasks' `startedBy`).
pub const DEPLOYMENT_ID_PREFIX: &str = "berth-svc/";

/// Something a service's scheduler did or could not do, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub at: Millis,
    pub message: String,
}

/// CreateService after validation: the task definition resolved to one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCreate {
    pub name: String,
    pub family: String,
    pub revision: u32,
    pub desired_count: u32,
    pub placement_strategy: Vec<PlacementStrategy>,
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,
    pub client_token: Option<String>,
    /// Fingerprint of the request without its token (a retry with the same token and the
    /// same request gets the service; with another request it is refused).
    pub fingerprint: u64,
}

/// UpdateService after validation; absent fields keep what the service has.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUpdate {
    pub name: String,
    #[serde(default)]
    pub desired_count: Option<u32>,
    /// A new task definition revision: starts a deployment.
    #[serde(default)]
    pub task_definition: Option<(String, u32)>,
    /// Starts a deployment of the same revision (tasks replaced within the bounds).
    #[serde(default)]
    pub force_new_deployment: bool,
    #[serde(default)]
    pub deployment_configuration: Option<DeploymentConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    pub family: String,
    pub revision: u32,
    pub desired_count: u32,
    pub placement_strategy: Vec<PlacementStrategy>,
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,
    /// The PRIMARY first, then ACTIVE ones, then the newest INACTIVE ones.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    pub status: ServiceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    pub fingerprint: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When it became INACTIVE (its collection is an hour later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_at: Option<Millis>,
    /// Newest first, at most `MAX_SERVICE_EVENTS`.
    pub events: Vec<ServiceEvent>,
    /// Revision of the last change to the service.
    pub version: Revision,
    /// Target-tracking autoscaling, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<crate::scaling::Scaling>,
}

impl Service {
    /// The task definition the service runs (its PRIMARY deployment's).
    pub fn task_definition(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }
    pub fn group(&self) -> String {
        service_group(&self.name)
    }
}

pub fn desired_count(n: i64) -> Result<u32, Error> {
    if !(0..=i64::from(MAX_DESIRED_COUNT)).contains(&n) {
        return Err(Error::invalid(format!(
            "desiredCount {n} is outside 0..={MAX_DESIRED_COUNT}"
        )));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: u32, max: u32) -> DeploymentConfiguration {
        DeploymentConfiguration {
            minimum_healthy_percent: min,
            maximum_percent: max,
            ..Default::default()
        }
    }

    #[test]
    fn minimum_healthy_rounds_up_and_maximum_rounds_down() {
        let c = config(50, 150);
        assert_eq!((c.min_healthy(3), c.max_total(3)), (2, 4));
        assert_eq!((c.min_healthy(1), c.max_total(1)), (1, 1));
        assert_eq!((c.min_healthy(0), c.max_total(0)), (0, 0));
    }

    #[test]
    fn combinations_that_cannot_make_progress_are_refused() {
        assert!(config(100, 200).check(20).is_ok());
        assert!(config(50, 100).check(4).is_ok());
        assert!(config(0, 100).check(1).is_ok());
        // 100/100: nothing may start before a stop, nothing may stop before a start.
        assert!(config(100, 100).check(3).is_err());
        // 50/150 at 1 task: one may run, one must stay healthy.
        let e = config(50, 150).check(1).unwrap_err().to_string();
        assert!(e.contains("no room"), "{e}");
        assert!(config(101, 200).check(2).is_err());
        assert!(config(100, 99).check(2).is_err());
        let mut c = config(100, 200);
        c.rollback = true;
        assert!(c.check(2).is_err());
        let mut c = config(100, 200);
        c.min_healthy_time_ms = MAX_MIN_HEALTHY_TIME_MS + 1;
        let e = c.check(2).unwrap_err().to_string();
        assert!(e.contains("minHealthyTimeMs"), "{e}");
    }

    #[test]
    fn a_configuration_stored_before_min_healthy_time_takes_the_default() {
        let c: DeploymentConfiguration = serde_json::from_str(
            r#"{"minimumHealthyPercent":50,"maximumPercent":200,"circuitBreaker":true,"rollback":false}"#,
        )
        .unwrap();
        assert_eq!(c.min_healthy_time_ms, DEFAULT_MIN_HEALTHY_TIME_MS);
        assert_eq!(c.minimum_healthy_percent, 50);
    }

    #[test]
    fn the_breaker_threshold_is_half_the_desired_count_within_3_and_200() {
        assert_eq!(breaker_threshold(1), 3);
        assert_eq!(breaker_threshold(7), 4);
        assert_eq!(breaker_threshold(20), 10);
        assert_eq!(breaker_threshold(1000), 200);
    }
}
