//! Access tokens in the replicated state, and the check every user's write passes at apply:
//! a write made with a token carries the token's accessor (`Command::As`), and applies only
//! if that token is live and its role allows the write — on the state the write is applied
//! to, so a token revoked at revision R is refused by every write ordered after R, whichever
//! node took the call.

use super::ClusterState;
use crate::access::{AccessToken, Need, Role, MAX_TOKENS};
use crate::command::{Command, CommandResult, Outcome};
use crate::error::Error;
use crate::quote::quote;

/// What a command needs of the role of a token that makes it, or None when no token may
/// make it (the agent protocol's and the leader's own commands; those come only from
/// control nodes and agents, which prove who they are with their certificates).
pub fn need_of(cmd: &Command) -> Option<Need> {
    match cmd {
        Command::RegisterTaskDefinition { .. }
        | Command::DeregisterTaskDefinition { .. }
        | Command::RunTasks(_)
        | Command::StopTask { .. }
        | Command::CreateService(_)
        | Command::UpdateService(_)
        | Command::DeleteService { .. }
        | Command::PutScalingPolicy { .. }
        | Command::PutSecret { .. }
        | Command::DeleteSecret { .. }
        | Command::CreateSchedule(_)
        | Command::UpdateSchedule(_)
        | Command::SetSchedulePaused { .. }
        | Command::DeleteSchedule { .. } => Some(Need::Write),
        Command::UpdateSettings(_)
        | Command::SetAgentStatus { .. }
        | Command::CreateAccessToken(_)
        | Command::RevokeAccessToken { .. }
        | Command::CreateNamespace { .. }
        | Command::SetNamespaceQuota { .. }
        | Command::DeleteNamespace { .. } => Some(Need::Admin),
        Command::RegisterAgent(_)
        | Command::SetAgentEngine { .. }
        | Command::ReportTasks { .. }
        | Command::RecordUtilization { .. }
        | Command::NoteServiceEvent { .. }
        | Command::StopServiceTasks { .. }
        | Command::AutoscaleService { .. }
        | Command::Tick
        | Command::FireSchedule(_)
        | Command::RetryScheduleRun(_)
        | Command::BootstrapAccessToken(_)
        | Command::As { .. } => None,
    }
}

fn with_article(role: Role) -> &'static str {
    match role {
        Role::Admin => "an admin",
        Role::Operator => "an operator",
        Role::Reader => "a reader",
    }
}

impl ClusterState {
    /// The token with this accessor, revoked ones included.
    pub fn access_token(&self, accessor: &str) -> Option<&AccessToken> {
        self.access_tokens.get(accessor)
    }

    /// Every token, by accessor.
    pub fn access_tokens(&self) -> impl Iterator<Item = &AccessToken> {
        self.access_tokens.values()
    }

    /// Whether the first token has been made.
    pub fn access_bootstrapped(&self) -> bool {
        !self.access_tokens.is_empty()
    }

    /// `accessor`'s token, if live and allowed `need`; else why not. Also what API reads
    /// are checked with, on the state of the node that serves them.
    pub fn authorize(&self, accessor: &str, need: Need) -> Result<&AccessToken, Error> {
        let t = self.access_tokens.get(accessor).ok_or_else(|| {
            Error::Unauthenticated(format!(
                "token {} is not known to this cluster",
                quote(accessor)
            ))
        })?;
        if let Some(at) = t.revoked_at {
            return Err(Error::Unauthenticated(format!(
                "token {} was revoked at revision {at}",
                t.accessor
            )));
        }
        if !t.role.allows(need) {
            return Err(Error::PermissionDenied(format!(
                "token {} ({}) is {}; this needs {}",
                t.accessor,
                t.name,
                with_article(t.role),
                with_article(need.least_role())
            )));
        }
        Ok(t)
    }

    /// `command` on behalf of `accessor`'s holder, recorded in the audit trail whether it
    /// applied or not.
    pub(super) fn apply_as(&mut self, accessor: &str, command: &Command) -> CommandResult {
        let namespace = self.command_namespace(command);
        let result = self.apply_as_unrecorded(accessor, command);
        let name = self
            .access_tokens
            .get(accessor)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.changes.push(super::Change::Audit {
            accessor: accessor.to_string(),
            name,
            action: command.summary(),
            refused: result.as_ref().err().map(|e| e.to_string()),
            namespace,
        });
        result
    }

    fn apply_as_unrecorded(&mut self, accessor: &str, command: &Command) -> CommandResult {
        let need = need_of(command)
            .ok_or_else(|| Error::invalid("this command is not one a token can make"))?;
        let token = self.authorize(accessor, need)?;
        self.check_token_namespace(token, command)?;
        match command {
            Command::CreateAccessToken(t) => self.create_access_token(t, accessor),
            other => self.apply_one(other),
        }
    }

    pub(super) fn bootstrap_access_token(&mut self, t: &AccessToken) -> CommandResult {
        if self.access_bootstrapped() {
            return Err(Error::precondition(
                "this cluster already has tokens; an admin makes more with `berth token create`",
            ));
        }
        if t.role != crate::access::Role::Admin {
            return Err(Error::invalid("the first token must be an admin"));
        }
        self.create_access_token(t, "")
    }

    fn create_access_token(&mut self, t: &AccessToken, by: &str) -> CommandResult {
        t.check()?;
        if let Some(n) = t
            .namespaces
            .iter()
            .find(|n| n.as_str() != crate::namespace::ALL_NAMESPACES && !self.namespace_exists(n))
        {
            return Err(Error::not_found(format!(
                "namespace {} does not exist; create it first with `berth namespace create`",
                quote(n)
            )));
        }
        if self.access_tokens.contains_key(&t.accessor) {
            return Err(Error::AlreadyExists(format!(
                "a token with accessor {} exists",
                t.accessor
            )));
        }
        if self.access_tokens.len() >= MAX_TOKENS {
            return Err(Error::precondition(format!(
                "the cluster holds {MAX_TOKENS} tokens, the most it keeps"
            )));
        }
        let mut t = t.clone();
        t.created_at = self.clock;
        t.created_by = by.to_string();
        self.access_tokens.insert(t.accessor.clone(), t.clone());
        Ok(Outcome::AccessToken(t))
    }

    /// Marks the token revoked at this revision. Revoking a revoked token answers it as it
    /// is (a retry after a lost answer succeeds).
    pub(super) fn revoke_access_token(&mut self, accessor: &str) -> CommandResult {
        let revision = self.revision;
        let t = self.access_tokens.get_mut(accessor).ok_or_else(|| {
            Error::not_found(format!("no token has accessor {}", quote(accessor)))
        })?;
        if t.revoked_at.is_none() {
            t.revoked_at = Some(revision);
        }
        Ok(Outcome::AccessToken(t.clone()))
    }
}
