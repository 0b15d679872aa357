//! Namespaces: task definitions, tasks, services and their usage belong to one, and a token
//! scoped to team-a never sees or touches team-b's objects.
//!
//! Inside the state an object of namespace `team-a` is named `team-a/<name>` (a family
//! `team-a/web`, a service `team-a/api`, a group `family:team-a/web`); objects of `default`
//! keep their bare names, so a state written before namespaces existed reads unchanged.
//! User names never hold `/` (see [`qualify`]), so the qualified form is unambiguous and
//! one namespace's names can never be spelled to reach another's.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::Millis;
use crate::quote::quote;

/// The namespace every cluster has, where objects go when none is named.
pub const DEFAULT_NAMESPACE: &str = "default";
/// A token scoped to this may use every namespace.
pub const ALL_NAMESPACES: &str = "*";
/// A namespace's name: a DNS label, at most this long.
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Namespaces a cluster holds at most.
pub const MAX_NAMESPACES: usize = 1000;
/// Namespaces one token may be scoped to.
pub const MAX_TOKEN_NAMESPACES: usize = 64;

/// `default`, owned: serde's default for fields written before namespaces existed.
pub fn default_name() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// Limits on what a namespace's tasks hold at once; None is no limit. Counted over tasks
/// that hold capacity (placed and not yet STOPPED), the same figure agents reserve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// CPU units (1024 = one vCPU).
    pub cpu: Option<u64>,
    /// MiB.
    pub memory: Option<u64>,
    /// Tasks.
    pub tasks: Option<u64>,
}

/// What a namespace's tasks hold now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUse {
    pub cpu: u64,
    pub memory: u64,
    pub tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    pub quota: Quota,
    pub created_at: Millis,
}

impl Quota {
    /// Why `using` plus one task of `cpu`/`memory` would pass this quota, naming it; None
    /// when it fits. `ns` is the namespace's name, for the message.
    pub fn refusal(
        &self,
        ns: &str,
        using: NamespaceUse,
        cpu: u64,
        memory: u64,
    ) -> Option<(&'static str, String)> {
        if let Some(max) = self.tasks {
            if using.tasks + 1 > max {
                return Some((
                    "QUOTA:TASKS",
                    format!(
                        "namespace {ns} has reached its quota of {max} running task(s) ({} running)",
                        using.tasks
                    ),
                ));
            }
        }
        if let Some(max) = self.cpu {
            if using.cpu + cpu > max {
                return Some((
                    "QUOTA:CPU",
                    format!(
                        "namespace {ns}'s quota of {max} CPU units would be passed: {} in use, the task needs {cpu}",
                        using.cpu
                    ),
                ));
            }
        }
        if let Some(max) = self.memory {
            if using.memory + memory > max {
                return Some((
                    "QUOTA:MEMORY",
                    format!(
                        "namespace {ns}'s quota of {max} MiB would be passed: {} MiB in use, the task needs {memory}",
                        using.memory
                    ),
                ));
            }
        }
        None
    }
}

/// A namespace's name: 1..=63 lowercase letters, digits and `-`, starting with a letter
/// (a DNS label, so it can name things outside Berth too).
pub fn check_name(field: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{field} {} is not a namespace name: 1..={MAX_NAMESPACE_LEN} lowercase letters, \
             digits and `-`, starting with a letter and not ending with `-`",
            quote(name)
        )))
    }
}

/// `name` of namespace `ns` as the state names it. A name holding `/` is refused: that is
/// how a name could reach into another namespace.
pub fn qualify(ns: &str, field: &str, name: &str) -> Result<String, Error> {
    if name.contains('/') {
        return Err(Error::invalid(format!(
            "{field} {} contains `/`; name the namespace with --namespace instead",
            quote(name)
        )));
    }
    Ok(qualified(ns, name))
}

/// `name` of namespace `ns`, for a name known to hold no `/`.
pub fn qualified(ns: &str, name: &str) -> String {
    if ns == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// A qualified name's namespace and bare name.
pub fn split(qualified: &str) -> (&str, &str) {
    match qualified.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (DEFAULT_NAMESPACE, qualified),
    }
}

/// The namespace of a qualified name.
pub fn of(qualified: &str) -> &str {
    split(qualified).0
}

/// A RunTask client token of namespace `ns` as the state keys it: one space per namespace,
/// so a token used in one is new in another. Client tokens hold no spaces, so the
/// separator is unambiguous; `default`'s stay bare.
pub fn qualify_token(ns: &str, token: &str) -> String {
    if ns == DEFAULT_NAMESPACE {
        token.to_string()
    } else {
        format!("{ns} {token}")
    }
}

/// A client token as its caller gave it.
pub fn bare_token(qualified: &str) -> &str {
    qualified.split_once(' ').map_or(qualified, |(_, t)| t)
}

/// A task's group as its namespace's users name it: `family:team-a/web` is `family:web`,
/// `team-a/batch` is `batch`.
pub fn bare_group(group: &str) -> String {
    for prefix in ["family:", crate::service::SERVICE_GROUP_PREFIX] {
        if let Some(rest) = group.strip_prefix(prefix) {
            return format!("{prefix}{}", split(rest).1);
        }
    }
    split(group).1.to_string()
}

/// A task's group inside the state, from the group a user of `ns` gave: qualified like a
/// name, so two namespaces' groups of one name never share spread or distinctInstance.
pub fn qualify_group(ns: &str, group: &str) -> Result<String, Error> {
    for prefix in ["family:", crate::service::SERVICE_GROUP_PREFIX] {
        if let Some(rest) = group.strip_prefix(prefix) {
            return Ok(format!("{prefix}{}", qualify(ns, "group", rest)?));
        }
    }
    qualify(ns, "group", group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_qualify_and_split_back_and_default_keeps_bare_names() {
        assert_eq!(qualify("default", "family", "web").unwrap(), "web");
        assert_eq!(qualify("team-a", "family", "web").unwrap(), "team-a/web");
        assert_eq!(split("team-a/web"), ("team-a", "web"));
        assert_eq!(split("web"), ("default", "web"));
        // Client tokens: one space per namespace, whatever characters a token holds.
        assert_eq!(qualify_token("default", "team-a/x"), "team-a/x");
        assert_ne!(
            qualify_token("team-a", "x"),
            qualify_token("default", "team-a/x")
        );
        assert_eq!(bare_token(&qualify_token("team-a", "a/b")), "a/b");
        assert_eq!(bare_token("t1"), "t1");
        assert!(qualify("team-a", "family", "team-b/web")
            .unwrap_err()
            .to_string()
            .contains("--namespace"));
    }

    #[test]
    fn groups_qualify_inside_their_prefix() {
        assert_eq!(
            qualify_group("team-a", "family:web").unwrap(),
            "family:team-a/web"
        );
        assert_eq!(qualify_group("team-a", "batch").unwrap(), "team-a/batch");
        assert_eq!(
            qualify_group("default", "service:api").unwrap(),
            "service:api"
        );
        assert_eq!(bare_group("service:team-a/api"), "service:api");
        assert_eq!(bare_group("team-a/batch"), "batch");
        assert_eq!(bare_group("family:web"), "family:web");
        assert!(qualify_group("team-a", "family:team-b/web").is_err());
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        for ok in ["default", "team-a", "a", "t1"] {
            assert!(check_name("namespace", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Team", "1team", "team-", "a/b", "*", &"a".repeat(64)] {
            assert!(check_name("namespace", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_quota_names_the_limit_a_task_would_pass() {
        let q = Quota {
            cpu: Some(1024),
            memory: None,
            tasks: Some(2),
        };
        let using = NamespaceUse {
            cpu: 512,
            memory: 0,
            tasks: 1,
        };
        assert_eq!(q.refusal("a", using, 512, 1024), None);
        let (code, msg) = q.refusal("a", using, 1024, 0).unwrap();
        assert_eq!(code, "QUOTA:CPU");
        assert!(msg.contains("1024 CPU units"), "{msg}");
        let full = NamespaceUse { tasks: 2, ..using };
        assert_eq!(q.refusal("a", full, 0, 0).unwrap().0, "QUOTA:TASKS");
        assert_eq!(Quota::default().refusal("a", full, 1 << 40, 1 << 40), None);
    }
}
