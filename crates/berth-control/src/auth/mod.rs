//! Who is calling the API: the bearer token a call carries (`authorization: Bearer …`),
//! checked against the tokens in the replicated state. A token's text never leaves this
//! module: the state keeps its SHA-256, and messages name its accessor only.

mod gate;
mod layer;

pub use gate::{bootstrap_when_leader, check_with};
pub use layer::{AuthLayer, Authenticated, Check};

use std::path::Path;

use berth_core::access::{self, AccessToken, Need, Role};
use berth_core::ClusterState;
use ring::digest::{digest as sha, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use tonic::metadata::MetadataMap;
use tonic::Status;

/// The header a token travels in, as `Bearer <token>`.
pub use berth_proto::bearer::HEADER;

/// The cluster's first admin token, in a `berth tls` directory beside the certificates:
/// control nodes started with that directory make it the first token when the state has
/// none, and the operator's CLI reads it (`--token-file`).
pub use berth_tls::files::ADMIN_TOKEN as ADMIN_TOKEN_FILE;

tokio::task_local! {
    /// The token, need and namespace of the API call being served, for a read to check
    /// again on the state it reads (see `Node::read_barrier`).
    pub(crate) static CALLER: (String, Need, String);
}

/// The namespace a call acts in: its `berth-namespace` header, else `default`.
pub fn namespace_of(md: &MetadataMap) -> Result<String, Status> {
    let Some(value) = md.get(berth_proto::bearer::NAMESPACE_HEADER) else {
        return Ok(berth_core::namespace::DEFAULT_NAMESPACE.to_string());
    };
    let ns = value
        .to_str()
        .map_err(|_| Status::invalid_argument("the berth-namespace header is not text"))?;
    berth_core::namespace::check_name("namespace", ns)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(ns.to_string())
}

/// Refuses `token` a call in namespace `ns` it is not scoped to.
pub fn check_namespace(token: &AccessToken, ns: &str) -> Result<(), berth_core::Error> {
    if token.allows_namespace(ns) {
        return Ok(());
    }
    Err(berth_core::Error::PermissionDenied(format!(
        "token {} ({}) may use namespace(s) {}; not {ns} (give --namespace, or ask an admin \
         for a token of {ns})",
        token.accessor,
        token.name,
        token.namespaces.join(", ")
    )))
}

/// The token text a call carries, or why there is none.
pub fn bearer(md: &MetadataMap) -> Result<&str, Status> {
    let value = md.get(HEADER).ok_or_else(|| {
        Status::unauthenticated(
            "this call needs a token: give --token (BERTH_TOKEN) or --token-file \
             (BERTH_TOKEN_FILE); the cluster's first is admin.token in its `berth tls` \
             directory, and an admin makes more with `berth token create`",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer <token>`"))
}

/// Makes `dir/admin.token` (readable by its owner only) unless it exists; answers its
/// token's text and whether it was made now.
pub fn ensure_admin_token(dir: &Path) -> Result<(String, bool), AdminTokenError> {
    if let Some(text) = read_admin_token(dir)? {
        return Ok((text, false));
    }
    let (text, _) =
        mint("admin", Role::Admin).map_err(|e| AdminTokenError::Mint(e.message().to_string()))?;
    berth_tls::files::write_private(dir, ADMIN_TOKEN_FILE, &format!("{text}\n"))
        .map_err(|e| AdminTokenError::Write(berth_tls::error_chain(&e)))?;
    Ok((text, true))
}

/// The text of `dir/admin.token`, if the file exists.
pub fn read_admin_token(dir: &Path) -> Result<Option<String>, AdminTokenError> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AdminTokenError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    access::parse_token(&text).map_err(|e| AdminTokenError::Malformed {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    Ok(Some(text))
}

/// The record of the cluster's first token, from `dir/admin.token` if there is one: what a
/// control node proposes when the state has no token yet. Only its digest is kept.
pub fn initial_admin(dir: &Path) -> Result<Option<AccessToken>, AdminTokenError> {
    Ok(read_admin_token(dir)?.map(|text| record_of(&text, "admin", Role::Admin)))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Malformed { path: String, why: String },
    #[error("cannot make a token: {0}")]
    Mint(String),
    #[error("{0}")]
    Write(String),
}

/// SHA-256 of a token's text, lowercase hex: what the state keeps.
pub fn digest(text: &str) -> String {
    sha(&SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token: its text (shown once) and the record the state keeps.
pub fn mint(name: &str, role: Role) -> Result<(String, AccessToken), Status> {
    access::check_name(name).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let rng = SystemRandom::new();
    let mut bytes = [0u8; 8 + 32];
    rng.fill(&mut bytes)
        .map_err(|_| Status::internal("the system's random source failed"))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let text = access::token_text(&hex(&bytes[..8]), &hex(&bytes[8..]));
    let record = record_of(&text, name, role);
    Ok((text, record))
}

/// The record the state keeps of the token `text` (which must parse): its accessor and
/// digest; who made it and when are set at apply.
fn record_of(text: &str, name: &str, role: Role) -> AccessToken {
    AccessToken {
        accessor: access::parse_token(text)
            .map(|(a, _)| a.to_string())
            .unwrap_or_default(),
        name: name.to_string(),
        role,
        digest: digest(text),
        created_at: 0,
        created_by: String::new(),
        revoked_at: None,
        namespaces: vec![berth_core::namespace::DEFAULT_NAMESPACE.to_string()],
    }
}

/// The accessor of the live token `md` carries, if it allows `need` on `state`; else
/// UNAUTHENTICATED (no token, not a token, unknown, wrong secret, revoked) or
/// PERMISSION_DENIED (a role short of `need`).
pub fn check(state: &ClusterState, md: &MetadataMap, need: Need) -> Result<Caller, Status> {
    let text = bearer(md)?;
    let (accessor, _) =
        access::parse_token(text).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let known = state.access_token(accessor).ok_or_else(|| {
        Status::unauthenticated(format!("token {accessor} is not known to this cluster"))
    })?;
    // Digests, not secrets, are compared: timing tells nothing about the secret.
    if known.digest != digest(text) {
        return Err(Status::unauthenticated(format!(
            "token {accessor} does not match its record (a forged or mistyped token)"
        )));
    }
    let status = |e| tonic::Status::from(crate::error::ApiError::from(e));
    let token = state.authorize(accessor, need).map_err(status)?;
    let namespace = namespace_of(md)?;
    check_namespace(token, &namespace).map_err(status)?;
    Ok(Caller {
        accessor: accessor.to_string(),
        namespace,
    })
}

/// What a call to the public API needs of its caller's token, by gRPC path
/// (`/berth.v1.Service/Method`). `None` for the services stock tools probe without a token
/// (health, reflection). A method this table does not name needs an admin: deny by default,
/// and a test holds the table to every method the protos declare.
pub fn need_of_path(path: &str) -> Option<Need> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    let need = match (service, method) {
        ("berth.v1.TaskDefinitions", "Describe" | "List")
        | ("berth.v1.Tasks", "Describe" | "List" | "Watch" | "Logs")
        | ("berth.v1.Agents", "List" | "Describe")
        | ("berth.v1.Cluster", "Status")
        | ("berth.v1.Events", "Watch")
        | ("berth.v1.Usage", "Get")
        | ("berth.v1.Services", "Describe" | "List")
        | ("berth.v1.Schedules", "Describe" | "List" | "Runs")
        | ("berth.v1.Namespaces", "List")
        | ("berth.v1.Secrets", "List") => Need::Read,
        ("berth.v1.TaskDefinitions", "Register" | "Deregister")
        | ("berth.v1.Tasks", "Run" | "Stop")
        | ("berth.v1.Services", "Create" | "Update" | "Delete" | "PutScalingPolicy")
        | ("berth.v1.Secrets", "Put" | "Delete")
        | ("berth.v1.Schedules", "Create" | "Update" | "Pause" | "Resume" | "Delete") => {
            Need::Write
        }
        _ => Need::Admin,
    };
    Some(need)
}

/// Who an API call was authenticated as: the accessor of its token, put in the request's
/// extensions for the handler (a write is made as this token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub accessor: String,
    /// The namespace the call acts in (checked against the token).
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{Batch, Command};

    /// Every method of the public protos, as `/package.Service/Method`.
    fn declared_methods() -> Vec<String> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut out = Vec::new();
        for f in set.file {
            for s in &f.service {
                for m in &s.method {
                    out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_api_method_has_a_decided_need_and_writes_are_never_reads() {
        let methods = declared_methods();
        assert!(methods.len() >= 25, "{methods:?}");
        let mut by_need = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for m in &methods {
            let need = need_of_path(m).unwrap_or_else(|| panic!("{m} would be open"));
            by_need
                .entry(match need {
                    Need::Read => "read",
                    Need::Write => "write",
                    Need::Admin => "admin",
                })
                .or_default()
                .push(m);
        }
        // Membership, settings, draining and tokens are an admin's; a method added to the protos
        // lands here too until the table names it.
        assert_eq!(
            by_need["admin"],
            vec![
                "/berth.v1.Agents/Drain",
                "/berth.v1.Cluster/Join",
                "/berth.v1.Cluster/Leave",
                "/berth.v1.Cluster/UpdateSettings",
                "/berth.v1.Tokens/Create",
                "/berth.v1.Tokens/List",
                "/berth.v1.Tokens/Revoke",
                "/berth.v1.Namespaces/Create",
                "/berth.v1.Namespaces/SetQuota",
                "/berth.v1.Namespaces/Delete",
            ],
            "{by_need:#?}"
        );
        for m in &by_need["read"] {
            let verb = m.rsplit('/').next().unwrap_or_default();
            assert!(
                ["Describe", "List", "Watch", "Logs", "Status", "Get", "Runs"].contains(&verb),
                "{m} is a read"
            );
        }
        assert_eq!(need_of_path("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            need_of_path("/berth.v1.Tasks/SomethingNew"),
            Some(Need::Admin)
        );
    }

    fn md(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(HEADER, format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn a_minted_token_is_checked_by_digest_and_role() {
        let (admin_text, admin) = mint("first", Role::Admin).unwrap();
        let (reader_text, reader) = mint("ro", Role::Reader).unwrap();
        assert!(admin_text.starts_with("berth_"));
        assert!(
            !format!("{admin:?}").contains(&admin_text[23..]),
            "no secret kept"
        );
        let mut st = ClusterState::default();
        st.apply(
            1,
            &Batch {
                now: 1,
                commands: vec![
                    Command::BootstrapAccessToken(admin.clone()),
                    Command::As {
                        accessor: admin.accessor.clone(),
                        command: Box::new(Command::CreateAccessToken(reader.clone())),
                    },
                ],
            },
        );
        assert_eq!(
            check(&st, &md(&admin_text), Need::Admin).unwrap().accessor,
            admin.accessor
        );
        assert!(check(&st, &md(&reader_text), Need::Read).is_ok());
        let e = check(&st, &md(&reader_text), Need::Write).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // Same accessor, another secret: forged.
        let forged = format!("{}{}", &admin_text[..23], "0".repeat(64));
        let e = check(&st, &md(&forged), Need::Read).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("does not match"), "{e:?}");
        assert!(!e.message().contains(&forged[23..]));
        for bad in [MetadataMap::new(), md("nonsense")] {
            let e = check(&st, &bad, Need::Read).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let (stranger, _) = mint("elsewhere", Role::Admin).unwrap();
        let e = check(&st, &md(&stranger), Need::Read).unwrap_err();
        assert!(e.message().contains("not known"), "{e:?}");
    }

    #[test]
    fn the_admin_token_file_is_made_once_private_and_holds_a_token() {
        let dir = tempfile::tempdir().unwrap();
        assert!(initial_admin(dir.path()).unwrap().is_none());
        let (text, made) = ensure_admin_token(dir.path()).unwrap();
        assert!(made);
        let (again, made) = ensure_admin_token(dir.path()).unwrap();
        assert_eq!((again.as_str(), made), (text.as_str(), false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let record = initial_admin(dir.path()).unwrap().unwrap();
        assert_eq!(record.role, Role::Admin);
        assert_eq!(record.digest, digest(&text));
        assert!(text.contains(&record.accessor));
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "password\n").unwrap();
        let e = initial_admin(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("admin.token") && e.contains("not a Berth token"),
            "{e}"
        );
    }
}
