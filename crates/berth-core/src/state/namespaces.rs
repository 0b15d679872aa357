//! Namespaces in the replicated state: which exist, their quotas, what their tasks hold, and
//! the namespace each user command acts in — the one its token must be scoped to, checked at
//! apply like the token's role, so a command can only ever touch its own namespace's
//! objects. Quotas are checked here too, at the command's place in the log: two RunTasks
//! through two nodes are applied one after the other, and the second sees the first's tasks.

use std::collections::BTreeMap;

use super::ClusterState;
use crate::access::AccessToken;
use crate::command::{Command, CommandResult, Outcome};
use crate::error::Error;
use crate::model::{Failure, Task};
use crate::namespace::{self as ns, Namespace, NamespaceUse, Quota, DEFAULT_NAMESPACE};
use crate::quote::quote;
use crate::service::ServiceStatus;

impl ClusterState {
    /// A namespace, `default` included (it always exists, with no quota until one is set).
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        match self.namespaces.get(name) {
            Some(n) => Some(n.clone()),
            None if name == DEFAULT_NAMESPACE => Some(Namespace {
                name: DEFAULT_NAMESPACE.into(),
                quota: Quota::default(),
                created_at: 0,
            }),
            None => None,
        }
    }

    /// Every namespace by name, `default` included.
    pub fn namespaces(&self) -> Vec<Namespace> {
        let mut all: Vec<Namespace> = self.namespaces.values().cloned().collect();
        if !self.namespaces.contains_key(DEFAULT_NAMESPACE) {
            all.extend(self.namespace(DEFAULT_NAMESPACE));
            all.sort_by(|a, b| a.name.cmp(&b.name));
        }
        all
    }

    pub fn namespace_exists(&self, name: &str) -> bool {
        name == DEFAULT_NAMESPACE || self.namespaces.contains_key(name)
    }

    /// What the namespace's tasks hold now.
    pub fn namespace_use(&self, name: &str) -> NamespaceUse {
        self.namespace_use.get(name).copied().unwrap_or_default()
    }

    /// What each namespace's tasks that hold capacity hold, counted afresh from the tasks.
    pub(super) fn count_namespace_use(&self) -> BTreeMap<String, NamespaceUse> {
        let mut out: BTreeMap<String, NamespaceUse> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.holds_capacity()) {
            let u = out.entry(ns::of(&t.family).to_string()).or_default();
            u.cpu += u64::from(t.cpu);
            u.memory += u64::from(t.memory);
            u.tasks += 1;
        }
        out
    }

    /// Counts a task that starts (`add`) or stops holding capacity in its namespace.
    pub(super) fn count_in_namespace(&mut self, task: &Task, add: bool) {
        let u = self
            .namespace_use
            .entry(ns::of(&task.family).to_string())
            .or_default();
        let (cpu, memory) = (u64::from(task.cpu), u64::from(task.memory));
        if add {
            u.cpu += cpu;
            u.memory += memory;
            u.tasks += 1;
        } else {
            u.cpu = u.cpu.saturating_sub(cpu);
            u.memory = u.memory.saturating_sub(memory);
            u.tasks = u.tasks.saturating_sub(1);
            // An empty count is dropped, as a count made afresh from the tasks (a replica
            // restored from a snapshot) never holds one: the replicas' states must match.
            if u.tasks == 0 {
                self.namespace_use.remove(ns::of(&task.family));
            }
        }
    }

    /// Why one more task of `cpu`/`memory` in `family`'s namespace would pass its quota.
    pub(super) fn quota_refusal(&self, family: &str, cpu: u32, memory: u32) -> Option<Failure> {
        let name = ns::of(family);
        let quota = self.namespaces.get(name)?.quota;
        quota
            .refusal(
                name,
                self.namespace_use(name),
                u64::from(cpu),
                u64::from(memory),
            )
            .map(|(reason, detail)| Failure {
                reason: reason.into(),
                detail,
            })
    }

    /// The namespace a user's command acts in, from the names it carries; None for the
    /// cluster's own commands (tokens, namespaces, settings, agents).
    pub fn command_namespace(&self, cmd: &Command) -> Option<String> {
        let name = match cmd {
            Command::RegisterTaskDefinition { spec } => &spec.family,
            Command::DeregisterTaskDefinition { family, .. } => family,
            Command::RunTasks(r) => &r.family,
            Command::StopTask {
                task_id, namespace, ..
            } => {
                // The namespace the caller named, else the task's own.
                return namespace.clone().or_else(|| {
                    self.tasks
                        .get(task_id)
                        .map(|t| ns::of(&t.family).to_string())
                });
            }
            Command::CreateService(c) => &c.name,
            Command::UpdateService(u) => &u.name,
            Command::DeleteService { name, .. }
            | Command::PutScalingPolicy { name, .. }
            | Command::PutSecret { name, .. }
            | Command::DeleteSecret { name } => name,
            Command::CreateSchedule(s) | Command::UpdateSchedule(s) => &s.name,
            Command::SetSchedulePaused { name, .. } | Command::DeleteSchedule { name } => name,
            Command::As { command, .. } => return self.command_namespace(command),
            _ => return None,
        };
        Some(ns::of(name).to_string())
    }

    /// Refuses a command that makes objects in a namespace that does not exist.
    pub(super) fn check_namespace_of(&self, cmd: &Command) -> Result<(), Error> {
        let makes = matches!(
            cmd,
            Command::RegisterTaskDefinition { .. }
                | Command::RunTasks(_)
                | Command::CreateService(_)
                | Command::CreateSchedule(_)
                | Command::PutSecret { .. }
        );
        match self.command_namespace(cmd) {
            Some(name) if makes && !self.namespace_exists(&name) => Err(Error::not_found(format!(
                "namespace {} does not exist; an admin creates it with `berth namespace create {}`",
                quote(&name),
                quote(&name)
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses `token` a command in a namespace it is not scoped to. Objects of other
    /// namespaces are answered as missing, so a token never learns that they exist.
    pub(super) fn check_token_namespace(
        &self,
        token: &AccessToken,
        cmd: &Command,
    ) -> Result<(), Error> {
        let Some(name) = self.command_namespace(cmd) else {
            return Ok(());
        };
        if token.allows_namespace(&name) {
            return Ok(());
        }
        Err(match cmd {
            Command::StopTask { task_id, .. } => {
                Error::not_found(format!("task {task_id} does not exist"))
            }
            _ => Error::PermissionDenied(format!(
                "token {} ({}) may use namespace(s) {}; not {}",
                token.accessor,
                token.name,
                token.namespaces.join(", "),
                quote(&name)
            )),
        })
    }

    pub(super) fn create_namespace(&mut self, name: &str, quota: &Quota) -> CommandResult {
        ns::check_name("namespace", name)?;
        if self.namespace_exists(name) {
            return Err(Error::AlreadyExists(format!(
                "namespace {name} already exists"
            )));
        }
        if self.namespaces.len() >= ns::MAX_NAMESPACES {
            return Err(Error::precondition(format!(
                "the cluster holds {} namespaces, the most it keeps",
                ns::MAX_NAMESPACES
            )));
        }
        let n = Namespace {
            name: name.to_string(),
            quota: *quota,
            created_at: self.clock,
        };
        self.namespaces.insert(name.to_string(), n.clone());
        Ok(Outcome::Namespace(n))
    }

    /// Sets a quota. One below what the namespace holds now stops nothing: it refuses new
    /// tasks until the namespace is back under it (as ECS's and Nomad's quotas do).
    pub(super) fn set_namespace_quota(&mut self, name: &str, quota: &Quota) -> CommandResult {
        let mut n = self.namespace(name).ok_or_else(|| missing(name))?;
        n.quota = *quota;
        self.namespaces.insert(name.to_string(), n.clone());
        Ok(Outcome::Namespace(n))
    }

    /// Deletes an empty namespace: one without task definitions, tasks or services (an
    /// INACTIVE service is forgotten with it).
    pub(super) fn delete_namespace(&mut self, name: &str) -> CommandResult {
        if name == DEFAULT_NAMESPACE {
            return Err(Error::precondition("namespace default cannot be deleted"));
        }
        let n = self.namespace(name).ok_or_else(|| missing(name))?;
        let mine = |q: &String| ns::of(q) == name;
        // A family whose revisions were all collected holds nothing; it stays only to
        // keep its revision numbers from being reused.
        let families = self
            .families
            .iter()
            .filter(|(f, revs)| mine(f) && !revs.is_empty())
            .count();
        let secrets = self.secrets.keys().filter(|s| mine(s)).count();
        if secrets > 0 {
            return Err(Error::precondition(format!(
                "namespace {name} holds {secrets} secret(s); delete them first"
            )));
        }
        let tasks = self.tasks.values().filter(|t| mine(&t.family)).count();
        let services = self
            .services
            .values()
            .filter(|s| mine(&s.name) && s.status != ServiceStatus::Inactive)
            .count();
        if families + tasks + services > 0 {
            return Err(Error::precondition(format!(
                "namespace {name} holds {families} task definition famil(ies), {tasks} task(s) \
                 and {services} service(s); delete them first (stopped tasks are kept an hour)"
            )));
        }
        self.namespaces.remove(name);
        let gone: Vec<(u64, String)> = self
            .service_expiry
            .iter()
            .filter(|(_, s)| mine(s))
            .cloned()
            .collect();
        for (at, s) in gone {
            self.service_expiry.remove(&(at, s.clone()));
            self.services.remove(&s);
        }
        self.namespace_use.remove(name);
        Ok(Outcome::Namespace(n))
    }
}

fn missing(name: &str) -> Error {
    Error::not_found(format!("namespace {} does not exist", quote(name)))
}
