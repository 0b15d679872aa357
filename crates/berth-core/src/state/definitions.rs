//! Task definitions: families of immutable revisions, registered, deregistered, and
//! collected once INACTIVE, past their retention and named by no task or service.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{take_due, Change, ClusterState};
use crate::command::{CommandResult, Outcome};
use crate::error::Error;
use crate::limits::INACTIVE_DEFINITION_RETENTION_MS;
use crate::model::*;
use crate::quote::quote;
use crate::validate;

/// A family's revisions. Numbers count up and are never reused: a collected revision
/// leaves a gap, and a family whose revisions are all collected stays, empty, to keep
/// counting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FamilyRecord", into = "FamilyRecord")]
pub struct Family {
    /// Revisions ever registered; the next one is this plus one.
    registered: u32,
    revisions: BTreeMap<u32, TaskDefinition>,
}

/// How a family is written: its count and its revisions in order, or, as snapshots
/// written before revisions were collected hold it, every revision (`n` at `n - 1`).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FamilyRecord {
    Counted {
        registered: u32,
        revisions: Vec<TaskDefinition>,
    },
    Listed(Vec<TaskDefinition>),
}

impl From<FamilyRecord> for Family {
    fn from(r: FamilyRecord) -> Self {
        let (registered, revisions) = match r {
            FamilyRecord::Counted {
                registered,
                revisions,
            } => (registered, revisions),
            FamilyRecord::Listed(revisions) => (
                u32::try_from(revisions.len()).unwrap_or(u32::MAX),
                revisions,
            ),
        };
        Family {
            registered,
            revisions: revisions.into_iter().map(|d| (d.revision, d)).collect(),
        }
    }
}

impl From<Family> for FamilyRecord {
    fn from(f: Family) -> Self {
        FamilyRecord::Counted {
            registered: f.registered,
            revisions: f.revisions.into_values().collect(),
        }
    }
}

impl Family {
    pub fn get(&self, revision: u32) -> Option<&TaskDefinition> {
        self.revisions.get(&revision)
    }

    /// No revision left: all were collected.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    pub fn revisions(&self) -> impl DoubleEndedIterator<Item = &TaskDefinition> {
        self.revisions.values()
    }
}

impl ClusterState {
    pub(super) fn register_task_definition(&mut self, spec: &TaskDefinitionSpec) -> CommandResult {
        let (cpu, memory) = validate::task_definition(spec, self.settings.free_sizing)?;
        let network_mode = validate::network_mode(spec)?;
        let clock = self.clock;
        let family = self.families.entry(spec.family.clone()).or_default();
        let revision = family.registered.checked_add(1).ok_or_else(|| {
            Error::precondition(format!("family {} has too many revisions", spec.family))
        })?;
        let def = TaskDefinition {
            family: spec.family.clone(),
            revision,
            cpu,
            memory,
            network_mode,
            container_definitions: spec.container_definitions.clone(),
            status: TaskDefinitionStatus::Active,
            registered_at: clock,
            deregistered_at: None,
            timeouts: spec.timeouts,
        };
        family.registered = revision;
        family.revisions.insert(revision, def.clone());
        self.changes.push(Change::TaskDefinition(def.clone()));
        Ok(Outcome::TaskDefinition(def))
    }

    pub(super) fn deregister_task_definition(
        &mut self,
        family: &str,
        revision: u32,
    ) -> CommandResult {
        let clock = self.clock;
        let Some(def) = self
            .families
            .get_mut(family)
            .and_then(|f| f.revisions.get_mut(&revision))
        else {
            return Err(self.missing_revision(family, revision));
        };
        if def.status == TaskDefinitionStatus::Active {
            def.status = TaskDefinitionStatus::Inactive;
            def.deregistered_at = Some(clock);
            let def = def.clone();
            self.definition_expiry.insert((
                clock + INACTIVE_DEFINITION_RETENTION_MS,
                (def.family.clone(), def.revision),
            ));
            self.changes.push(Change::TaskDefinition(def.clone()));
            return Ok(Outcome::TaskDefinition(def));
        }
        Ok(Outcome::TaskDefinition(def.clone()))
    }

    /// Why `family:revision` cannot be found, in words that say whether it ever existed.
    fn missing_revision(&self, family: &str, revision: u32) -> Error {
        let name = format!("{family}:{revision}");
        let name = quote(&name);
        match self.families.get(family) {
            Some(f) if revision >= 1 && revision <= f.registered => Error::not_found(format!(
                "task definition {name} was deregistered and has since been collected \
                 (INACTIVE revisions are kept {} h once nothing runs them); register it again",
                INACTIVE_DEFINITION_RETENTION_MS / 3_600_000
            )),
            Some(f) => Error::not_found(format!(
                "task definition {name} does not exist (latest revision is {})",
                f.registered
            )),
            None => Error::not_found(format!(
                "task definition family {} does not exist",
                quote(family)
            )),
        }
    }

    /// A revision, or the family's latest ACTIVE revision when none is given.
    pub fn task_definition(
        &self,
        family: &str,
        revision: Option<u32>,
    ) -> Result<&TaskDefinition, Error> {
        let f = self.families.get(family).ok_or_else(|| {
            Error::not_found(format!(
                "task definition family {} does not exist",
                quote(family)
            ))
        })?;
        match revision {
            Some(r) => f.get(r).ok_or_else(|| self.missing_revision(family, r)),
            None => f
                .revisions()
                .rev()
                .find(|d| d.status == TaskDefinitionStatus::Active)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "task definition family {} has no ACTIVE revision",
                        quote(family)
                    ))
                }),
        }
    }

    /// Every revision, by family then revision, optionally of one family or status.
    pub fn task_definitions<'a>(
        &'a self,
        family: Option<&'a str>,
        status: Option<TaskDefinitionStatus>,
    ) -> impl Iterator<Item = &'a TaskDefinition> + 'a {
        self.families
            .iter()
            .filter(move |(f, _)| family.is_none_or(|want| want == f.as_str()))
            .flat_map(|(_, f)| f.revisions())
            .filter(move |d| status.is_none_or(|s| d.status == s))
    }

    /// Counts a task entering (`add`) or leaving the state against its revision.
    pub(super) fn count_revision_task(&mut self, task: &Task, add: bool) {
        let key = (task.family.clone(), task.revision);
        let n = self.revision_tasks.get(&key).copied().unwrap_or(0);
        let n = if add { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            self.revision_tasks.remove(&key);
        } else {
            self.revision_tasks.insert(key, n);
        }
    }

    /// Collects INACTIVE revisions past their retention that no task in the state and no
    /// service (current or any deployment) names. One still named is looked at again on
    /// every pass until it is not; there are few of those, and the task count is indexed.
    pub(super) fn collect_definitions(&mut self) {
        let now = self.clock;
        for key in take_due(&mut self.definition_expiry, now) {
            self.definitions_due.insert(key);
        }
        if self.definitions_due.is_empty() {
            return;
        }
        let named_by_services: BTreeSet<(&str, u32)> = self
            .services
            .values()
            .flat_map(|s| {
                std::iter::once((s.family.as_str(), s.revision)).chain(
                    s.deployments
                        .iter()
                        .map(|d| (d.family.as_str(), d.revision)),
                )
            })
            .collect();
        let mut collect = Vec::new();
        let mut settled = Vec::new();
        for (family, revision) in self.definitions_due.iter() {
            let expired = self
                .families
                .get(family)
                .and_then(|f| f.get(*revision))
                .is_some_and(|d| {
                    d.status == TaskDefinitionStatus::Inactive
                        && d.deregistered_at.unwrap_or(0) + INACTIVE_DEFINITION_RETENTION_MS <= now
                });
            if !expired {
                settled.push((family.clone(), *revision));
            } else if !named_by_services.contains(&(family.as_str(), *revision))
                && !self
                    .revision_tasks
                    .contains_key(&(family.clone(), *revision))
            {
                collect.push((family.clone(), *revision));
            }
        }
        for (family, revision) in collect {
            if let Some(f) = self.families.get_mut(&family) {
                f.revisions.remove(&revision);
            }
            self.definitions_due.remove(&(family, revision));
        }
        for key in settled {
            self.definitions_due.remove(&key);
        }
    }

    /// The derived collection indexes, from the revisions and the tasks.
    pub(super) fn rebuild_definition_indexes(&mut self) {
        self.definitions_due.clear();
        self.definition_expiry = self
            .families
            .values()
            .flat_map(|f| f.revisions())
            .filter(|d| d.status == TaskDefinitionStatus::Inactive)
            .map(|d| {
                (
                    d.deregistered_at.unwrap_or(0) + INACTIVE_DEFINITION_RETENTION_MS,
                    (d.family.clone(), d.revision),
                )
            })
            .collect();
        let mut counts = super::Map::new();
        for t in self.tasks.values() {
            *counts.entry((t.family.clone(), t.revision)).or_insert(0) += 1;
        }
        self.revision_tasks = counts;
    }

    /// The task count per revision recomputed from the tasks, for `check_invariants`.
    pub(super) fn check_definition_index(&self) -> Result<(), String> {
        let mut expect: BTreeMap<(&str, u32), u32> = BTreeMap::new();
        for t in self.tasks.values() {
            *expect.entry((t.family.as_str(), t.revision)).or_default() += 1;
        }
        let have: BTreeMap<(&str, u32), u32> = self
            .revision_tasks
            .iter()
            .map(|((f, r), n)| ((f.as_str(), *r), *n))
            .collect();
        if expect != have {
            return Err(format!(
                "tasks per revision index {have:?} != counted {expect:?}"
            ));
        }
        Ok(())
    }
}
