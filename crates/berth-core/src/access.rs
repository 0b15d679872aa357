//! Who may call the API: access tokens, each with a role, kept in the replicated state.
//!
//! A token is shown to its holder once, as `berth_<accessor>_<secret>`. The state keeps the
//! accessor (a public id, safe to list and log), the role, and a SHA-256 digest of the
//! whole token — never the token itself, so neither the Raft log nor a snapshot holds
//! anything that authenticates. Hashing happens outside this crate (it stays free of
//! crypto and I/O); here are the records, the roles and the rules.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::{Millis, Revision};
use crate::quote::quote;

/// The prefix of every token's text, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "berth_";
/// Hex digits in an accessor.
pub const ACCESSOR_LEN: usize = 16;
/// Hex digits in a token's secret part (256 bits).
pub const SECRET_LEN: usize = 64;
/// A token's name: a note for people, at most this long.
pub const MAX_TOKEN_NAME: usize = 128;
/// Tokens the state holds at most, revoked ones included.
pub const MAX_TOKENS: usize = 10_000;

/// What a token may do. Deny by default: a call needs a role that allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Reader,
    /// Reads and writes of task definitions, tasks and services.
    Operator,
    /// Everything: membership, settings, tokens.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, Error> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(format!(
                "role {} is not one of admin, operator, reader",
                quote(other)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may make a call that needs `need`.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => true,
            Need::Write => self >= Role::Operator,
            Need::Admin => self == Role::Admin,
        }
    }
}

/// What a call needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    Read,
    Write,
    Admin,
}

impl Need {
    /// The least role that meets this need, for messages.
    pub fn least_role(self) -> Role {
        match self {
            Need::Read => Role::Reader,
            Need::Write => Role::Operator,
            Need::Admin => Role::Admin,
        }
    }
}

/// A token as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessToken {
    /// Public id: 16 lowercase hex digits.
    pub accessor: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token's whole text, lowercase hex.
    pub digest: String,
    pub created_at: Millis,
    /// The accessor of the token that created this one; empty for the first (bootstrap).
    pub created_by: String,
    /// The revision whose entry revoked it: every node refuses it once it has applied that.
    pub revoked_at: Option<Revision>,
    /// The namespaces an operator's or reader's token may use (`*`: all). An admin's may
    /// use every one. Tokens made before namespaces existed used `default`, the only one.
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<String>,
}

fn default_namespaces() -> Vec<String> {
    vec![crate::namespace::DEFAULT_NAMESPACE.to_string()]
}

impl AccessToken {
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// Whether this token may see and act on namespace `ns`'s objects.
    pub fn allows_namespace(&self, ns: &str) -> bool {
        self.role == Role::Admin
            || self
                .namespaces
                .iter()
                .any(|n| n == ns || n == crate::namespace::ALL_NAMESPACES)
    }

    /// The checks a new token's record must pass, before and at apply.
    pub fn check(&self) -> Result<(), Error> {
        if !is_hex(&self.accessor, ACCESSOR_LEN) {
            return Err(Error::invalid(format!(
                "accessor {} is not {ACCESSOR_LEN} lowercase hex digits",
                quote(&self.accessor)
            )));
        }
        if !is_hex(&self.digest, 64) {
            return Err(Error::invalid("digest is not a SHA-256 in lowercase hex"));
        }
        check_name(&self.name)?;
        if self.revoked_at.is_some() {
            return Err(Error::invalid("a new token cannot be revoked already"));
        }
        if self.namespaces.is_empty()
            || self.namespaces.len() > crate::namespace::MAX_TOKEN_NAMESPACES
        {
            return Err(Error::invalid(format!(
                "a token is scoped to 1..={} namespaces",
                crate::namespace::MAX_TOKEN_NAMESPACES
            )));
        }
        for n in &self.namespaces {
            if n != crate::namespace::ALL_NAMESPACES {
                crate::namespace::check_name("namespaces", n)?;
            }
        }
        Ok(())
    }
}

/// A token's name: 1..=128 printable characters.
pub fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "token name {} must be 1..={MAX_TOKEN_NAME} bytes without control characters",
            quote(name)
        )));
    }
    Ok(())
}

/// Whether `s` has an accessor's shape (what `berth token ls` shows).
pub fn is_accessor(s: &str) -> bool {
    is_hex(s, ACCESSOR_LEN)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A token's text split into its accessor and secret, or why it is not a Berth token.
/// Nothing of the secret is ever put in the message.
pub fn parse_token(text: &str) -> Result<(&str, &str), Error> {
    let bad = || {
        Error::invalid(format!(
            "this is not a Berth token (they look like {TOKEN_PREFIX}<{ACCESSOR_LEN} hex>_<{SECRET_LEN} hex>)"
        ))
    };
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
    let (accessor, secret) = rest.split_once('_').ok_or_else(bad)?;
    if !is_hex(accessor, ACCESSOR_LEN) || !is_hex(secret, SECRET_LEN) {
        return Err(bad());
    }
    Ok((accessor, secret))
}

/// A token's text from its parts.
pub fn token_text(accessor: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{accessor}_{secret}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_in_order_and_deny_the_rest() {
        assert!(Role::Reader.allows(Need::Read));
        assert!(!Role::Reader.allows(Need::Write));
        assert!(!Role::Reader.allows(Need::Admin));
        assert!(Role::Operator.allows(Need::Write));
        assert!(!Role::Operator.allows(Need::Admin));
        assert!(Role::Admin.allows(Need::Admin));
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").is_err());
        assert_eq!(Need::Write.least_role(), Role::Operator);
    }

    #[test]
    fn token_text_round_trips_and_bad_text_is_refused_without_echo() {
        let a = "0123456789abcdef";
        let s = "ab".repeat(32);
        let t = token_text(a, &s);
        assert_eq!(parse_token(&t), Ok((a, s.as_str())));
        for bad in [
            "",
            "berth_",
            "berth_0123456789abcdef",
            &format!("berth_0123456789ABCDEF_{s}"),
            &format!("other_{a}_{s}"),
            &format!("berth_{a}_{}", "ab".repeat(31)),
        ] {
            let e = parse_token(bad).expect_err(bad);
            assert!(!e.to_string().contains("abab"), "{e}");
        }
    }
}
