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
use crate::limits::MAX_DESIRED_COUNT;
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
    pub client_token: Option<String>,
    /// Fingerprint of the request without its token (a retry with the same token and the
    /// same request gets the service; with another request it is refused).
    pub fingerprint: u64,
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
}

impl Service {
    pub fn task_definition(&self) -> String {
        format!("{}:{}", self.family, self.revision)
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
