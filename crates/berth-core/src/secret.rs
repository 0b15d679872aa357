//! Secrets: values a task gets in its environment that nobody reads back. A task
//! definition's container names them (`secrets: [{name: DB_PASSWORD, valueFrom: db}]`, ECS's
//! shape); the value lives in the replicated state sealed with the cluster's secrets key,
//! which is kept beside the certificates and never in the state, so the Raft log, snapshots
//! and sled hold ciphertext only. Sealing and opening happen outside this crate (it stays
//! free of crypto); here are the records and the rules.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::{Millis, Revision};
use crate::quote::quote;

/// A secret's value, in bytes, at most.
pub const MAX_SECRET_BYTES: usize = 8 * 1024;
/// A sealed value's text at most: hex of a nonce, the value and a tag, with room to spare.
pub const MAX_SEALED_LEN: usize = 2 * (MAX_SECRET_BYTES + 64);
/// Secrets the cluster holds at most.
pub const MAX_SECRETS: usize = 10_000;
/// Secrets one container names at most.
pub const MAX_CONTAINER_SECRETS: usize = 100;

/// A secret as the state keeps it: its value sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Qualified by its namespace, as task definitions are.
    pub name: String,
    /// Hex of nonce ‖ ciphertext ‖ tag, bound to the name (it cannot be moved to another).
    pub sealed: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Counts puts, from 1.
    pub version: u64,
    /// The revision of its last put.
    pub revision: Revision,
}

/// One environment variable of a container, taken from a secret of the task's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The variable's name.
    pub name: String,
    /// The secret's name.
    pub value_from: String,
}

/// The checks a put passes, before and at apply.
pub fn check_put(name: &str, sealed: &str) -> Result<(), Error> {
    crate::validate::qualified_name("secret name", name)?;
    if sealed.is_empty()
        || sealed.len() > MAX_SEALED_LEN
        || !sealed
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(format!(
            "secret {}: the sealed value is not lowercase hex of at most {MAX_SEALED_LEN} \
             characters",
            quote(name)
        )));
    }
    Ok(())
}
