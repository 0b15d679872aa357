//! Secrets in the replicated state: sealed values by qualified name. What a task's
//! containers name is resolved by the control node that sends the task to its agent.

use super::ClusterState;
use crate::command::{CommandResult, Outcome};
use crate::error::Error;
use crate::quote::quote;
use crate::secret::{check_put, Secret, MAX_SECRETS};

impl ClusterState {
    /// A secret by qualified name.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    /// Every secret by qualified name.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.values()
    }

    /// Makes a secret or gives it a new value.
    pub(super) fn put_secret(&mut self, name: &str, sealed: &str) -> CommandResult {
        check_put(name, sealed)?;
        let (clock, revision) = (self.clock, self.revision);
        let s = match self.secrets.get_mut(name) {
            Some(s) => {
                s.sealed = sealed.to_string();
                s.updated_at = clock;
                s.version += 1;
                s.revision = revision;
                s.clone()
            }
            None => {
                if self.secrets.len() >= MAX_SECRETS {
                    return Err(Error::precondition(format!(
                        "the cluster holds {MAX_SECRETS} secrets, the most it keeps"
                    )));
                }
                let s = Secret {
                    name: name.to_string(),
                    sealed: sealed.to_string(),
                    created_at: clock,
                    updated_at: clock,
                    version: 1,
                    revision,
                };
                self.secrets.insert(name.to_string(), s.clone());
                s
            }
        };
        Ok(Outcome::Secret(s))
    }

    pub(super) fn delete_secret(&mut self, name: &str) -> CommandResult {
        self.secrets
            .remove(name)
            .map(Outcome::Secret)
            .ok_or_else(|| Error::not_found(format!("secret {} does not exist", quote(name))))
    }
}
